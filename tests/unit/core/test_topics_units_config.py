from __future__ import annotations

import pytest

from core.channels import APPLY, APPS, HEALTH, NODE_ASSIGN, NODE_REPLICAS
from core.config import BrokerURL, ConfigError
from core.errors import TopicError
from core.keys import AppKey
from core.topics import Topics, matches
from core.units import format_memory, parse_cpu, parse_duration, parse_memory


def test_topic_map_and_parsing() -> None:
    assert APPS.topic("shoal", AppKey("prod", "web")) == "shoal/apps/prod/web"
    assert NODE_ASSIGN.topic("shoal", "n1") == "shoal/nodes/n1/assign"
    assert NODE_REPLICAS.parse("shoal", "shoal/nodes/n1/replicas") == "n1"
    assert HEALTH.parse("shoal", "shoal/health/prod/web") == AppKey("prod", "web")
    assert APPLY.topic("a/b") == "a/b/cmd/apply"
    assert Topics("a/b").reply("alice", "cli-1") == "a/b/reply/alice/cli-1"


@pytest.mark.parametrize("bad", ["a/b", "+", "#", ""])
def test_names_cannot_escape_their_topic_level(bad: str) -> None:
    with pytest.raises(TopicError):
        APPS.topic("shoal", AppKey("default", bad))
    with pytest.raises(TopicError):
        APPS.pattern("shoal", namespace=bad)


def test_bad_prefix_and_topics_of_another_channel() -> None:
    with pytest.raises(TopicError):
        Topics("a/#")
    with pytest.raises(TopicError):
        HEALTH.parse("shoal", "shoal/apps/prod/web")
    with pytest.raises(TopicError):
        HEALTH.parse("shoal", "other/health/prod/web")
    with pytest.raises(TopicError):
        NODE_ASSIGN.parse("shoal", "shoal/nodes/n1/assign/extra")


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("s/apps/+/+", "s/apps/p/web", True),
        ("s/apps/+/+", "s/apps/p/web/x", False),
        ("s/#", "s/apps/p/web", True),
        ("$share/g/s/nodes/+/info", "s/nodes/n1/info", True),
        ("s/nodes/+/info", "s/nodes/n1/assign", False),
    ],
)
def test_wildcards(pattern: str, topic: str, expected: bool) -> None:
    assert matches(pattern, topic) is expected


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("2s", 2.0), ("1m", 60.0), (3, 3.0), ("1.5", 1.5)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_memory_cpu_and_formatting() -> None:
    assert parse_memory("128Mi") == 128 * 1024**2
    # "1G" meant 10**9 bytes; Docker reads it as 1GiB, Kubernetes as 10**9: refused
    with pytest.raises(ValueError, match="ambiguous"):
        parse_memory("1G")
    assert parse_memory("1g") == 1024**3
    assert parse_cpu("250m") == 0.25
    assert format_memory(128 * 1024**2) == "128Mi"
    for bad in ("x", True, -1):
        with pytest.raises(ValueError, match="memory"):
            parse_memory(bad)


def test_broker_urls() -> None:
    url = BrokerURL.parse("mqtts://user:p%40ss@broker.example?ca=/etc/ca.pem")
    assert (url.host, url.port, url.tls, url.username, url.password, url.ca_file) == (
        "broker.example",
        8883,
        True,
        "user",
        "p@ss",
        "/etc/ca.pem",
    )
    assert "p@ss" not in str(url)
    assert BrokerURL.parse("10.0.0.1:1884").port == 1884
    assert BrokerURL.parse("mqtt://h").port == 1883
    with pytest.raises(ConfigError):
        BrokerURL.parse("http://h")


def test_broker_url_tls_options() -> None:
    url = BrokerURL.parse("mqtts://u:p@b.example:8883?ca=/c.pem&cert=/me.pem&key=/me.key")
    assert (url.tls, url.ca_file, url.cert_file, url.key_file) == (
        True,
        "/c.pem",
        "/me.pem",
        "/me.key",
    )
    assert BrokerURL.parse("mqtts://b?cert=/both.pem").key_file == "/both.pem"
    assert str(url) == "mqtts://u:***@b.example:8883"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("mqtts://b?cafile=/c.pem", "unknown option cafile"),
        ("mqtt://b?ca=/c.pem", "need mqtts://"),
        ("mqtt://b?insecure=1", "need mqtts://"),
    ],
)
def test_broker_url_refuses_options_it_would_ignore(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        BrokerURL.parse(url)
