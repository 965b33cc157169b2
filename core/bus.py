"""The bus client: Shoal's only way for services to talk.

``Bus`` adds to a broker connection what every service needs:

- typed channels (``core.channels``): ``publish(APPS, state)`` derives topic, kind, retain
  and QoS from the contract; ``subscribe(HEALTH, handler)`` decodes, checks the body's key
  against the topic, and hands the handler ``(key, value)`` (value None: retained value
  deleted); ``view(APPS)`` keeps the latest value per key (``core.view``);
- commands: ``request(APPLY, body)`` waits for the typed answer; ``answer(APPLY, handler)``
  validates bodies strictly and replies to every request, errors included;
- reconnect with jittered backoff, resubscribe, and ``on_connect`` hooks (a service
  republishes its retained state there: level-triggered, so a broker restart loses nothing);
- malformed payloads and bodies logged and dropped, never raised into a service;
- ``sync()``: a barrier that returns once every retained message delivered for the current
  subscriptions has been handled.

Handlers run one at a time in arrival order on a dispatcher task, so per-topic ordering
holds. Replies are resolved on the receiving task, so a handler may await ``request``.

The transport is a subclass's business: ``MqttBus`` speaks MQTT through aiomqtt;
``core.memory.MemoryBus`` is an in-process broker with the same semantics (retained values,
wildcards, last will, sync) for unit tests of service shells. ``connect_bus`` picks one.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ValidationError

from core import codec, paging
from core.backoff import Backoff
from core.channels import REPLY_KINDS, Channel, Command, level, reply_base, reply_topic
from core.codec import Envelope
from core.commands import Reply
from core.config import BrokerURL, InProcessBroker
from core.durations import Durations
from core.errors import (
    BusError,
    CodecError,
    MessageTooLarge,
    RequestTimeout,
    ShoalError,
    SpecError,
    TopicError,
)
from core.logs import get_logger
from core.topics import Topics, matches
from core.view import Handler, View

RawHandler = Callable[[str, Envelope | None], Awaitable[None] | None]
Hook = Callable[[], Awaitable[None]]
K = TypeVar("K")
M = TypeVar("M", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)
#: A command handler: the validated body and its envelope -> the answer (None: no answer).
Answerer = Callable[[M, Envelope], Awaitable[R | Reply | None]]

log = get_logger("shoal.bus")


@dataclass(frozen=True, slots=True)
class Subscription:
    pattern: str
    handler: RawHandler
    qos: int = 1
    allow_json: bool = False


@dataclass(frozen=True, slots=True)
class LastWill:
    topic: str
    payload: bytes
    retain: bool = True
    qos: int = 1


@dataclass(slots=True)
class BusCounters:
    """Plain counters the bus bumps (read by ``core.metrics`` at scrape time)."""

    received: int = 0
    received_bytes: int = 0
    published: int = 0
    published_bytes: int = 0
    dropped: int = 0  # malformed, undecodable, or a handler failed on it
    publish_failures: int = 0
    #: values sent in pages (``core.paging``) and pages sent
    paged: int = 0
    pages: int = 0
    #: commands answered, by (command, result): result is ok, refused, failed or crashed
    answered: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: seconds spent answering, by command
    answer_seconds: dict[str, Durations] = field(default_factory=dict)


class Bus:
    """A broker connection that survives the broker going away (transport: a subclass)."""

    #: Errors of the transport that mean "the connection is gone; reconnect".
    connection_errors: tuple[type[BaseException], ...] = (ConnectionError,)

    def __init__(
        self,
        topics: Topics,
        *,
        client_id: str,
        src: str = "",
        user: str = "",
        will: LastWill | None = None,
        keepalive: int = 10,
        max_message: int | None = None,
    ) -> None:
        self.topics = topics
        #: the largest payload the broker carries: larger ones are paged or refused here
        self.max_message = max_message or paging.max_message_from_env()
        #: retained topics that may hold pages (topic -> how many), cleared when they shrink
        self._pages_left: dict[str, int] = {}
        self.prefix = topics.prefix
        self.client_id = client_id
        self.src = src or client_id
        #: the user level of this client's command and reply topics: its broker user name
        #: (the ACL pins it), or without one the service name it says it is
        self.user = level(user or self.src.split("/")[0] or "anonymous")
        self.will = will
        self.keepalive = keepalive
        self.reply_topic = reply_topic(self.prefix, self.user, client_id)
        self._subs: list[Subscription] = []
        self._hooks: list[Hook] = []
        self._connected = asyncio.Event()
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._inbox: asyncio.Queue[tuple[str, bytes] | asyncio.Future[Any]] = asyncio.Queue()
        self._closing = False
        self._hook_tasks: set[asyncio.Task[None]] = set()
        self.connects = 0
        self.counters = BusCounters()

    # -- transport (subclasses) ---------------------------------------------------------

    async def _session(self) -> None:
        """Connect, subscribe ``self.patterns()``, call ``_on_session_start``, then feed
        every message to ``_receive`` until the connection drops (raise a connection error)."""
        raise NotImplementedError

    async def _send(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
        raise NotImplementedError

    async def _subscribe_now(self, pattern: str, qos: int) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        """Where this bus connects (for logs and errors)."""
        return "broker"

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError as err:
            raise BusError(f"no connection to the broker at {self.describe()}") from err

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
                except self.connection_errors as err:
                    if self._closing:
                        break
                    if time.monotonic() - started > 10:
                        backoff.reset()
                    delay = backoff.next()
                    log.warning(
                        "broker connection lost",
                        broker=self.describe(),
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

    def patterns(self) -> list[tuple[str, int]]:
        """What a new session subscribes: the reply topic, then every subscription."""
        return [(self.reply_topic, 1), *((s.pattern, s.qos) for s in self._subs)]

    def _on_session_start(self) -> None:
        self.connects += 1
        self._connected.set()
        log.info("connected to broker", broker=self.describe(), client=self.client_id)
        for hook in self._hooks:
            self._run_hook(hook)

    def _on_session_end(self) -> None:
        self._connected.clear()

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
        """Take one message off the connection; nothing a payload holds may end the session."""
        self.counters.received += 1
        self.counters.received_bytes += len(payload)
        try:
            self._take(topic, payload)
        except Exception:  # the receive loop must outlive any one message
            self.counters.dropped += 1
            log.exception("message dropped on receipt", topic=topic, size=len(payload))

    def _take(self, topic: str, payload: bytes) -> None:
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
                        self.counters.dropped += 1
                        log.exception("message dropped", topic=topic, size=len(payload))

    async def _deliver(self, sub: Subscription, topic: str, payload: bytes) -> None:
        try:
            env = codec.decode(payload, allow_json=sub.allow_json)
        except CodecError as err:
            self.counters.dropped += 1
            log.warning("malformed message dropped", topic=topic, error=str(err), size=len(payload))
            return
        except Exception:  # a decoder bug: drop the message, keep the dispatcher
            self.counters.dropped += 1
            log.exception("undecodable message dropped", topic=topic, size=len(payload))
            return
        try:
            result = sub.handler(topic, env)
            if inspect.isawaitable(result):
                await result
        except Exception as err:
            self.counters.dropped += 1
            log.exception(
                "handler failed; message dropped",
                topic=topic,
                kind=env.kind if env else None,
                error=str(err),
            )

    # -- subscribing --------------------------------------------------------------------

    async def watch(
        self, pattern: str, handler: RawHandler, *, qos: int = 1, allow_json: bool = False
    ) -> None:
        """Raw envelopes of every topic matching ``pattern`` (for tools and tests; services
        use ``subscribe``). Takes effect now if connected, and after every reconnect."""
        self._subs.append(Subscription(pattern, handler, qos, allow_json))
        if self.connected:
            await self._subscribe_now(pattern, qos)

    async def subscribe(
        self,
        channel: Channel[M, K],
        handler: Handler[K, M],
        *,
        key: K | None = None,
        **fixed: str,
    ) -> None:
        """Every message of ``channel`` (or of one ``key``, or with some levels ``fixed``),
        decoded and checked: ``handler(key, value)``; value None when deleted."""
        pattern = channel.topic(self.prefix, key) if key is not None else None
        pattern = pattern or channel.pattern(self.prefix, **fixed)
        pages = paging.Assembler() if channel.paged else None

        async def on_message(topic: str, env: Envelope | None) -> None:
            try:
                got_key = channel.parse(self.prefix, topic)
            except TopicError as err:
                log.warning("message on a malformed topic dropped", topic=topic, error=str(err))
                return
            if pages is not None:
                if env is None or env.kind != paging.HEAD_KIND:
                    pages.whole(topic)
                else:
                    env = self._paged_head(pages, topic, env)
                    if env is None:
                        return
            value = None if env is None else self.open(channel, topic, env, got_key)
            if env is not None and value is None:
                return
            result = handler(got_key, value)
            if inspect.isawaitable(result):
                await result

        await self.watch(pattern, on_message, qos=channel.qos, allow_json=channel.json)
        if pages is not None:

            async def on_page(topic: str, env: Envelope | None) -> None:
                whole = self._paged_page(pages, topic, env)
                if whole is not None:
                    await on_message(*whole)

            await self.watch(paging.page_pattern(pattern), on_page, qos=channel.qos)

    def _paged_head(self, pages: paging.Assembler, topic: str, env: Envelope) -> Envelope | None:
        """The value a head completes (its pages all here), or None (logged if bad)."""
        try:
            head = env.open(paging.PageHead, lenient=True)
            self._pages_left[topic] = max(self._pages_left.get(topic, 0), head.pages)
            return self._assembled(topic, pages.head(topic, head))
        except (CodecError, ValueError) as err:
            self.counters.dropped += 1
            log.warning("malformed paged value dropped", topic=topic, error=str(err)[:500])
            return None

    def _paged_page(
        self, pages: paging.Assembler, topic: str, env: Envelope | None
    ) -> tuple[str, Envelope] | None:
        """``(value topic, value)`` when this page completes a value; None otherwise."""
        where = paging.value_topic(topic)
        if env is None or where is None:
            return None  # a cleared page, or a topic that is not a page's
        base, index = where
        try:
            if env.kind != paging.PAGE_KIND:
                raise CodecError(f"a {paging.PAGE_KIND!r} was expected, got {env.kind!r}")
            whole = self._assembled(base, pages.page(base, index, env.open(paging.Page)))
        except (CodecError, ValueError) as err:
            self.counters.dropped += 1
            log.warning("malformed page dropped", topic=topic, error=str(err)[:500])
            return None
        return None if whole is None else (base, whole)

    @staticmethod
    def _assembled(topic: str, payload: bytes | None) -> Envelope | None:
        if payload is None:
            return None
        env = codec.decode(payload, allow_json=False, limit=paging.MAX_ASSEMBLED)
        if env is None or env.kind == paging.HEAD_KIND:
            raise CodecError(f"the pages of {topic} make no value")
        return env

    def open(self, channel: Channel[M, K], topic: str, env: Envelope, key: K) -> M | None:
        """The body of one message of ``channel``, or None (logged) when it does not fit."""
        if env.kind != channel.kind:
            log.warning("message of another kind dropped", topic=topic, kind=env.kind)
            return None
        try:
            value = env.open(channel.model, lenient=channel.lenient)
            if channel.key_of is not None and channel.key_of(value) != key:
                raise CodecError(f"its body names {channel.key_of(value)}, its topic {key}")
        except CodecError as err:
            log.warning(
                "malformed message dropped", topic=topic, kind=env.kind, error=str(err)[:500]
            )
            return None
        return value

    async def view(
        self,
        channel: Channel[M, K],
        *,
        on_change: Handler[K, M] | None = None,
        key: K | None = None,
        **fixed: str,
    ) -> View[K, M]:
        """Subscribe a ``View``: the latest value per key of a retained channel."""
        view: View[K, M] = View(channel, on_change=on_change)
        await self.subscribe(channel, view.update, key=key, **fixed)
        return view

    # -- publishing ---------------------------------------------------------------------

    def envelope(self, kind: str, body: BaseModel | dict[str, Any], **extra: Any) -> Envelope:
        return codec.make(kind, body, src=self.src, **extra)

    async def publish(
        self,
        channel: Channel[M, K],
        body: M,
        *,
        key: K | None = None,
        qos: int | None = None,
        timeout: float | None = 10.0,
    ) -> Envelope:
        """Publish ``body`` on its channel, under the key it names (or ``key``)."""
        topic = channel.topic(self.prefix, key if key is not None else channel.key_for(body))
        env = self.envelope(channel.kind, body)
        payload = codec.encode(env)
        qos = channel.qos if qos is None else qos
        if channel.paged and len(payload) > self.max_message:
            await self._publish_pages(topic, payload, retain=channel.retained, qos=qos)
            return env
        await self.publish_raw(topic, payload, retain=channel.retained, qos=qos, timeout=timeout)
        if channel.paged and channel.retained:
            await self._clear_pages(topic, keep=0)
        return env

    async def _publish_pages(self, topic: str, payload: bytes, *, retain: bool, qos: int) -> None:
        """Pages first, the head last (``core.paging``); then the pages a larger value
        left behind are cleared. Each publish has its own timeout."""
        try:
            head, pages = paging.split(payload, self.max_message)
        except ValueError as err:
            self.counters.publish_failures += 1
            raise MessageTooLarge(f"publish to {topic} refused: {err}") from err
        for page in pages:
            env = self.envelope(paging.PAGE_KIND, page)
            page_topic = paging.page_topic(topic, page.index)
            await self.publish_raw(page_topic, codec.encode(env), retain=retain, qos=qos)
        if retain:
            self._pages_left[topic] = max(self._pages_left.get(topic, 0), head.pages)
        head_env = self.envelope(paging.HEAD_KIND, head)
        await self.publish_raw(topic, codec.encode(head_env), retain=retain, qos=qos)
        self.counters.paged += 1
        self.counters.pages += len(pages)
        if retain:
            await self._clear_pages(topic, keep=head.pages)

    async def _clear_pages(self, topic: str, *, keep: int) -> None:
        """Clear the retained pages of ``topic`` from ``keep`` on (as far as any were seen)."""
        left = self._pages_left.get(topic, 0)
        for index in range(keep, left):
            await self.clear_raw(paging.page_topic(topic, index))
        if keep:
            self._pages_left[topic] = keep
        else:
            self._pages_left.pop(topic, None)

    def note_pages(self, topic: str, env: Envelope) -> None:
        """A retained value read raw (``watch``): if it is a paged value's head, note how
        many pages it has, so that clearing or rewriting ``topic`` clears them too (a
        channel read with ``subscribe`` notes them itself)."""
        if env.kind != paging.HEAD_KIND:
            return
        try:
            pages = env.open(paging.PageHead, lenient=True).pages
        except CodecError:
            return  # not a head after all: nothing of it to clear
        self._pages_left[topic] = max(self._pages_left.get(topic, 0), pages)

    async def clear(self, channel: Channel[Any, K], key: K) -> None:
        """Delete the retained value of one key (an empty retained payload)."""
        topic = channel.topic(self.prefix, key)
        await self.clear_raw(topic)
        if channel.paged:
            await self._clear_pages(topic, keep=0)

    async def clear_raw(self, topic: str) -> None:
        await self.publish_raw(topic, b"", retain=True)

    async def publish_raw(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        qos: int = 1,
        timeout: float | None = 10.0,
    ) -> None:
        if len(payload) > self.max_message:
            # The broker would refuse it, over MQTT 3.1.1 without a word: refuse it here.
            self.counters.publish_failures += 1
            raise MessageTooLarge(
                f"publish to {topic} refused: {len(payload)} bytes is more than the "
                f"{self.max_message} the broker carries (SHOAL_MAX_MESSAGE)"
            )
        try:
            await self.wait_connected(timeout)
            async with asyncio.timeout(timeout):
                await self._send(topic, payload, qos=qos, retain=retain)
        except TimeoutError as err:
            self.counters.publish_failures += 1
            raise BusError(f"publish to {topic} failed: timeout") from err
        except BaseException:
            self.counters.publish_failures += 1
            raise
        self.counters.published += 1
        self.counters.published_bytes += len(payload)

    # -- commands -----------------------------------------------------------------------

    async def request(self, command: Command[M, R], body: M, *, timeout: float = 10.0) -> R | Reply:
        """Send a command and wait for its answer: ``command.answer``, or a ``Reply`` (with
        ``ok=False`` and the errors) when it was refused."""
        topic = command.topic(self.prefix, self.user)
        env = await self.request_raw(topic, command.kind, body, timeout)
        model = command.answer if env.kind == command.answer_kind else REPLY_KINDS.get(env.kind)
        if model is None:
            raise CodecError(f"{command.name}: unexpected answer kind {env.kind!r}")
        answer = env.open(model, lenient=True)
        if isinstance(answer, command.answer | Reply):
            return answer
        raise CodecError(f"{command.name}: unexpected answer {type(answer).__name__}")

    async def request_raw(
        self, topic: str, kind: str, body: BaseModel | dict[str, Any], timeout: float = 10.0
    ) -> Envelope:
        """Publish a request envelope and wait for the envelope that answers it."""
        env = self.envelope(kind, body, reply_to=self.reply_topic)
        payload = codec.encode(env)
        if len(payload) > self.max_message:
            self.counters.publish_failures += 1
            raise MessageTooLarge(
                f"the {kind} command is {len(payload)} bytes, more than the {self.max_message} "
                "the broker carries (SHOAL_MAX_MESSAGE): send less in one command"
            )
        fut: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._pending[env.id] = fut
        try:
            await self.publish_raw(topic, payload, timeout=timeout)
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError as err:
            raise RequestTimeout(
                f"no reply to {kind} on {topic} within {timeout:g}s: is the controller running?"
            ) from err
        finally:
            self._pending.pop(env.id, None)

    async def answer(
        self,
        command: Command[M, R],
        handler: Answerer[M, R],
        *,
        when: Callable[[], bool] | None = None,
    ) -> None:
        """Serve ``command``: bodies are validated strictly (user input), the handler's
        answer (or the error that stopped it) goes back to the requester. With ``when``,
        requests that arrive while it is false are ignored (a standby does not answer).

        The handler's envelope carries the requester's identity (``env.user``: the user
        level of ``cmd/<name>/<user>``, '' on the bare ``cmd/<name>``); the answer goes only
        to a reply topic of that user (``reply_to`` elsewhere: no answer, logged)."""
        from core.spec import format_validation_error

        async def on_request(topic: str, env: Envelope | None) -> None:
            if env is None or (when is not None and not when()):
                return
            try:
                env = env.from_user(command.user_of(self.prefix, topic))
            except TopicError as err:
                log.warning("command on a malformed topic dropped", topic=topic, error=str(err))
                return
            if env.reply_to is not None and not reply_to_allowed(
                self.prefix, env.user, env.reply_to
            ):
                # Answering would publish wherever the sender asked, with our identity.
                self.counters.answered[command.name, "refused"] += 1
                log.warning(
                    "request refused: reply_to is not one of the requester's reply topics",
                    command=command.name,
                    user=env.user,
                    reply_to=env.reply_to[:200],
                )
                return
            result: BaseModel | None
            started = time.monotonic()
            outcome = "ok"
            try:
                if env.kind != command.kind:
                    raise SpecError(
                        [f"a {command.kind!r} command was expected on {topic}, got {env.kind!r}"]
                    )
                try:
                    body = command.model.model_validate(env.body)
                except ValidationError as err:
                    errors = format_validation_error(err, f"{command.name} command")
                    raise SpecError(errors) from err
                result = await handler(body, env)
            except SpecError as err:
                outcome = "refused"
                result = Reply(ok=False, errors=err.errors)
            except ShoalError as err:
                outcome = "failed"
                log.warning("command failed", command=command.name, error=str(err))
                result = Reply(ok=False, errors=[f"{command.name} failed: {err}"])
            except Exception as err:  # a bug must not cost the client its answer
                outcome = "crashed"
                log.exception("command crashed", command=command.name)
                result = Reply(ok=False, errors=[f"{command.name} failed: internal error: {err}"])
            if isinstance(result, Reply) and not result.ok and outcome == "ok":
                outcome = "refused"
            self._count_answer(command.name, outcome, time.monotonic() - started)
            if result is None:
                return
            if isinstance(result, Reply) and not result.ok:
                log.info("command refused", command=command.name, src=env.src, errors=result.errors)
            kind = command.answer_kind if isinstance(result, command.answer) else "reply"
            try:
                try:
                    await self.reply(env, kind, result)
                except MessageTooLarge as err:
                    log.warning("answer too large; refused instead", command=command.name)
                    too_large = f"{command.name} failed: its answer is too large to send: {err}"
                    await self.reply(env, "reply", Reply(ok=False, errors=[too_large]))
            except (BusError, TopicError) as err:
                log.warning("reply not sent", command=command.name, to=env.reply_to, error=str(err))

        await self.watch(command.topic(self.prefix), on_request, allow_json=True)
        await self.watch(command.pattern(self.prefix), on_request, allow_json=True)

    def _count_answer(self, command: str, outcome: str, seconds: float) -> None:
        self.counters.answered[command, outcome] += 1
        durations = self.counters.answer_seconds.get(command)
        if durations is None:
            durations = self.counters.answer_seconds[command] = Durations()
        durations.observe(seconds)

    async def reply(self, request: Envelope, kind: str, body: BaseModel | dict[str, Any]) -> None:
        """Answer ``request`` on its ``reply_to`` topic, if it has one and it is one of the
        requester's reply topics (a request must not make this service write elsewhere)."""
        if not request.reply_to:
            return
        if not reply_to_allowed(self.prefix, request.user, request.reply_to):
            log.warning(
                "reply_to outside the requester's reply topics; not answered",
                user=request.user,
                reply_to=request.reply_to[:200],
            )
            return
        env = self.envelope(kind, body, re=request.id)
        # Requests that arrived as JSON (mosquitto_pub, a CI job) get a JSON reply.
        payload = codec.encode_json(env) if request.was_json else codec.encode(env)
        await self.publish_raw(request.reply_to, payload, qos=1)

    # -- barriers -----------------------------------------------------------------------

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
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError as err:
            raise RequestTimeout("bus sync timed out") from err
        finally:
            self._pending.pop(marker, None)


