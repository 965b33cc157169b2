"""Docker create bodies and inspect parsing: pure translation."""

from __future__ import annotations

from typing import Any

import pytest

from core.spec import AppSpec
from core.state import AssignedReplica
from services.agent.containers import (
    ContainerLimits,
    container_name,
    create_config,
    owner_filters,
    parse_container,
    parse_time,
    volume_name,
)

REPLICA = AssignedReplica(id="prod.web.0000abcd", namespace="prod", app="web", revision=3)


def spec(**fields: Any) -> AppSpec:
    return AppSpec.model_validate({"name": "web", "namespace": "prod", "image": "img:1", **fields})


def test_name_and_owner_filters() -> None:
    assert container_name("n1", REPLICA.id) == "shoal.n1.prod.web.0000abcd"
    assert owner_filters("p1", "n1") == ["shoal.managed=true", "shoal.prefix=p1", "shoal.node=n1"]


def test_create_config_follows_the_conventions() -> None:
    s = spec(
        ports={"http": 8080, "admin": 9000},
        env={"A": "1"},
        resources={"cpu": "250m", "memory": "64Mi"},
        labels={"team": "x"},
        termination={"drain": "500ms", "grace": "3s"},
    )
    cfg = create_config(s, REPLICA, prefix="p1", node="n1", address="127.0.0.2")
    labels = cfg["Labels"]
    assert labels["shoal.managed"] == "true"
    assert labels["shoal.prefix"] == "p1"
    assert labels["shoal.node"] == "n1"
    assert labels["shoal.replica"] == REPLICA.id
    assert (labels["shoal.ns"], labels["shoal.app"], labels["shoal.revision"]) == (
        "prod",
        "web",
        "3",
    )
    assert labels["user.team"] == "x"
    assert (labels["shoal.drain"], labels["shoal.grace"]) == ("0.5", "3")
    host = cfg["HostConfig"]
    assert host["PortBindings"] == {
        "8080/tcp": [{"HostIp": "127.0.0.2", "HostPort": ""}],
        "9000/tcp": [{"HostIp": "127.0.0.2", "HostPort": ""}],
    }
    assert host["CpuShares"] == 256
    assert host["NanoCpus"] == 0  # no hard quota unless cpu_limit is given
    assert host["Memory"] == host["MemorySwap"] == 64 * 1024**2
    assert host["RestartPolicy"] == {"Name": "no"}
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert "A=1" in cfg["Env"]
    assert f"SHOAL_REPLICA={REPLICA.id}" in cfg["Env"]
    assert "Entrypoint" not in cfg
    assert "Cmd" not in cfg


def test_a_named_volume_belongs_to_its_namespace() -> None:
    """``data`` in ``test`` and ``data`` in ``prod`` are two Docker volumes (they were one)."""
    s = spec(volumes=[{"source": "data", "target": "/data"}])
    test = AssignedReplica(id="test.web.0000abcd", namespace="test", app="web", revision=1)
    sources = {
        create_config(s, r, prefix="shoal", node="n", address="127.0.0.1")["HostConfig"]["Mounts"][
            0
        ]["Source"]
        for r in (REPLICA, test)
    }
    assert sources == {"shoal_prod_data", "shoal_test_data"}
    assert volume_name("data", prefix="t/x y", namespace="prod") == "t-x-y_prod_data"
    assert volume_name("data", prefix="_p", namespace="prod") == "p_prod_data"


def test_create_config_command_args_volumes_user_and_opt_outs() -> None:
    s = spec(
        command=["/bin/sh", "-c"],
        args=["echo hi"],
        volumes=[
            {"source": "/srv/data", "target": "/data", "read_only": True},
            {"source": "cache", "target": "/cache"},
        ],
        working_dir="/data",
        user="65534",
        security={"no_new_privileges": False, "read_only_rootfs": True, "cap_drop": ["ALL"]},
    )
    cfg = create_config(s, REPLICA, prefix="p", node="n", address="127.0.0.1")
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"]
    assert cfg["Cmd"] == ["echo hi"]
    assert cfg["WorkingDir"] == "/data"
    assert cfg["User"] == "65534"
    host = cfg["HostConfig"]
    assert host["Mounts"] == [
        {"Type": "bind", "Source": "/srv/data", "Target": "/data", "ReadOnly": True},
        {
            "Type": "volume",
            "Source": "p_prod_cache",
            "Target": "/cache",
            "ReadOnly": False,
            "VolumeOptions": {
                "Labels": {
                    "shoal.managed": "true",
                    "shoal.prefix": "p",
                    "shoal.ns": "prod",
                    "shoal.volume": "cache",
                }
            },
        },
    ]
    assert host["SecurityOpt"] == []
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]


