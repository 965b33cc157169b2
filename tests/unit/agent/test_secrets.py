"""The agent's side of secrets: files only in memory, bound read-only; env values."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from core.spec import AppSpec
from core.state import AssignedReplica
from services.agent import secrets as agent_secrets
from services.agent.containers import create_config
from services.agent.secrets import (
    SecretFailure,
    SecretFiles,
    SecretMounts,
    default_secrets_dir,
    filesystem_of,
    in_memory,
)

MOUNTINFO = """\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
25 22 0:21 / /run rw,nosuid - tmpfs tmpfs rw,mode=755
26 22 0:22 / /dev/shm rw - tmpfs shm rw
27 22 8:2 / /run/data rw - ext4 /dev/sda2 rw
28 22 0:23 / /mnt/with\\040space rw - ramfs none rw
"""


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/run/shoal/secrets", "tmpfs"),
        ("/run", "tmpfs"),
        ("/run/data/x", "ext4"),  # the longest mount point wins
        ("/runner", "ext4"),  # a prefix of a name is not a parent
        ("/dev/shm/shoal", "tmpfs"),
        ("/mnt/with space/s", "ramfs"),
        ("/var/lib/x", "ext4"),
    ],
)
def test_the_file_system_of_a_path_is_read_from_mountinfo(path: str, kind: str) -> None:
    assert filesystem_of(Path(path), MOUNTINFO) == kind


def test_the_default_dir_is_in_memory() -> None:
    assert default_secrets_dir(MOUNTINFO) == Path("/run/shoal/secrets")
    on_disk_run = MOUNTINFO.replace(" /run rw,nosuid - tmpfs", " /run rw,nosuid - ext4")
    assert default_secrets_dir(on_disk_run) == Path("/dev/shm/shoal/secrets")
    assert in_memory(Path("/dev/shm/shoal/secrets"), on_disk_run)


def spec(**fields: object) -> AppSpec:
    return AppSpec.model_validate({"name": "web", "image": "img", **fields})


def test_a_secrets_dir_on_disk_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        agent_secrets, "read_mountinfo", lambda: "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
    )
    files = SecretFiles(tmp_path, "shoal", "n1")
    with pytest.raises(SecretFailure, match="is not in memory"):
        files.put("r1", spec(secrets=["db"]), {"db": b"v"})
    assert not (tmp_path / "shoal").exists()
    # an env-only secret writes no file, so it needs no memory file system
    mounts = files.put("r1", spec(secrets=[{"name": "db", "env": "DB"}]), {"db": b"v"})
    assert mounts == SecretMounts(files=(), env=(("DB", "v"),))


def test_files_are_written_read_only_per_replica_and_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        agent_secrets, "read_mountinfo", lambda: f"1 0 0:1 / {tmp_path} rw - tmpfs tmpfs rw\n"
    )
    files = SecretFiles(tmp_path, "test/prefix", "n1")
    s = spec(secrets=["db", {"name": "tls", "target": "/etc/tls/key.pem", "env": "KEY"}])
    mounts = files.put("r1", s, {"db": b"one", "tls": b"two"})
    folder = tmp_path / "test_prefix" / "n1" / "r1"
    assert mounts.files == (
        (str(folder / "run__secrets__db"), "/run/secrets/db"),
        (str(folder / "etc__tls__key.pem"), "/etc/tls/key.pem"),
    )
    assert mounts.env == (("KEY", "two"),)
    assert (folder / "run__secrets__db").read_bytes() == b"one"
    assert stat.S_IMODE((folder / "run__secrets__db").stat().st_mode) == 0o444
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert files.has("r1", s)
    assert not files.has("r2", s)
    files.put("r2", s, {"db": b"1", "tls": b"2"})
    assert files.sweep({"r2"}) == ["r1"]
    assert not folder.exists()
    assert files.has("r2", s)


def test_an_env_secret_must_be_text() -> None:
    files = SecretFiles(Path("/nonexistent"), "p", "n1")
    with pytest.raises(SecretFailure, match="not UTF-8"):
        files.put("r", spec(secrets=[{"name": "k", "env": "K"}]), {"k": b"\xff"})
    with pytest.raises(SecretFailure, match="NUL"):
        files.put("r", spec(secrets=[{"name": "k", "env": "K"}]), {"k": b"a\0b"})


def test_the_container_binds_each_file_read_only_and_gets_the_env() -> None:
    replica = AssignedReplica(id="default.web.1", namespace="default", app="web", revision=1)
    mounts = SecretMounts(files=(("/dev/shm/x/db", "/run/secrets/db"),), env=(("DB", "pw"),))
    config = create_config(
        spec(volumes=[{"source": "data", "target": "/data"}]),
        replica,
        prefix="p",
        node="n1",
        address="127.0.0.1",
        secrets=mounts,
    )
    volume, *binds = config["HostConfig"]["Mounts"]
    assert (volume["Type"], volume["Source"], volume["Target"]) == (
        "volume",
        "p_default_data",
        "/data",
    )
    assert binds == [
        {"Type": "bind", "Source": "/dev/shm/x/db", "Target": "/run/secrets/db", "ReadOnly": True},
    ]
    assert "DB=pw" in config["Env"]
    plain = create_config(spec(), replica, prefix="p", node="n1", address="127.0.0.1")
    assert plain["HostConfig"]["Mounts"] == []