def reply_to_allowed(prefix: str, user: str, reply_to: str) -> bool:
    """``reply/<user>/<client>`` for a request from ``user``; any ``reply/...`` topic for
    one on a bare command topic (no identity: authorisation is off)."""
    base = reply_base(prefix, user) if user else f"{prefix}/reply/"
    rest = reply_to[len(base) :] if reply_to.startswith(base) else ""
    if not rest or any(c in rest for c in "+#\0"):
        return False
    return "/" not in rest if user else True


# -- MQTT ------------------------------------------------------------------------------


def _payload_bytes(payload: object) -> bytes:
    if payload is None:
        return b""
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload).encode()


def _no_delay(client: aiomqtt.Client) -> None:
    """Send small packets at once (TCP_NODELAY): paho leaves Nagle on, so a publish that
    follows a PUBACK waits for the peer's delayed ACK (~40 ms) on every request/reply."""
    paho = getattr(client, "_client", None)
    sock = paho.socket() if paho is not None else None
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


#: The message ids of the publishes made in this context (``_Client.publish_checked``).
_MIDS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("mids", default=None)


class _Client(aiomqtt.Client):
    """aiomqtt's client, keeping what aiomqtt drops: the broker's refusal of a QoS 1
    publish (an MQTT 5 PUBACK reason code such as "Not authorized")."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused: dict[int, str] = {}
        paho_publish = self._client.publish

        def publish(*a: Any, **kw: Any) -> mqtt.MQTTMessageInfo:
            info = paho_publish(*a, **kw)
            mids = _MIDS.get()
            if mids is not None:
                mids.append(info.mid)
            return info

        self._client.publish = publish  # type: ignore[method-assign]

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        if isinstance(reason_code, ReasonCode) and reason_code.is_failure:
            self.refused[mid] = str(reason_code)
        super()._on_publish(client, userdata, mid, reason_code, properties)

    async def publish_checked(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Publish; BusError when the broker says it refused the message."""
        mids: list[int] = []
        token = _MIDS.set(mids)
        try:
            await self.publish(topic, payload, qos=qos, retain=retain)
        finally:
            _MIDS.reset(token)
        refusals = [self.refused.pop(mid) for mid in mids if mid in self.refused]
        if refusals:
            raise BusError(f"the broker refused the publish to {topic}: {refusals[0]}")


