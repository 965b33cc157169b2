"""The generated mosquitto ACL and password file, checked with mosquitto's rules: a user
may do what one of its ``topic`` lines allows (``+``/``#`` wildcards), nothing else."""

from __future__ import annotations

from core.acl import acl_text, password_file
from core.identities import AuthFile, Identity
from core.topics import matches

H = "$7$101$AAAAAAAAAAAAAAAA$AAAA"


def ident(role: str, **fields: object) -> Identity:
    return Identity.model_validate({"role": role, "password_hash": H, **fields})


AUTH = AuthFile(
    prefix="shoal",
    identities={
        "controller": ident("controller"),
        "scheduler": ident("scheduler"),
        "health": ident("health"),
        "balancer": ident("balancer"),
        "scaler": ident("scaler"),
        "dashboard": ident("dashboard"),
        "mesh-n1": ident("mesh", node="n1"),
        "agent-n1": ident("agent", node="n1"),
        "agent-n2": ident("agent", node="n2"),
        "alice": ident("user", grants={"test": ["*"]}),
        "bob": ident("user"),
    },
)


def rules(text: str) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user":
            current = out.setdefault(words[1], [])
        else:
            assert words[0] == "topic", line
            assert current is not None, line
            assert words[1] in ("read", "write", "readwrite"), line
            current.append((words[1], words[2]))
    return out


ACL = rules(acl_text(AUTH))


def may(user: str, access: str, topic: str) -> bool:
    return any(
        access in a.replace("readwrite", "read write").split() and matches(pattern, topic)
        for a, pattern in ACL.get(user, [])
    )


def writers(topic: str) -> set[str]:
    return {u for u in ACL if may(u, "write", topic)}


def test_no_pattern_line_applies_to_strangers() -> None:
    text = acl_text(AUTH)
    assert "pattern" not in text
    assert set(ACL) == set(AUTH.identities)
    assert not may("mallory", "read", "shoal/apps/test/web")


def test_an_agent_writes_only_its_own_node_and_reads_only_its_own_assignment() -> None:
    assert may("agent-n1", "write", "shoal/nodes/n1/info")
    assert may("agent-n1", "write", "shoal/nodes/n1/replicas")
    assert may("agent-n1", "write", "shoal/metrics/nodes/n1")
    assert may("agent-n1", "read", "shoal/nodes/n1/assign")
    assert not may("agent-n1", "write", "shoal/nodes/n2/info")
    assert not may("agent-n1", "write", "shoal/nodes/n2/replicas")
    assert not may("agent-n1", "write", "shoal/metrics/nodes/n2")
    assert not may("agent-n1", "read", "shoal/nodes/n2/assign")
    assert not may("agent-n1", "write", "shoal/nodes/n1/assign")
    assert not may("agent-n1", "read", "shoal/apps/test/web")
    assert may("agent-n1", "read", "shoal/logs/request")
    assert may("agent-n1", "write", "shoal/logs/stream/abc")


def test_one_writer_per_retained_state() -> None:
    assert writers("shoal/apps/test/web") == {"controller"}
    assert writers("shoal/nodes/n1/assign") == {"scheduler"}
    assert writers("shoal/nodes/n1/cordon") == {"scheduler"}  # the retained cordon
    assert writers("shoal/nodes/n1/info") == {"agent-n1"}
    assert writers("shoal/nodes/n2/replicas") == {"agent-n2"}
    assert writers("shoal/health/test/web") == {"health"}
    assert writers("shoal/status/scheduler/test/web") == {"scheduler"}
    assert writers("shoal/status/scaler/test/web") == {"scaler"}
    assert writers("shoal/wake/test/web") == {"balancer"}
    assert writers("shoal/services/controller/c1") == {"controller"}


def test_commands_carry_the_senders_own_name() -> None:
    assert may("alice", "write", "shoal/cmd/apply/alice")
    assert not may("alice", "write", "shoal/cmd/apply/bob")
    assert not may("alice", "write", "shoal/cmd/apply")  # the bare topic has no identity
    assert may("scaler", "write", "shoal/cmd/scale/scaler")
    assert may("agent-n1", "write", "shoal/cmd/secret_values/agent-n1")
    assert not may("agent-n1", "write", "shoal/cmd/secret_values/agent-n2")
    assert writers("shoal/cmd/apply/alice") == {"alice"}


def test_nobody_writes_or_reads_another_clients_replies() -> None:
    assert may("alice", "read", "shoal/reply/alice/cli-1")
    assert may("alice", "write", "shoal/reply/alice/cli-1")  # its own sync markers
    assert not may("alice", "read", "shoal/reply/bob/cli-1")
    assert writers("shoal/reply/bob/cli-1") == {"bob", "controller", "scheduler", "dashboard"}
    assert not may("agent-n1", "read", "shoal/reply/agent-n2/a")


def test_users_read_the_state_and_ask_for_logs_but_write_no_state() -> None:
    assert may("alice", "write", "shoal/logs/request")
    assert may("alice", "read", "shoal/logs/stream/abc")
    for topic in ("apps/test/web", "nodes/n1/info", "health/test/web", "events/scale"):
        assert may("alice", "read", f"shoal/{topic}")
        assert not may("alice", "write", f"shoal/{topic}")
    assert not may("alice", "read", "shoal/cmd/apply/bob")


def test_the_answerers_read_every_request() -> None:
    for service in ("controller", "scheduler", "dashboard"):
        assert may(service, "read", "shoal/cmd/apply/alice")
    assert not may("health", "read", "shoal/cmd/apply/alice")


def test_the_prefix_is_the_clusters() -> None:
    text = acl_text(AUTH.model_copy(update={"prefix": "prod/eu"}))
    assert "topic write prod/eu/apps/+/+" in text
    assert "shoal/" not in text


def test_the_password_file_has_one_line_per_identity() -> None:
    lines = password_file(AUTH).splitlines()
    assert lines == sorted(lines)
    assert [line.split(":")[0] for line in lines] == sorted(AUTH.identities)
    assert all(line.endswith(H) for line in lines)


def test_whoever_may_read_or_write_a_paged_value_may_do_so_with_its_pages() -> None:
    """A value too large for one message goes as ``<topic>/page/<i>`` (core/paging.py)."""
    acl = rules(acl_text(AUTH))

    def allowed(user: str, access: str, topic: str) -> bool:
        return any(a in (access, "readwrite") and matches(t, topic) for a, t in acl[user])

    page = "/page/3"
    assert allowed("scheduler", "write", "shoal/nodes/n1/assign" + page)
    assert allowed("agent-n1", "read", "shoal/nodes/n1/assign" + page)
    assert not allowed("agent-n1", "read", "shoal/nodes/n2/assign" + page)
    assert allowed("agent-n1", "write", "shoal/nodes/n1/replicas" + page)
    assert not allowed("agent-n1", "write", "shoal/nodes/n2/replicas" + page)
    assert allowed("controller", "write", "shoal/apps/prod/web" + page)
    assert allowed("alice", "read", "shoal/apps/prod/web" + page)
    assert not allowed("alice", "write", "shoal/apps/prod/web" + page)
