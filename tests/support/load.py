"""A bounded, continuous HTTP client loop for "no request lost" tests.

Runs ``workers`` threads, each sending GETs through the balancer over its own keep-alive
connection until stopped (or ``max_seconds``), and counts answers by status and body.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    statuses: Counter[int | str] = field(default_factory=Counter)
    bodies: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.ok + self.failed

    @property
    def failure_rate(self) -> float:
        return self.failed / self.total if self.total else 0.0


class LoadLoop:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        vhost: str | None = None,
        path: str = "/",
        workers: int = 4,
        max_seconds: float = 120.0,
        body_key: int = 0,
    ) -> None:
        self.host, self.port, self.vhost, self.path = host, port, vhost, path
        self.workers = workers
        self.max_seconds = max_seconds
        self.body_key = body_key  # which word of the body to count (0: version)
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> LoadLoop:
        for i in range(self.workers):
            t = threading.Thread(target=self._worker, name=f"load-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        return self.result

    def snapshot(self) -> LoadResult:
        with self._lock:
            return LoadResult(
                self.result.ok,
                self.result.failed,
                Counter(self.result.statuses),
                Counter(self.result.bodies),
                list(self.result.errors),
            )

    def _record(self, status: int | str, body: str) -> None:
        with self._lock:
            self.result.statuses[status] += 1
            if status == 200:
                self.result.ok += 1
                words = body.split()
                if len(words) > self.body_key:
                    self.result.bodies[words[self.body_key]] += 1
            else:
                self.result.failed += 1
                if len(self.result.errors) < 50:
                    self.result.errors.append(f"{status}: {body[:200]}")

    def _worker(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        conn: http.client.HTTPConnection | None = None
        headers = {"Host": self.vhost} if self.vhost else {}
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                conn.request("GET", self.path, headers=headers)
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace")
                self._record(resp.status, body)
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as err:
                self._record(type(err).__name__, str(err))
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)
        if conn is not None:
            conn.close()