class MqttBus(Bus):
    """The bus over a real MQTT broker (mosquitto, or the embedded one).

    A client with a user name speaks MQTT 5, so it sees what the broker's ACL refuses (a
    publish or a subscription answered "Not authorized"); without one it speaks 3.1.1,
    which the embedded broker of ``shoal up`` (amqtt) also speaks."""

    connection_errors = (aiomqtt.MqttError,)

    def __init__(self, broker: BrokerURL, topics: Topics, **kwargs: Any) -> None:
        kwargs.setdefault("user", broker.username or "")  # the ACL pins it to the login
        super().__init__(topics, **kwargs)
        self.broker = broker
        self._client: _Client | None = None
        self._tls = broker.tls_context()  # a missing or bad CA/cert file fails here, at once

    def describe(self) -> str:
        return str(self.broker)

    async def _session(self) -> None:
        will = None
        if self.will is not None:
            will = aiomqtt.Will(self.will.topic, self.will.payload, self.will.qos, self.will.retain)
        v5 = self.broker.username is not None
        session: dict[str, Any] = (
            {"protocol": aiomqtt.ProtocolVersion.V5, "clean_start": True}
            if v5
            else {"clean_session": True}
        )
        async with _Client(
            self.broker.host,
            self.broker.port,
            username=self.broker.username,
            password=self.broker.password,
            identifier=self.client_id,
            will=will,
            keepalive=self.keepalive,
            tls_context=self._tls,
            timeout=10,
            **session,
        ) as client:
            self._client = client
            _no_delay(client)
            if self.broker.insecure:
                log.warning(
                    "TLS without verifying the broker (insecure=1): anyone on the path can "
                    "read and forge every message",
                    broker=self.describe(),
                )
            try:
                for pattern, qos in self.patterns():
                    _check_granted(pattern, await client.subscribe(pattern, qos=qos))
                self._on_session_start()
                async for message in client.messages:
                    self._receive(str(message.topic), _payload_bytes(message.payload))
            finally:
                self._on_session_end()
                self._client = None

    async def _send(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
        client = self._client
        if client is None:
            raise BusError("not connected")
        try:
            await client.publish_checked(topic, payload, qos, retain)
        except aiomqtt.MqttError as err:
            raise BusError(f"publish to {topic} failed: {err}") from err

    async def _subscribe_now(self, pattern: str, qos: int) -> None:
        client = self._client
        if client is None:
            return  # the next session subscribes it
        try:
            granted = await client.subscribe(pattern, qos=qos)
        except aiomqtt.MqttError as err:
            raise BusError(f"subscribe {pattern}: {err}") from err
        _check_granted(pattern, granted)


def _check_granted(pattern: str, granted: Any) -> None:
    """Log a subscription the broker refused (MQTT 5 says why; 3.1.1 says 0x80): the
    session goes on with the others, as a service that may not read one topic should."""
    for code in granted if isinstance(granted, list | tuple) else ():
        failed = code.is_failure if isinstance(code, ReasonCode) else code == 0x80
        if failed:
            log.error("the broker refused a subscription", pattern=pattern, reason=str(code))


def connect_bus(broker: BrokerURL | InProcessBroker, topics: Topics, **kwargs: Any) -> Bus:
    """A bus on ``broker``: MQTT for a URL; an in-process broker makes its own."""
    if isinstance(broker, BrokerURL):
        return MqttBus(broker, topics, **kwargs)
    bus = broker.bus(topics, **kwargs)
    if not isinstance(bus, Bus):
        raise TypeError(f"{type(broker).__name__}.bus() must return a core.bus.Bus")
    return bus
