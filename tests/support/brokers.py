"""Brokers with a configuration the plain ``start_broker`` does not offer."""

from __future__ import annotations

import shutil

from tests.support.net import free_port, wait_port
from tests.support.procs import Broker, ProcGroup


def start_persistent_mosquitto(group: ProcGroup, port: int | None = None) -> Broker:
    """mosquitto that keeps retained messages across a restart (``persistence true``).

    The database lives in the group's work dir; mosquitto writes it when it stops
    (SIGTERM, as ``Broker.restart`` sends) and reads it back when it starts.
    """
    port = port or free_port()
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    store = group.workdir / f"mosquitto-{port}-db"
    store.mkdir(exist_ok=True)
    conf = group.workdir / f"mosquitto-{port}-persistent.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        f"persistence true\npersistence_location {store}/\n"
        "set_tcp_nodelay true\n"
    )
    proc = group.spawn(f"mosquitto-{port}", [exe, "-c", str(conf)])
    wait_port("127.0.0.1", port, timeout=15)
    return Broker("mosquitto", "127.0.0.1", port, proc)
