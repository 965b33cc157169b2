"""Registry credentials and stats arithmetic."""

from __future__ import annotations

import base64
import json

import pytest

from services.agent.registry import (
    Credential,
    credential_for,
    parse_auth_flag,
    parse_config,
    pull_reference,
    registry_of,
)
from services.agent.stats import Sample, cpu_cores, parse_sample


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("nginx", "docker.io"),
        ("library/nginx:1", "docker.io"),
        ("127.0.0.1:5000/shoal/echo:v1", "127.0.0.1:5000"),
        ("registry.example.com/a/b", "registry.example.com"),
        ("localhost/x", "localhost"),
    ],
)
def test_registry_of(image: str, registry: str) -> None:
    assert registry_of(image) == registry


@pytest.mark.parametrize(
    ("image", "ref"),
    [
        ("nginx", "nginx:latest"),
        ("127.0.0.1:5000/echo", "127.0.0.1:5000/echo:latest"),
        ("127.0.0.1:5000/echo:v1", "127.0.0.1:5000/echo:v1"),
        ("echo@sha256:abc", "echo@sha256:abc"),
    ],
)
def test_pull_reference(image: str, ref: str) -> None:
    assert pull_reference(image) == ref


def test_auth_flag() -> None:
    assert parse_auth_flag("127.0.0.1:5000=alice:s3:cr=t") == (
        "127.0.0.1:5000",
        Credential("alice", "s3:cr=t"),
    )
    for bad in ("nohost", "=a:b", "h=nopassword", "h=:pw"):
        with pytest.raises(ValueError, match="host=user:password"):
            parse_auth_flag(bad)


def test_config_file_both_forms() -> None:
    text = json.dumps(
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": base64.b64encode(b"u1:p1").decode()},
                "127.0.0.1:5000": {"username": "u2", "password": "p2"},
            }
        }
    )
    creds = parse_config(text)
    assert creds == {"docker.io": Credential("u1", "p1"), "127.0.0.1:5000": Credential("u2", "p2")}
    assert credential_for("127.0.0.1:5000/a:v1", creds) == (
        "127.0.0.1:5000",
        creds["127.0.0.1:5000"],
    )
    assert credential_for("other.io/a", creds) == ("other.io", None)
    assert creds["docker.io"].header("docker.io") == {
        "username": "u1",
        "password": "p1",
        "serveraddress": "docker.io",
    }


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("not json", "not JSON"),
        ("{}", '"auths"'),
        ('{"auths": {"h": {}}}', "no credentials"),
        ('{"auths": {"h": {"auth": "bm9jb2xvbg=="}}}', "not user:password"),
    ],
)
def test_bad_config(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_config(text)


def stats(read: str, cpu: int, usage: int, inactive: int = 0) -> dict[str, object]:
    return {
        "read": read,
        "cpu_stats": {"cpu_usage": {"total_usage": cpu}},
        "memory_stats": {"usage": usage, "limit": 1000, "stats": {"total_inactive_file": inactive}},
    }


def test_cpu_and_memory_from_two_samples() -> None:
    a = parse_sample(stats("2026-01-01T00:00:00Z", 1_000_000_000, 500, 100))
    b = parse_sample(stats("2026-01-01T00:00:02Z", 2_000_000_000, 600, 100))
    assert a == Sample(read=a.read, cpu_total=1_000_000_000, memory=400, memory_limit=1000)  # type: ignore[union-attr]
    assert b is not None
    assert cpu_cores(None, b) == 0.0
    assert cpu_cores(a, b) == 0.5
    assert cpu_cores(b, a) == 0.0  # time going backwards: no nonsense


def test_unusable_stats() -> None:
    assert parse_sample({}) is None
    assert parse_sample({"read": "0001-01-01T00:00:00Z", "cpu_stats": {}}) is None
