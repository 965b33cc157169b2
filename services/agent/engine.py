"""The Docker seam: the few engine operations the agent needs, over aiodocker.

Every aiodocker/aiohttp failure is translated here into ``RuntimeFailure`` (the engine
refused: ``status`` holds the HTTP status) or ``EngineUnavailable`` (it cannot be
reached), so the service handles one error tree.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import aiodocker
import aiohttp
from aiodocker.events import DockerEvents
from aiodocker.execs import Exec

from core.errors import EngineUnavailable, RuntimeFailure


class EngineError(RuntimeFailure):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{message} (HTTP {status})" if status else message)


def _translate(err: BaseException, what: str) -> RuntimeFailure:
    if isinstance(err, aiodocker.DockerError):
        message = err.message if isinstance(err.message, str) else str(err.message)
        status = int(err.status) if isinstance(err.status, int) else 0
        return EngineError(status, message)
    return EngineUnavailable(f"{what}: Docker engine unreachable: {type(err).__name__}: {err}")


UNREACHABLE = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


class ExecTimeout(TimeoutError):
    """An exec did not finish in time; ``exec_id`` lets the caller see when it ends."""

    def __init__(self, exec_id: str | None, timeout: float) -> None:
        self.exec_id = exec_id
        super().__init__(f"exec did not finish within {timeout:g}s")


class Engine:
    """A connection to one Docker engine (``unix:///var/run/docker.sock`` by default)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._docker: aiodocker.Docker | None = None

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            timeout = aiohttp.ClientTimeout(total=60, sock_connect=5)
            if self.url.startswith("unix://"):
                # A bigger pool than aiodocker's default: 50 parallel creates must not queue.
                connector = aiohttp.UnixConnector(self.url.removeprefix("unix://"), limit=200)
                self._docker = aiodocker.Docker(
                    url="unix://localhost", connector=connector, timeout=timeout
                )
            else:
                self._docker = aiodocker.Docker(url=self.url, timeout=timeout)
        return self._docker

    async def close(self) -> None:
        if self._docker is not None:
            docker, self._docker = self._docker, None
            await docker.close()
            await docker.connector.close()  # ours when passed in: aiodocker leaves it open

    async def reset(self) -> None:
        """Drop the connection pool (after the engine went away)."""
        await self.close()

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except (aiodocker.DockerError, *UNREACHABLE) as err:
            raise _translate(err, what) from err

    # -- engine ------------------------------------------------------------------------

    async def info(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("info", self.docker.system.info())
        return result

    # -- containers ----------------------------------------------------------------------

    async def list_ids(self, label_filters: list[str]) -> list[str]:
        filters = json.dumps({"label": label_filters})
        data = await self._call(
            "list",
            self.docker._query_json("containers/json", params={"all": "true", "filters": filters}),
        )
        return [str(item["Id"]) for item in data]

    async def list_networks(self, label_filters: list[str]) -> list[dict[str, Any]]:
        filters = json.dumps({"label": label_filters})
        data: list[dict[str, Any]] = await self._call(
            "list networks", self.docker._query_json("networks", params={"filters": filters})
        )
        return data

    async def inspect(self, container_id: str) -> dict[str, Any] | None:
        """The inspect answer, or None if the container is gone."""
        try:
            data: dict[str, Any] = await self._call(
                "inspect", self.docker._query_json(f"containers/{container_id}/json")
            )
        except EngineError as err:
            if err.status == 404:
                return None
            raise
        return data

    async def create(self, config: dict[str, Any], name: str) -> str:
        data = await self._call(
            "create",
            self.docker._query_json(
                "containers/create", method="POST", data=config, params={"name": name}
            ),
        )
        return str(data["Id"])

    async def start(self, container_id: str) -> None:
        await self._call(
            "start", self.docker._query_json(f"containers/{container_id}/start", method="POST")
        )

    async def stop(self, container_id: str, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (Docker's own stop)."""
        t = max(0, math.ceil(grace))
        try:
            await self._call(
                "stop",
                self.docker._query_json(
                    f"containers/{container_id}/stop",
                    method="POST",
                    params={"t": t},
                    timeout=aiohttp.ClientTimeout(total=t + 30),
                ),
            )
        except EngineError as err:
            if err.status not in (304, 404):  # already stopped / gone
                raise

    async def restart(self, container_id: str, grace: float) -> None:
        """Stop (SIGTERM, SIGKILL after ``grace``) and start again, in the engine."""
        t = max(0, math.ceil(grace))
        await self._call(
            "restart",
            self.docker._query_json(
                f"containers/{container_id}/restart",
                method="POST",
                params={"t": t},
                timeout=aiohttp.ClientTimeout(total=t + 30),
            ),
        )

    async def exec_run(
        self, container_id: str, command: list[str], timeout: float, keep: int = 4096
    ) -> tuple[int | None, str]:
        """Run ``command`` inside the container; its exit code and (the start of) its output.

        Raises ``ExecTimeout`` after ``timeout`` seconds (the engine cannot kill an exec:
        a hung command is left to finish or to die with its container; ``exec_running``
        tells when it is over).
        """
        exec_id: list[str] = []

        async def run() -> tuple[int | None, str]:
            created = await self.docker._query_json(
                f"containers/{container_id}/exec",
                method="POST",
                data={"AttachStdout": True, "AttachStderr": True, "Tty": False, "Cmd": command},
            )
            exec_id.append(str(created["Id"]))
            execution = Exec(self.docker, exec_id[0], tty=False)
            output = bytearray()
            async with execution.start(detach=False) as stream:
                while (message := await stream.read_out()) is not None:
                    if len(output) < keep:
                        output.extend(message.data[: keep - len(output)])
            info = await execution.inspect()
            code = info.get("ExitCode")
            return (int(code) if code is not None else None), output.decode(errors="replace")

        try:
            async with asyncio.timeout(timeout):
                result: tuple[int | None, str] = await self._call("exec", run())
        except TimeoutError as err:
            raise ExecTimeout(exec_id[0] if exec_id else None, timeout) from err
        return result

    async def exec_running(self, exec_id: str) -> bool:
        """Whether an exec (one that timed out) is still running in its container."""
        try:
            data = await self._call("exec inspect", self.docker._query_json(f"exec/{exec_id}/json"))
        except EngineError as err:
            if err.status == 404:  # gone with its container
                return False
            raise
        return bool(data.get("Running"))

    async def remove(self, container_id: str) -> None:
        try:
            await self._call(
                "remove",
                self.docker._query_json(
                    f"containers/{container_id}", method="DELETE", params={"force": "true"}
                ),
            )
        except EngineError as err:
            if err.status == 404 or (err.status == 409 and "already in progress" in err.message):
                return
            raise

    async def stats(self, container_id: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = await self._call(
                "stats",
                self.docker._query_json(
                    f"containers/{container_id}/stats",
                    params={"stream": "false", "one-shot": "true"},
                ),
            )
        except EngineError as err:
            if err.status in (404, 409):
                return None
            raise
        return data

    async def logs(
        self, container_id: str, *, follow: bool, tail: int | None
    ) -> AsyncIterator[str]:
        """Log lines (stdout and stderr) of one container; follows while it runs."""
        container = self.docker.containers.container(container_id)
        params: dict[str, Any] = {"tail": str(tail) if tail is not None else "all"}
        try:
            if follow:
                async for chunk in container.log(stdout=True, stderr=True, follow=True, **params):
                    for line in str(chunk).splitlines():
                        yield line
            else:
                chunks = await container.log(stdout=True, stderr=True, follow=False, **params)
                for chunk in chunks:
                    for line in str(chunk).splitlines():
                        yield line
        except (aiodocker.DockerError, *UNREACHABLE) as err:
            raise _translate(err, "logs") from err

    # -- images --------------------------------------------------------------------------

    async def pull(
        self, reference: str, auth: dict[str, str] | None
    ) -> AsyncIterator[dict[str, Any]]:
        """Pull progress items; raises ``EngineError`` with the registry's reason."""
        try:
            async for item in self.docker.images.pull(reference, auth=auth, stream=True):
                yield item
        except (aiodocker.DockerError, *UNREACHABLE) as err:
            raise _translate(err, "pull") from err

    # -- events --------------------------------------------------------------------------

    async def events(self, label_filters: list[str], since: float) -> AsyncIterator[dict[str, Any]]:
        """Container events for the labelled containers; ends when the engine goes away."""
        events = DockerEvents(self.docker)  # type: ignore[no-untyped-call]
        subscriber = events.subscribe(create_task=False)  # type: ignore[no-untyped-call]
        filters = json.dumps({"type": ["container"], "label": label_filters})
        task = asyncio.create_task(
            events.run(filters=filters, since=str(int(since))), name="docker-events"
        )
        try:
            while True:
                get = asyncio.ensure_future(subscriber.get())
                done, _ = await asyncio.wait({get, task}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    break
                event = get.result()
                if event is None:
                    break
                yield event
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise _translate(task.exception(), "events")  # type: ignore[arg-type]
        finally:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, aiodocker.DockerError, *UNREACHABLE):
                pass
