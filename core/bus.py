"""The bus client: Shoal's only way for services to talk.

A thin layer over aiomqtt that adds what every service needs:

- reconnect with jittered backoff, resubscribe, and ``on_connect`` hooks (a service
  republishes its retained state there: level-triggered, so a broker restart loses nothing);
- envelopes in and out (``core.codec``), malformed payloads logged and dropped;
- a cache of the latest value of every topic subscribed with ``cache=True``;
- request/reply with a timeout over ``<prefix>/reply/<client-id>``;
- ``sync()``: a barrier that returns once every retained message delivered for the current
  subscriptions has been handled.

Handlers run one at a time in arrival order on a dispatcher task, so per-topic ordering
holds. Replies are resolved on the receiving task, so a handler may await ``request``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
from pydantic import BaseModel

from core import codec
from core.backoff import Backoff
from core.codec import Envelope
from core.config import BrokerURL
from core.errors import BusError, CodecError, RequestTimeout
from core.logs import get_logger
from core.topics import Topics, matches

Handler = Callable[[str, Envelope | None], Awaitable[None] | None]
Hook = Callable[[], Awaitable[None]]

log = get_logger("shoal.bus")


def _payload_bytes(payload: object) -> bytes:
    if payload is None:
        return b""
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload).encode()


@dataclass(frozen=True, slots=True)
class Subscription:
    pattern: str
    handler: Handler
    qos: int = 1
    allow_json: bool = False
    cache: bool = False


@dataclass(frozen=True, slots=True)
class LastWill:
    topic: str
    payload: bytes
    retain: bool = True
    qos: int = 1


def _no_delay(client: aiomqtt.Client) -> None:
    """Send small packets at once (TCP_NODELAY): paho leaves Nagle on, so a publish that
    follows a PUBACK waits for the peer's delayed ACK (~40 ms) on every request/reply."""
    paho = getattr(client, "_client", None)
    sock = paho.socket() if paho is not None else None
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Bus:
    """An MQTT connection that survives the broker going away."""

    def __init__(
        self,
        broker: BrokerURL,
        topics: Topics,
        *,
        client_id: str,
        src: str = "",
        will: LastWill | None = None,
        keepalive: int = 10,
    ) -> None:
        self.broker = broker
        self.topics = topics
        self.client_id = client_id
        self.src = src or client_id
        self.will = will
        self.keepalive = keepalive
        self.cache: dict[str, Envelope] = {}
        self.reply_topic = topics.reply(client_id)
        self._subs: list[Subscription] = []
        self._hooks: list[Hook] = []
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._inbox: asyncio.Queue[tuple[str, bytes] | asyncio.Future[Any]] = asyncio.Queue()
        self._closing = False
        self._hook_tasks: set[asyncio.Task[None]] = set()
        self.connects = 0

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError as err:
            raise BusError(f"no connection to the broker at {self.broker}") from err

    def on_connect(self, hook: Hook) -> None:
        """Run ``hook`` after every (re)connect, once subscriptions are in place."""
        self._hooks.append(hook)

    async def run(self) -> None:
        """Keep a connection up until cancelled; the bus's own long-running task."""
        backoff = Backoff(initial=0.1, cap=5.0)
        dispatcher = asyncio.create_task(self._dispatch_loop(), name="bus-dispatch")
        try:
            while not self._closing:
                started = time.monotonic()
                try:
                    await self._session()
                except aiomqtt.MqttError as err:
                    if self._closing:
                        break
                    if time.monotonic() - started > 10:
                        backoff.reset()
                    delay = backoff.next()
                    log.warning(
                        "broker connection lost",
                        broker=str(self.broker),
                        error=str(err),
                        retry_in=round(delay, 2),
                    )
                    await asyncio.sleep(delay)
        finally:
            dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher

    def close(self) -> None:
        """Mark the bus as closing; cancelling ``run`` then disconnects cleanly, and the
        broker does *not* publish the last will (it does on a crash)."""
        self._closing = True

    async def _session(self) -> None:
        will = None
        if self.will is not None:
            will = aiomqtt.Will(self.will.topic, self.will.payload, self.will.qos, self.will.retain)
        async with aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            username=self.broker.username,
            password=self.broker.password,
            identifier=self.client_id,
            will=will,
            keepalive=self.keepalive,
            clean_session=True,
            tls_context=self.broker.tls_context(),
            timeout=10,
        ) as client:
            self._client = client
            _no_delay(client)
            try:
                await client.subscribe(self.reply_topic, qos=1)
                for sub in self._subs:
                    await client.subscribe(sub.pattern, qos=sub.qos)
                self.connects += 1
                self._connected.set()
                log.info("connected to broker", broker=str(self.broker), client=self.client_id)
                for hook in self._hooks:
                    self._run_hook(hook)
                async for message in client.messages:
                    self._receive(str(message.topic), _payload_bytes(message.payload))
            finally:
                self._connected.clear()
                self._client = None

    def _run_hook(self, hook: Hook) -> None:
        async def guarded() -> None:
            try:
                await hook()
            except Exception:
                log.exception("on_connect hook failed", hook=getattr(hook, "__qualname__", hook))

        task = asyncio.get_running_loop().create_task(guarded(), name="bus-on-connect")
        self._hook_tasks.add(task)
        task.add_done_callback(self._hook_tasks.discard)

    # -- receiving ----------------------------------------------------------------------

    def _receive(self, topic: str, payload: bytes) -> None:
        if topic == self.reply_topic:
            try:
                env = codec.decode(payload, allow_json=True)
            except CodecError as err:
                log.warning("malformed reply dropped", topic=topic, error=str(err))
                return
            if env is None:
                return
            if env.kind == "sync":
                fut = self._pending.pop(env.re or "", None)
                if fut is not None:
                    self._inbox.put_nowait(fut)  # resolved once everything before it ran
                return
            fut = self._pending.pop(env.re or "", None)
            if fut is not None and not fut.done():
                fut.set_result(env)
            return
        self._inbox.put_nowait((topic, payload))

    async def _dispatch_loop(self) -> None:
        while True:
            item = await self._inbox.get()
            if isinstance(item, asyncio.Future):
                if not item.done():
                    item.set_result(None)
                continue
            topic, payload = item
            for sub in list(self._subs):
                if matches(sub.pattern, topic):
                    try:
                        await self._deliver(sub, topic, payload)
                    except Exception:  # the dispatcher must outlive any one message
                        log.exception("message dropped", topic=topic, size=len(payload))

    async def _deliver(self, sub: Subscription, topic: str, payload: bytes) -> None:
        try:
            env = codec.decode(payload, allow_json=sub.allow_json)
        except CodecError as err:
            log.warning("malformed message dropped", topic=topic, error=str(err), size=len(payload))
            return
        if sub.cache:
            if env is None:
                self.cache.pop(topic, None)
            else:
                self.cache[topic] = env
        try:
            result = sub.handler(topic, env)
            if inspect.isawaitable(result):
                await result
        except Exception as err:
            log.exception(
                "handler failed; message dropped",
                topic=topic,
                kind=env.kind if env else None,
                error=str(err),
            )

    # -- subscribing --------------------------------------------------------------------

    async def subscribe(
        self,
        pattern: str,
        handler: Handler,
        *,
        qos: int = 1,
        allow_json: bool = False,
        cache: bool = False,
    ) -> None:
        """Register a handler; takes effect now if connected, and after every reconnect."""
        sub = Subscription(pattern, handler, qos, allow_json, cache)
        self._subs.append(sub)
        client = self._client
        if client is not None and self.connected:
            try:
                await client.subscribe(pattern, qos=qos)
            except aiomqtt.MqttError as err:
                raise BusError(f"subscribe {pattern}: {err}") from err

    def cached(self, pattern: str) -> dict[str, Envelope]:
        return {t: e for t, e in self.cache.items() if matches(pattern, t)}

    # -- publishing ---------------------------------------------------------------------

    def envelope(self, kind: str, body: BaseModel | dict[str, Any], **extra: Any) -> Envelope:
        return codec.make(kind, body, src=self.src, **extra)

    async def publish(
        self,
        topic: str,
        kind: str,
        body: BaseModel | dict[str, Any],
        *,
        retain: bool = False,
        qos: int = 1,
        timeout: float | None = 10.0,
        **extra: Any,
    ) -> Envelope:
        env = self.envelope(kind, body, **extra)
        await self.publish_raw(topic, codec.encode(env), retain=retain, qos=qos, timeout=timeout)
        return env

    async def publish_raw(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        qos: int = 1,
        timeout: float | None = 10.0,
    ) -> None:
        await self.wait_connected(timeout)
        client = self._client
        if client is None:
            raise BusError("not connected")
        try:
            await asyncio.wait_for(client.publish(topic, payload, qos=qos, retain=retain), timeout)
        except (aiomqtt.MqttError, TimeoutError) as err:
            raise BusError(f"publish to {topic} failed: {err or 'timeout'}") from err

    async def clear(self, topic: str) -> None:
        """Delete a retained value (an empty retained payload)."""
        await self.publish_raw(topic, b"", retain=True)

    async def request(
        self, topic: str, kind: str, body: BaseModel | dict[str, Any], *, timeout: float = 10.0
    ) -> Envelope:
        """Publish a command and wait for its reply."""
        env = self.envelope(kind, body, reply_to=self.reply_topic)
        fut: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._pending[env.id] = fut
        try:
            await self.publish_raw(topic, codec.encode(env), timeout=timeout)
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError as err:
            raise RequestTimeout(
                f"no reply to {kind} on {topic} within {timeout:g}s: is the controller running?"
            ) from err
        finally:
            self._pending.pop(env.id, None)

    async def reply(self, request: Envelope, kind: str, body: BaseModel | dict[str, Any]) -> None:
        """Answer ``request`` on its ``reply_to`` topic, if it has one."""
        if not request.reply_to:
            return
        env = self.envelope(kind, body, re=request.id)
        # Requests that arrived as JSON (mosquitto_pub, a CI job) get a JSON reply.
        payload = codec.encode_json(env) if request.was_json else codec.encode(env)
        await self.publish_raw(request.reply_to, payload, qos=1)

    async def settle(self, timeout: float = 10.0) -> bool:
        """``sync`` until it succeeds: True once every retained value has been handled,
        False when the connection dropped meanwhile (``on_connect`` hooks run again then)."""
        while True:
            try:
                await self.sync(timeout)
                return True
            except BusError as err:
                if not self.connected:
                    return False
                log.warning("bus sync failed; retrying", error=str(err))

    async def sync(self, timeout: float = 5.0) -> None:
        """Return once every message the broker sent before now has been handled."""
        marker = uuid.uuid4().hex
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[marker] = fut
        try:
            await self.publish_raw(
                self.reply_topic,
                codec.encode(self.envelope("sync", {}, re=marker)),
                timeout=timeout,
            )
            await asyncio.wait_for(fut, timeout)
        except TimeoutError as err:
            raise RequestTimeout("bus sync timed out") from err
        finally:
            self._pending.pop(marker, None)
