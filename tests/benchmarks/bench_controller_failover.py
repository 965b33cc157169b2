"""Controller failover: ``kill -9`` of the leader -> the standby answers an apply.

    .venv/bin/python -m tests.benchmarks.bench_controller_failover

Two controllers on one store (a shared SQLite file, then a real PostgreSQL started like the
tests start it) on mosquitto. Each round: the leader is killed, a client keeps sending
applies (each waits 1 s for an answer), and the time from the kill to the first ``ok``
from the other controller is measured; the killed one is restarted as the new standby.
Also checks that every acknowledged apply is in the store the new leader serves.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from core.channels import APPLY, APPS, PRESENCE
from core.commands import ApplyCommand, Reply
from core.keys import AppKey
from tests.support.observer import Observer
from tests.support.postgres import running_postgres
from tests.support.procs import Proc, proc_group, start_broker

ROUNDS = 5


def app(name: str) -> dict[str, object]:
    return {"name": name, "image": "shoal-test/echo:v1", "replicas": 1, "ports": {"http": 80}}


def leader_pid(obs: Observer) -> int | None:
    for p in obs.values(PRESENCE, service="controller").values():
        if p.status == "online" and p.leader:
            return p.pid
    return None


async def run(store_args: list[str], label: str) -> None:
    with proc_group("shoal-bench-") as procs:
        broker = start_broker(procs, "mosquitto")
        prefix = f"b{uuid.uuid4().hex[:8]}"

        def start(name: str) -> Proc:
            return procs.service(
                "controller",
                broker.url,
                *store_args,
                "--instance",
                name,
                "--log-level",
                "warning",
                prefix=prefix,
                name=name,
            )

        async with Observer(broker.url, prefix) as obs:
            running = {"c1": start("c1")}
            await obs.wait_for(lambda: leader_pid(obs) == running["c1"].pid, 20, "c1 leads")
            running["c2"] = start("c2")
            await obs.wait_for(
                lambda: (
                    len(
                        [
                            p
                            for p in obs.values(PRESENCE, service="controller").values()
                            if p.status == "online"
                        ]
                    )
                    == 2
                ),
                20,
                "two controllers",
            )
            acked: set[AppKey] = set()
            n = 0
            figures = []
            for _ in range(ROUNDS):
                lead = next(k for k, p in running.items() if p.pid == leader_pid(obs))
                standby = next(k for k in running if k != lead)
                running[lead].kill()
                killed = time.perf_counter()
                while True:
                    n += 1
                    name = f"app{n}"
                    try:
                        reply = await obs.bus.request(
                            APPLY, ApplyCommand(apps=[app(name)]), timeout=1
                        )
                    except Exception:
                        continue
                    if isinstance(reply, Reply) and reply.ok:
                        acked.add(AppKey("default", name))
                        if leader_pid(obs) == running[standby].pid:
                            break
                figures.append(time.perf_counter() - killed)
                running[lead] = start(lead)
                await obs.wait_for(
                    lambda: (
                        len(
                            [
                                p
                                for p in obs.values(PRESENCE, service="controller").values()
                                if p.status == "online"
                            ]
                        )
                        == 2
                    ),
                    20,
                    "standby back",
                )
            await obs.wait_for(lambda: acked <= set(obs.values(APPS)), 10, "acked apps retained")
            print(
                f"{label}: kill -9 of the leader -> first ok from the standby: median "
                f"{statistics.median(figures):.2f} s (min {min(figures):.2f}, max "
                f"{max(figures):.2f}, {ROUNDS} rounds); acknowledged applies lost: "
                f"{len(acked - set(obs.values(APPS)))} of {len(acked)}"
            )


async def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="shoal-bench-ha-"))
    await run(["--data-dir", str(data)], "SQLite (shared file)")
    with running_postgres() as pg:
        await run(["--store", pg.create_database()], "PostgreSQL")


if __name__ == "__main__":
    asyncio.run(main())
