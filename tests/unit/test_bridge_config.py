"""The region bridge (``configs/mosquitto-bridge.conf``, and the same topics in the test
rig): every channel and command of the contract is bridged by exactly one topic line;
retained state goes one way only (the control plane's home -> region, a region's own
region -> home), so no broker replays a stale copy of another's; the ``bridge`` identity
of the generated ACL may write exactly what comes from a region."""

from __future__ import annotations

from pathlib import Path

from core.acl import topic_rules
from core.channels import CHANNELS, COMMANDS, reply_topic
from core.identities import AuthFile, Identity
from core.topics import matches
from tests.support.regions import GUARDED, HOME_WRITTEN, REGION_WRITTEN, SHARED, bridge_conf

ROOT = Path(__file__).resolve().parents[2]
CONTROL_PLANE = ("controller", "scheduler", "health", "scaler")


def bridged(text: str) -> dict[str, str]:
    """pattern -> direction of every ``topic`` line."""
    out = {}
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == "topic":
            out[words[1]] = words[2]
    return out


def example_topics() -> dict[str, str]:
    """One concrete topic per channel and command -> its writer."""
    topics = {}
    for channel in CHANNELS:
        levels = ["x" if part.startswith("{") else part for part in channel.path.split("/")]
        topics["shoal/" + "/".join(levels)] = channel.writer
        if channel.paged:  # a value too large for one message: its pages (core/paging.py)
            topics["shoal/" + "/".join([*levels, "page", "0"])] = channel.writer
    for command in COMMANDS:
        topics[command.topic("shoal", "alice")] = "any client"
    topics[reply_topic("shoal", "alice", "cli-1")] = "any client"
    return topics


def test_the_config_file_and_the_test_rig_bridge_the_same_topics() -> None:
    conf = bridged((ROOT / "configs/mosquitto-bridge.conf").read_text())
    rig = bridged(bridge_conf("r", "127.0.0.1:1", "shoal"))
    assert conf == rig
    assert set(conf) == {f"shoal/{t}" for t in (*HOME_WRITTEN, *REGION_WRITTEN, *GUARDED, *SHARED)}


def test_every_topic_is_bridged_once_and_retained_state_one_way() -> None:
    conf = bridged((ROOT / "configs/mosquitto-bridge.conf").read_text())
    retained = set()
    for c in CHANNELS:
        if c.retained:
            topic = "shoal/" + "/".join("x" if p.startswith("{") else p for p in c.path.split("/"))
            retained |= {topic, topic + "/page/0"}
    for topic, writer in example_topics().items():
        lines = [p for p in conf if matches(p, topic)]
        assert len(lines) == 1, (topic, lines)
        direction = conf[lines[0]]
        if topic not in retained:
            wanted = "both"  # nothing to replay
        elif any(matches(f"shoal/{g}", topic) for g in GUARDED):
            wanted = "both"  # read everywhere; its writer republishes over a stale replay
        elif writer.split()[0] in CONTROL_PLANE:
            wanted = "in"  # written at home only
        else:
            wanted = "out"  # written by each region for itself
        assert direction == wanted, (topic, writer, direction)


def test_the_bridge_user_writes_what_comes_from_a_region() -> None:
    """The generated ACL's ``bridge`` identity may write every topic bridged out or both
    ways, and nothing bridged only in (home's own state)."""
    auth = AuthFile(
        prefix="shoal",
        identities={
            "bridge-us": Identity.model_validate({"role": "bridge", "password_hash": "$7$x"})
        },
    )
    rules = topic_rules(auth, "bridge-us", auth.identities["bridge-us"])
    writes = [t for access, t in rules if access in ("write", "readwrite")]
    conf = bridged((ROOT / "configs/mosquitto-bridge.conf").read_text())
    for topic, writer in example_topics().items():
        line = next(p for p in conf if matches(p, topic))
        allowed = any(matches(w, topic) for w in writes)
        assert allowed == (conf[line] != "in"), (topic, writer, conf[line])
