"""Shared fixtures. Integration tests get a real broker (mosquitto and the embedded one);
e2e tests additionally need a real Docker engine and the locally built workload image."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.support.postgres import Postgres, running_postgres
from tests.support.procs import Broker, ProcGroup, proc_group, start_broker

ECHO_IMAGE = "shoal-test/echo"


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


@pytest.fixture
def procs(request: pytest.FixtureRequest) -> Iterator[ProcGroup]:
    with proc_group() as group:
        yield group
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(group.dump())


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture(params=["mosquitto", "embedded"])
def broker(request: pytest.FixtureRequest, procs: ProcGroup) -> Broker:
    """A fresh broker per test, of both kinds."""
    return start_broker(procs, request.param)


@pytest.fixture
def mosquitto(procs: ProcGroup) -> Broker:
    return start_broker(procs, "mosquitto")


@pytest.fixture
def prefix() -> str:
    """A unique topic prefix per test."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def docker_engine() -> None:
    if not docker_available():
        pytest.fail("e2e tests need a running Docker engine (see README: make test sets it up)")


@pytest.fixture(scope="session")
def echo_image(docker_engine: None) -> str:
    """The workload image, built locally from busybox-static (tags v1 and v2)."""
    from tests.support.images import ensure_echo_image

    ensure_echo_image()
    return ECHO_IMAGE


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    """A real PostgreSQL (Debian's package) for the whole session; see tests/support/postgres."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: Postgres) -> str:
    """A fresh, empty database on the session's PostgreSQL."""
    return postgres_server.create_database()