@pytest.mark.parametrize(
    ("volume", "error"),
    [
        ({"source": "rel/path", "target": "/d"}, "absolute host path or a volume name"),
        ({"source": "data", "target": "d"}, "must be an absolute path"),
    ],
)
def test_bad_volumes_are_refused(volume: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        spec(volumes=[volume])


def inspect(**state: Any) -> dict[str, Any]:
    return {
        "Id": "abc123",
        "Config": {
            "Labels": {
                "shoal.replica": REPLICA.id,
                "shoal.ns": "prod",
                "shoal.app": "web",
                "shoal.revision": "3",
                "shoal.ports": "http=8080,admin=9000",
                "shoal.drain": "0.5",
                "shoal.grace": "3",
            }
        },
        "State": {
            "Status": "running",
            "ExitCode": 0,
            "OOMKilled": False,
            "Error": "",
            "StartedAt": "2026-01-02T03:04:05.123456789Z",
            "FinishedAt": "0001-01-01T00:00:00Z",
            **state,
        },
        "NetworkSettings": {
            "Ports": {
                "8080/tcp": [{"HostIp": "127.0.0.2", "HostPort": "32768"}],
                "9000/tcp": None,
                "53/udp": [{"HostIp": "127.0.0.2", "HostPort": "1"}],
            }
        },
    }


def test_parse_running_container() -> None:
    c = parse_container(inspect())
    assert c is not None
    assert (c.replica, c.namespace, c.app, c.revision) == (REPLICA.id, "prod", "web", 3)
    assert c.running
    assert c.exit_code is None
    assert c.finished_at is None
    assert c.started_at == pytest.approx(parse_time("2026-01-02T03:04:05.123456Z"))
    assert c.endpoints("127.0.0.2") == {"http": "127.0.0.2:32768"}
    assert (c.drain, c.grace) == (0.5, 3.0)


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ({"ExitCode": 137, "OOMKilled": True}, "OOMKilled"),
        ({"ExitCode": 3}, "Error"),
        ({"ExitCode": 0}, "Completed"),
        ({"ExitCode": 127, "Error": "exec: not found"}, "exec: not found"),
    ],
)
def test_parse_exited_container_reasons(state: dict[str, Any], reason: str) -> None:
    c = parse_container(inspect(Status="exited", FinishedAt="2026-01-02T03:05:05Z", **state))
    assert c is not None
    assert c.exited
    assert c.exit_code == state["ExitCode"]
    assert c.exit_reason == reason
    assert c.endpoints("x") == {"http": "x:32768"}


def test_foreign_container_is_ignored() -> None:
    assert parse_container({"Id": "x", "Config": {"Labels": {}}, "State": {}}) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0001-01-01T00:00:00Z", None),
        ("", None),
        ("garbage", None),
        ("1970-01-01T00:00:10Z", 10.0),
        ("1970-01-01T01:00:10.5+01:00", 10.5),
    ],
)
def test_parse_time(text: str, expected: float | None) -> None:
    assert parse_time(text) == expected


def test_explicit_limits_become_a_cpu_quota_and_a_larger_memory_limit() -> None:
    spec = AppSpec(
        name="web",
        image="x",
        resources={"cpu": 0.25, "memory": "64Mi", "cpu_limit": 1, "memory_limit": "128Mi"},
    )
    replica = AssignedReplica(id="default.web.0000abcd", namespace="default", app="web", revision=1)
    host = create_config(spec, replica, prefix="p", node="n1", address="127.0.0.1")["HostConfig"]
    assert host["CpuShares"] == 256
    assert host["NanoCpus"] == 1_000_000_000
    assert host["Memory"] == host["MemorySwap"] == 128 * 1024**2


def test_every_container_gets_a_pids_limit_a_memory_limit_and_log_rotation() -> None:
    host = create_config(spec(), REPLICA, prefix="p", node="n", address="127.0.0.1")["HostConfig"]
    assert host["PidsLimit"] == 4096
    assert host["Memory"] == host["MemorySwap"] == 64 * 1024**2  # the default request
    assert host["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": "10m", "max-file": "3"},
    }


def test_the_node_limits_are_the_agent_options() -> None:
    limits = ContainerLimits(pids=128, log_max_size="1m", log_max_files=2)
    host = create_config(spec(), REPLICA, prefix="p", node="n", address="127.0.0.1", limits=limits)[
        "HostConfig"
    ]
    assert host["PidsLimit"] == 128
    assert host["LogConfig"]["Config"] == {"max-size": "1m", "max-file": "2"}


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"pids": 0}, "pids limit 0"),
        ({"log_max_files": 0}, "log max files 0"),
        ({"log_max_size": "10"}, "log max size '10'"),
        ({"log_max_size": "10 MB"}, "log max size"),
    ],
)
def test_bad_limits_are_refused(fields: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        ContainerLimits(**fields)


def test_hostname_and_stop_signal_reach_the_container() -> None:
    cfg = create_config(
        spec(hostname="db-primary", stop_signal="SIGQUIT"),
        REPLICA,
        prefix="p1",
        node="n1",
        address="127.0.0.2",
    )
    assert cfg["Hostname"] == "db-primary"
    assert cfg["StopSignal"] == "SIGQUIT"
    plain = create_config(spec(), REPLICA, prefix="p1", node="n1", address="127.0.0.2")
    assert "Hostname" not in plain
    assert "StopSignal" not in plain


def test_unset_new_template_fields_keep_the_template_hash() -> None:
    """Specs written before hostname/stop_signal existed keep their revision's hash."""
    before = spec()
    assert before.template_hash() == spec(depends_on=[{"app": "db"}]).template_hash()
    assert before.template_hash() != spec(hostname="h").template_hash()
    assert before.template_hash() != spec(stop_signal="SIGINT").template_hash()
