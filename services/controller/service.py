"""The controller's I/O shell: commands in, retained ``apps/<ns>/<name>`` out.

Decisions are made by ``apps.py`` (commands) and ``rollout.py`` (rollout steps); this
module reads and writes the store, publishes, answers commands and emits events.
One lock serialises every read-modify-write of an app record (command handlers, rollout
steps and the republish), so a record is persisted, then published, in one order.

Two or three controllers may run on one cluster (``Service.elect_leader``): the leader
takes over the store (a new term: ``store.py``), loads it, answers commands, writes
``apps/`` and drives rollouts; a standby does none of that (it answers nothing, writes
nothing, clears nothing) until elected. A leader whose store write is fenced (another took
over) resigns at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from core import codec
from core.authorizer import Authorizer
from core.channels import (
    APPLY,
    APPS,
    DELETE,
    HEALTH,
    HISTORY,
    NODE_ASSIGN,
    NODE_REPLICAS,
    ROLLBACK,
    ROLLOUT,
    SCALE,
    SECRET_KEY,
    SECRET_LS,
    SECRET_PUT,
    SECRET_RM,
    SECRET_VALUES,
)
from core.codec import Envelope
from core.commands import (
    ApplyCommand,
    AppResult,
    DeleteCommand,
    History,
    HistoryQuery,
    Reply,
    RevisionInfo,
    RollbackCommand,
    RolloutCommand,
    ScaleCommand,
)
from core.config import ServiceConfig
from core.errors import BusError, ShoalError, SpecError
from core.keys import AppKey
from core.runner import Reconciler
from core.sealing import Opener, Sealer, SealError, label
from core.secrets import (
    MAX_SECRET_BYTES,
    SealedValue,
    SecretDelete,
    SecretInfo,
    SecretKeyInfo,
    SecretKeyQuery,
    SecretList,
    SecretPut,
    SecretPutResult,
    SecretQuery,
    SecretValues,
    SecretValuesRequest,
    apps_using,
    missing_secrets,
    names_used,
    pin_secrets,
    put_label,
    route_wanted,
    wanted,
)
from core.service import Service
from core.spec import AppSpec, validate_apps
from core.state import AppHealth, AppState, NodeAssignment, NodeReplicas, ReplicaStatus
from services.controller.admission import (
    DEFAULT_POLICY,
    Policy,
    admission_errors,
    check_admission,
    describe,
)
from services.controller.apps import (
    AppRecord,
    Decision,
    decide_abort,
    decide_apply,
    decide_promote,
    decide_scale,
    decide_undo,
)
from services.controller.diff import redact_lines
from services.controller.prom import ControllerCollector
from services.controller.rollout import Note, failing_replicas, fails_for_good, plan_rollout
from services.controller.secret_box import SecretBox, SecretKeyError, load_key, row_label
from services.controller.store import Fenced, SecretRow, Store, Transaction
from services.controller.stores import open_store
from services.controller.strays import follow_keys, may_clear

#: Seconds between full passes over active rollouts (health changes also trigger a step).
RESYNC = 5.0
#: The store's meta row holding the secrets key's check value (``secret_box.py``).
KEY_CHECK = "secrets_key_check"


def _source(kind: str, detail: str, who: str) -> str:
    text = f"{kind} {detail}".strip()
    return f"{text} by {who}" if who else text


def check_encodable(state: AppState) -> None:
    """Refuse (before anything is stored) a state the bus cannot carry."""
    try:
        codec.encode(codec.make(APPS.kind, state))
    except Exception as err:
        raise SpecError([f"app {state.key} cannot be encoded for the bus: {err}"]) from err


class ControllerService(Service):
    name = "controller"

    def __init__(
        self,
        config: ServiceConfig,
        data_dir: Path | str | None = None,
        *,
        store: str | None = None,
        policy: Policy = DEFAULT_POLICY,
        secrets_key: Path | str | None = None,
        auth: Path | None = None,
    ) -> None:
        super().__init__(config)
        #: who may do what (``core.authorizer``; off without an identities file)
        self.authz = Authorizer(auth)
        #: the secrets key file: given by the operator, else made in the data dir
        self.key_path = Path(secrets_key or Path(data_dir or ".") / "secrets.key")
        self.key_given = secrets_key is not None
        self._secret_box: SecretBox | None = None
        self._opener: Opener | None = None
        #: every node's retained assignment (which secret versions a node may be given)
        self.assignments: Mapping[str, NodeAssignment] = {}
        #: what specs may ask of a node, per namespace (``admission.py``)
        self.policy = policy
        if store is None and data_dir is None:
            raise ValueError("the controller needs a data dir or a store URL")
        #: ``postgresql://...`` or the SQLite file
        self.location = store or str(Path(data_dir or ".") / "controller.db")
        self.store: Store | None = None
        self.apps: dict[AppKey, AppRecord] = {}
        #: apps in the store that do not read back (kept, never cleared, never published)
        self.broken: set[AppKey] = set()
        self.lock = asyncio.Lock()
        self.unpublished: set[AppKey] = set()
        #: True while this instance leads and holds the store's term
        self.serving = False
        #: retained health per app (a view of the bus once set up)
        self.health: Mapping[AppKey, AppHealth] = {}
        #: every app with a retained value on ``apps/``, whatever that value is
        self.retained: dict[AppKey, Envelope] = {}
        #: node -> app -> its replicas there that fail for good (``fails_for_good``; only
        #: nodes and apps with any): how a rollout sees its new revision crash-loop
        self.failing: dict[str, dict[AppKey, list[ReplicaStatus]]] = {}
        self.rollouts: Reconciler[AppKey] = Reconciler(
            "rollouts", self._step, keys=self._active, resync=RESYNC
        )
        self.leadership = self.elect_leader(on_elected=self._take_over, on_deposed=self._step_down)
        self.prom = ControllerCollector(self)
        self.metrics.register(self.prom)
        self._republishing: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def setup(self) -> None:
        leading = self._leading
        await self.bus.answer(APPLY, self._cmd_apply, when=leading)
        await self.bus.answer(DELETE, self._cmd_delete, when=leading)
        await self.bus.answer(SCALE, self._cmd_scale, when=leading)
        await self.bus.answer(ROLLBACK, self._cmd_rollback, when=leading)
        await self.bus.answer(HISTORY, self._cmd_history, when=leading)
        await self.bus.answer(ROLLOUT, self._cmd_rollout, when=leading)
        await self.bus.answer(SECRET_KEY, self._cmd_secret_key, when=leading)
        await self.bus.answer(SECRET_PUT, self._cmd_secret_put, when=leading)
        await self.bus.answer(SECRET_RM, self._cmd_secret_rm, when=leading)
        await self.bus.answer(SECRET_LS, self._cmd_secret_ls, when=leading)
        await self.bus.answer(SECRET_VALUES, self._cmd_secret_values, when=leading)
        self.assignments = await self.bus.view(NODE_ASSIGN)
        self.health = await self.bus.view(HEALTH, on_change=self._on_health)
        self.retained = await follow_keys(self.bus, APPS, self._on_app)
        await self.bus.subscribe(NODE_REPLICAS, self._on_node_replicas)
        await self.leadership.setup()

    async def main(self) -> None:
        # Elect (and resume rollouts) once the retained state is in: a step without the
        # retained health removes nothing but would report every new replica unready.
        while True:
            await self.bus.wait_connected(None)
            if await self.bus.settle(timeout=10):
                break
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.leadership.run(), name="controller-election")
            tasks.create_task(self.rollouts.run(), name="controller-rollouts")

    async def on_shutdown(self) -> None:
        if self.store is not None:
            self.store.step_down()
            self.store.close()

    def _leading(self) -> bool:
        return self.serving and self.is_leader()

    def _active(self) -> Iterable[AppKey]:
        if not self._leading():
            return []
        return [k for k, r in self.apps.items() if r.rollout is not None]

    @property
    def db(self) -> Store:
        if self.store is None or not self.serving:
            raise ShoalError("this controller is not the leader")
        return self.store

    # -- leadership ---------------------------------------------------------------------

    async def _take_over(self) -> None:
        """Elected: a new term in the store (fencing the previous leader), then load it."""
        if self.store is None:
            self.store = open_store(self.location)
        store = self.store
        async with self.lock:
            term = store.take_over(self.instance)
            apps = store.load()
            self.broken = store.keys() - apps.keys()
            now = time.time()
            for key, record in list(apps.items()):
                if record.rollout is not None:
                    # The new leader was not watching until now: a fresh deadline.
                    rollout = record.rollout.model_copy(update={"progress_at": now})
                    apps[key] = AppRecord(record.state, rollout)
            self.apps = apps
            self.unpublished = set(apps)
            self.serving = True
        self.log.info(
            "leading: store taken over",
            term=term,
            apps=len(apps),
            unreadable=len(self.broken),
            store=store.where,
        )
        for key in sorted(self.broken):
            self.log.error("a stored app does not read back: not served", app=str(key))
        self.log.info("admission policy", allows=describe(self.policy))
        for key, record in sorted(apps.items()):
            for line in admission_errors(record.state.spec, self.policy):
                self.log.warning(
                    "a stored app the policy would now refuse", app=str(key), rule=line
                )
        if self._republishing is not None:
            self._republishing.cancel()
        self._republishing = asyncio.create_task(self._republish(), name="controller-republish")
        self.rollouts.mark_all()

    async def _step_down(self) -> None:
        self.serving = False
        if self.store is not None:
            self.store.step_down()
        if self._republishing is not None:
            self._republishing.cancel()
            self._republishing = None
        self.log.warning("standing by: not answering nor writing")

    async def _fenced(self, err: Fenced) -> None:
        self.log.error("fenced by the store: another controller took over", error=str(err))
        self.serving = False
        await self.leadership.resign()

    # -- retained state -----------------------------------------------------------------

    async def _publish(self, state: AppState) -> None:
        key = state.key
        try:
            await self.bus.publish(APPS, state)
        except BusError:
            self.unpublished.add(key)
            raise
        self.unpublished.discard(key)

    async def _republish(self) -> None:
        """Once elected: every app from the store (one that cannot be sent is logged and
        skipped), then clear the retained leftovers this store may clear (``strays``)."""
        try:
            async with self.lock:
                for record in list(self.apps.values()):
                    if not self._leading():
                        return
                    try:
                        await self._publish(record.state)
                    except BusError as err:
                        self.log.warning("republish interrupted", error=str(err))
                        return
                    except Exception as err:
                        self.log.error(
                            "a stored app cannot be published; skipped",
                            app=str(record.key),
                            error=str(err),
                        )
            await self.bus.sync(timeout=10)
            async with self.lock:
                if not self._leading():
                    return
                store = self.db
                seq = store.current_term().seq
                for key in sorted(self.retained.keys() - self._known()):
                    await self._clear_stray(key, self.retained[key], store, seq)
            self.log.info("republished apps", count=len(self.apps))
        except ShoalError as err:
            self.log.warning("republish interrupted", error=str(err))

    def _known(self) -> set[AppKey]:
        return self.apps.keys() | self.broken

    async def _clear_stray(self, key: AppKey, env: Envelope, store: Store, seq: int) -> None:
        if may_clear(key, env, store.store_id, seq):
            self.log.warning("clearing a retained app the store does not hold", app=str(key))
            await self.bus.clear(APPS, key)
        else:
            self.log.warning(
                "a retained app another store wrote is left alone (this store does not hold it)",
                app=str(key),
                src=env.src,
            )

    async def _on_app(self, key: AppKey, env: Envelope) -> None:
        """Our own retained topics come back here. Only the leader writes ``apps/``: a value
        for an app its store does not hold was left by someone else, and is cleared if this
        store may (``strays.may_clear``)."""
        if not self._leading() or key in self._known():
            return
        try:
            store = self.db
            await self._clear_stray(key, env, store, store.current_term().seq)
        except ShoalError as err:
            self.log.warning("stray not cleared", app=str(key), error=str(err))

    def _on_health(self, key: AppKey, health: AppHealth | None) -> None:
        record = self.apps.get(key)
        if record is not None and record.rollout is not None:
            self.rollouts.mark(key)

    def _on_node_replicas(self, node: str, observed: NodeReplicas | None) -> None:
        failing: dict[AppKey, list[ReplicaStatus]] = {}
        for replica in observed.replicas if observed is not None else ():
            if fails_for_good(replica):
                failing.setdefault(AppKey(replica.namespace, replica.app), []).append(replica)
        before = self.failing.pop(node, {})
        if failing:
            self.failing[node] = failing
        # only failures change a rollout's plan (readiness comes from health)
        for key in before.keys() | failing.keys():
            if before.get(key) == failing.get(key):
                continue
            record = self.apps.get(key)
            if record is not None and record.rollout is not None:
                self.rollouts.mark(key)

    def _failing(self, record: AppRecord) -> list[str]:
        key = record.key
        replicas = [r for apps in self.failing.values() for r in apps.get(key, ())]
        return failing_replicas(replicas, record.state.revision)

    # -- commands -----------------------------------------------------------------------

    def _record(self, namespace: str, name: str) -> AppRecord:
        key = AppKey(namespace, name)
        record = self.apps.get(key)
        if record is None:
            raise SpecError([f"app {key} not found"])
        return record

    async def _cmd_apply(self, cmd: ApplyCommand, env: Envelope) -> Reply:
        specs = validate_apps(cmd.apps, cmd.source)
        self.authz.check_all(env, "apply", (spec.namespace for spec in specs))
        source = _source("apply", cmd.source, self.authz.who(env))
        async with self.lock:
            specs = self._pinned(specs)
            # Refused before anything is decided: nothing stored, nothing published.
            check_admission(specs, {k: r.state.spec for k, r in self.apps.items()}, self.policy)
            now = time.time()
            decisions = []
            for spec in specs:
                key = spec.key
                next_revision = self.db.last_revision(key) + 1
                decisions.append(decide_apply(self.apps.get(key), spec, next_revision, now, source))
            if not cmd.dry_run:
                await self._commit(decisions, now)
        return self._reply(decisions)

    async def _cmd_delete(self, cmd: DeleteCommand, env: Envelope) -> Reply:
        self.authz.check(env, "delete", cmd.namespace)
        async with self.lock:
            key = AppKey(cmd.namespace, cmd.name)
            if key in self.broken:
                # a stored app that does not read back can still be deleted
                revision = self.db.last_revision(key)
            else:
                revision = self._record(cmd.namespace, cmd.name).state.revision
            await self._commit([Decision(key, "deleted", None)], time.time())
            result = AppResult(
                namespace=cmd.namespace, name=cmd.name, revision=revision, change="deleted"
            )
        return Reply(ok=True, revision=revision, results=[result])

    async def _cmd_scale(self, cmd: ScaleCommand, env: Envelope) -> Reply:
        self.authz.check(env, "scale", cmd.namespace)
        async with self.lock:
            now = time.time()
            decision = decide_scale(self._record(cmd.namespace, cmd.name), cmd, now)
            await self._commit([decision], now)
        if decision.change != "unchanged":
            why = f" ({cmd.reason})" if cmd.reason else ""
            await self.emit(
                "scale",
                f"{decision.key} scaled to {cmd.replicas} by {cmd.source}{why}"
                f" ({self.authz.who(env)})",
                namespace=cmd.namespace,
                app=cmd.name,
            )
        return self._reply([decision])

    async def _cmd_rollback(self, cmd: RollbackCommand, env: Envelope) -> Reply:
        self.authz.check(env, "rollback", cmd.namespace)
        async with self.lock:
            record = self._record(cmd.namespace, cmd.name)
            key = record.key
            state = record.state
            if cmd.to_revision is None:
                current_hash = state.spec.template_hash()
                earlier = [
                    r
                    for r in self.db.history(key)
                    if r.revision != state.revision and r.template_hash != current_hash
                ]
                if not earlier:
                    raise SpecError([f"app {key} has no earlier revision to return to"])
                row = max(earlier, key=lambda r: r.revision)
            else:
                found = self.db.revision(key, cmd.to_revision)
                if found is None:
                    known = ", ".join(str(r.revision) for r in self.db.history(key))
                    raise SpecError(
                        [f"app {key} has no revision {cmd.to_revision} (known: {known or 'none'})"]
                    )
                row = found
            # An old revision runs with the secrets' current values, and is admitted
            # again: the policy may have changed since.
            try:
                [old_spec] = self._pinned([row.spec])
            except SpecError as err:
                raise SpecError(
                    [f"cannot undo to revision {row.revision}: {line}" for line in err.errors]
                ) from err
            refused = admission_errors(old_spec, self.policy)
            if refused:
                raise SpecError(
                    [f"cannot undo to revision {row.revision}: {line}" for line in refused]
                )
            now = time.time()
            decision = decide_undo(
                record,
                row.revision,
                old_spec,
                self.db.last_revision(key) + 1,
                now,
                self.authz.who(env),
            )
            await self._commit([decision], now)
        return self._reply([decision])

    async def _cmd_rollout(self, cmd: RolloutCommand, env: Envelope) -> Reply:
        self.authz.check(env, "rollout", cmd.namespace)
        async with self.lock:
            record = self._record(cmd.namespace, cmd.name)
            now = time.time()
            if cmd.action == "promote":
                decision = decide_promote(record, now)
            else:
                decision = decide_abort(record, now, self.authz.who(env))
            await self._commit([decision], now)
        await self.emit(
            "rollout",
            f"{decision.key}: {cmd.action} by {self.authz.who(env) or 'a client'}",
            namespace=cmd.namespace,
            app=cmd.name,
        )
        return self._reply([decision])

    async def _cmd_history(self, cmd: HistoryQuery, env: Envelope) -> History:
        self.authz.check(env, "history", cmd.namespace)
        record = self._record(cmd.namespace, cmd.name)
        state = record.state
        rows = self.db.history(record.key)
        revisions = [
            RevisionInfo(
                revision=r.revision,
                created=r.created,
                source=r.source,
                template_hash=r.template_hash,
                image=r.spec.image,
                changes=redact_lines(r.changes),  # also lines stored before values were hidden
                status=r.status,
                current=r.revision == state.revision,
            )
            for r in rows
        ]
        return History(
            namespace=state.namespace,
            name=state.name,
            revision=state.revision,
            phase=state.phase,
            message=state.message,
            revisions=revisions,
        )

    @staticmethod
    def _reply(decisions: list[Decision]) -> Reply:
        results = [
            AppResult(
                namespace=d.key.namespace,
                name=d.key.name,
                revision=d.revision_number,
                change=d.change,
                changes=d.changes,
            )
            for d in decisions
        ]
        return Reply(
            ok=True,
            revision=results[0].revision if len(results) == 1 else None,
            results=results,
        )

    # -- secrets ------------------------------------------------------------------------

    def _box(self) -> SecretBox:
        """The secrets key (made in the data dir on first use unless the operator gave
        one), checked against the store's check value."""
        if self._secret_box is None:
            box = SecretBox(load_key(self.key_path, create=not self.key_given))
            check = self.db.meta(KEY_CHECK)
            if check is not None and not box.opens(check):
                raise SecretKeyError(
                    f"the secrets key {self.key_path} is not the one this store's secrets were "
                    "sealed with: give every controller of the store the same --secrets-key"
                )
            self._secret_box = box
            self._opener = Opener(seed=box.seed())
        return self._secret_box

    def _sealing_key(self) -> Opener:
        self._box()
        assert self._opener is not None
        return self._opener

    async def _cmd_secret_key(self, cmd: SecretKeyQuery, env: Envelope) -> SecretKeyInfo:
        return SecretKeyInfo(public_key=self._sealing_key().public_key)

    def _pinned(self, specs: list[AppSpec]) -> list[AppSpec]:
        """Every spec with its secrets pinned to their current versions; a secret that
        does not exist is an error (nothing is changed)."""
        errors: list[str] = []
        out: list[AppSpec] = []
        versions: dict[str, dict[str, int]] = {}
        for spec in specs:
            if names_used(spec):
                if spec.namespace not in versions:
                    versions[spec.namespace] = self.db.secret_versions(spec.namespace)
                errors += missing_secrets(spec, versions[spec.namespace])
                spec = pin_secrets(spec, versions[spec.namespace])
            out.append(spec)
        if errors:
            raise SpecError(errors)
        return out

    def _users(self, namespace: str, name: str) -> list[AppKey]:
        """Apps whose target or still-running revisions use a secret."""
        specs = [v.spec for r in self.apps.values() for v in r.state.versions]
        specs += [r.state.spec for r in self.apps.values()]
        return apps_using(specs, namespace, name)

    async def _cmd_secret_put(self, cmd: SecretPut, env: Envelope) -> SecretPutResult:
        ns, name = cmd.namespace, cmd.name
        self.authz.check(env, "secret_put", ns)
        try:
            value = self._sealing_key().open(cmd.sender, cmd.sealed, put_label(ns, name))
        except SealError as err:
            raise SpecError(
                [f"secret {ns}/{name}: the value does not open with this controller's key ({err})"]
            ) from err
        if len(value) > MAX_SECRET_BYTES:
            raise SpecError([f"secret {ns}/{name}: a value is at most {MAX_SECRET_BYTES} bytes"])
        async with self.lock:
            box = self._box()
            current = self.db.secret(ns, name)
            if (
                current is not None
                and box.open(current.sealed, row_label(ns, name, current.version)) == value
            ):
                return SecretPutResult(
                    namespace=ns, name=name, version=current.version, change="unchanged"
                )
            now = time.time()
            version = current.version + 1 if current is not None else 1
            row = SecretRow(
                ns,
                name,
                version,
                current.created if current is not None else now,
                now,
                len(value),
                box.seal(value, row_label(ns, name, version)),
            )
            who = self.authz.who(env)
            source = _source("secret", f"{ns}/{name} changed (version {version})", who)
            decisions = []
            for key in apps_using((r.state.spec for r in self.apps.values()), ns, name):
                record = self.apps[key]
                spec = pin_secrets(record.state.spec, {name: version})
                next_revision = self.db.last_revision(key) + 1
                decisions.append(decide_apply(record, spec, next_revision, now, source))

            def write(tx: Transaction) -> None:
                if self.db.meta(KEY_CHECK) is None:
                    tx.set_meta(KEY_CHECK, box.check_value())
                tx.put_secret(row)

            await self._commit(decisions, now, before=write)
        change = "created" if current is None else "updated"
        rolled = self._reply(decisions).results if decisions else []
        names = ", ".join(str(d.key) for d in decisions) or "no app"
        self.log.info("secret stored", secret=f"{ns}/{name}", version=version, rolls=names)
        await self.emit(
            "secret",
            f"secret {ns}/{name} {change} (version {version}); rolling {names}",
            namespace=ns,
        )
        return SecretPutResult(
            namespace=ns, name=name, version=version, change=change, rolled=rolled
        )

    async def _cmd_secret_rm(self, cmd: SecretDelete, env: Envelope) -> Reply:
        ns, name = cmd.namespace, cmd.name
        self.authz.check(env, "secret_rm", ns)
        async with self.lock:
            if self.db.secret(ns, name) is None:
                raise SpecError([f"secret {ns}/{name} not found"])
            users = self._users(ns, name)
            if users:
                raise SpecError(
                    [
                        f"secret {ns}/{name} is used by {', '.join(map(str, users))}: "
                        "remove it from their specs first"
                    ]
                )
            await self._commit([], time.time(), before=lambda tx: tx.delete_secret(ns, name))
        await self.emit("secret", f"secret {ns}/{name} deleted", namespace=ns)
        return Reply(ok=True)

    async def _cmd_secret_ls(self, cmd: SecretQuery, env: Envelope) -> SecretList:
        if cmd.namespace is not None:
            self.authz.check(env, "secret_ls", cmd.namespace)
        return SecretList(
            secrets=[
                SecretInfo(
                    namespace=row.namespace,
                    name=row.name,
                    version=row.version,
                    created=row.created,
                    updated=row.updated,
                    size=row.size,
                    used_by=[str(k) for k in self._users(row.namespace, row.name)],
                )
                for row in self.db.secrets(cmd.namespace)
                if self.authz.allows(env, "secret_ls", row.namespace)
            ]
        )

    async def _cmd_secret_values(self, cmd: SecretValuesRequest, env: Envelope) -> SecretValues:
        """Only the versions the node's retained assignment pins (a balancer: the route
        certificates and keys the apps pin), sealed to the requester's key; only to that
        node's agent (that balancer) when authorisation is on."""
        self.authz.check_secret_values(env, cmd.role, cmd.node)
        if cmd.role == "balancer":
            allowed = route_wanted(r.state.spec for r in self.apps.values())
            who = f"no route of balancer {cmd.node}'s apps uses"
        else:
            assignment = self.assignments.get(cmd.node)
            allowed = wanted(assignment.specs.values()) if assignment is not None else set()
            who = f"node {cmd.node} runs no replica using"
        refused = [
            f"{who} secret {w.namespace}/{w.name} version {w.version}"
            for w in cmd.wants
            if (w.namespace, w.name, w.version) not in allowed
        ]
        if refused:
            raise SpecError(refused)
        try:
            sealer = Sealer(cmd.public_key)
        except SealError as err:
            raise SpecError([f"secret_values: {err}"]) from err
        box = self._box()
        values = []
        for w in cmd.wants:
            row = self.db.secret(w.namespace, w.name, w.version)
            if row is None:
                raise SpecError(
                    [f"secret {w.namespace}/{w.name} version {w.version} is no longer kept"]
                )
            value = box.open(row.sealed, row_label(w.namespace, w.name, w.version))
            values.append(
                SealedValue(
                    namespace=w.namespace,
                    name=w.name,
                    version=w.version,
                    sealed=sealer.seal(value, label(w.namespace, w.name, w.version)),
                )
            )
        self.log.info(
            "secret values sealed for a node",
            node=cmd.node,
            secrets=sorted(f"{w.namespace}/{w.name}@{w.version}" for w in cmd.wants),
        )
        return SecretValues(public_key=sealer.public_key, values=values)

    # -- writing ------------------------------------------------------------------------

    async def _commit(
        self,
        decisions: list[Decision],
        now: float,
        before: Callable[[Transaction], None] | None = None,
    ) -> None:
        """Persist every decision in one transaction (after ``before``'s writes, such as a
        secret's new version), then publish. Caller holds the lock."""
        for decision in decisions:
            if decision.record is not None:
                check_encodable(decision.record.state)
        changed: dict[AppKey, AppRecord | None] = {}
        notes: list[tuple[AppKey, Note]] = []
        started = time.perf_counter()
        try:
            with self.db.transaction() as tx:
                if before is not None:
                    before(tx)
                self._write(tx, decisions, now, changed, notes)
        except Fenced as err:
            await self._fenced(err)
            raise
        finally:
            self.prom.commits.observe(time.perf_counter() - started)
        for key, maybe in changed.items():
            if maybe is None:
                self.apps.pop(key, None)
                self.broken.discard(key)
                self.unpublished.discard(key)
            else:
                self.apps[key] = maybe
                self.broken.discard(key)
                if maybe.rollout is not None:
                    self.rollouts.mark(key)
        for key, maybe in changed.items():
            try:
                if maybe is None:
                    await self.bus.clear(APPS, key)
                else:
                    await self._publish(maybe.state)
            except BusError as err:
                self.log.warning("state not published yet", app=str(key), error=str(err))
            except Exception as err:
                self.unpublished.add(key)
                self.log.error("state cannot be published", app=str(key), error=str(err))
        for key, note in notes:
            await self._note(key, note)

    def _write(
        self,
        tx: Transaction,
        decisions: list[Decision],
        now: float,
        changed: dict[AppKey, AppRecord | None],
        notes: list[tuple[AppKey, Note]],
    ) -> None:
        for decision in decisions:
            key = decision.key
            if decision.change == "unchanged" and decision.record == self.apps.get(key):
                continue
            if decision.record is None:
                tx.delete(key)
                changed[key] = None
                continue
            record = decision.record
            if decision.revision is not None:
                number = tx.allocate_revision(key)
                if number != decision.revision.revision:
                    raise ShoalError(f"revision counter of {key} moved under the controller")
                new = decision.revision
                tx.add_revision(
                    key,
                    new.revision,
                    new.created,
                    new.source,
                    new.spec,
                    new.changes,
                    record.state.revision,
                )
            if record.rollout is not None:
                plan = plan_rollout(
                    record.state,
                    record.rollout,
                    self.health.get(key),
                    now,
                    self._failing(record),
                )
                record = AppRecord(plan.state, plan.rollout)
                notes.extend((key, n) for n in plan.events)
                if plan.failed_revision is not None:
                    tx.set_status(key, plan.failed_revision, f"failed: {plan.failed_reason}")
            changed[key] = tx.put(record)

    async def _note(self, key: AppKey, note: Note) -> None:
        log = self.log.warning if note.severity != "info" else self.log.info
        log(note.message, app=str(key), kind=note.kind)
        await self.emit(
            note.kind, note.message, namespace=key.namespace, app=key.name, severity=note.severity
        )

    # -- rollouts -----------------------------------------------------------------------

    async def _step(self, key: AppKey) -> float | None:
        """One rollout step of ``key`` (the Reconciler's callback)."""
        async with self.lock:
            record = self.apps.get(key)
            if record is None or record.rollout is None or not self._leading():
                return None
            plan = plan_rollout(
                record.state,
                record.rollout,
                self.health.get(key),
                time.time(),
                self._failing(record),
            )
            new = AppRecord(plan.state, plan.rollout)
            if new != record:
                try:
                    with self.db.transaction() as tx:
                        new = tx.put(new)
                        if plan.failed_revision is not None:
                            tx.set_status(
                                key, plan.failed_revision, f"failed: {plan.failed_reason}"
                            )
                except Fenced as err:
                    await self._fenced(err)
                    return None
                self.apps[key] = new
            if plan.changed or key in self.unpublished:
                await self._publish(new.state)
        for note in plan.events:
            await self._note(key, note)
        return plan.requeue
