"""Rolling updates, canaries and automatic rollback, as one pure step function.

The controller keeps, per app, the retained ``AppState`` (what every other service reads)
and a private ``Rollout`` record (bookkeeping persisted with it). While a rollout is
active, every health change, every change in the failing replicas a node reports
(``fails_for_good``) and the moment the progress deadline can expire (``next_plan_in``)
call::

    plan_rollout(state, rollout, health, now) -> RolloutPlan

which returns the next ``AppState`` (per-revision replica counts in ``versions``, phase,
message), the next ``Rollout`` (``None`` once done) and the events to publish. Like the
Kubernetes Deployment controller it only changes *counts*; the scheduler places them and
the agents start and stop containers.

One step, with ``D`` desired replicas, ``surge = update.max_surge`` and
``unavailable = update.max_unavailable``:

1. **Failure.** If the target revision has fewer ready replicas than it needs and none
   became ready for ``update.progress_deadline`` seconds, or one of its replicas is
   crash-looping (``failing``: restarted ``CRASH_RESTARTS`` times, or its image cannot be
   pulled), the rollout has failed: with ``auto_rollback`` the app turns back to the last
   good revision (``rolling_back``, then ``rolled_back``); without it the phase is
   ``failed`` and the steps go on (should the replicas recover, the rollout completes).
2. **Canary** (``update.canary: N`` until promoted): the new revision gets N replicas and a
   traffic ``weight`` equal to its share of replicas; old revisions keep theirs (at most
   ``D`` in total). Once the N are ready the phase is ``paused`` until ``promote`` or
   ``abort``.
3. **Scale up** the target revision, never above ``D + surge`` replicas in total.
4. **Scale down** old revisions, oldest first, as long as the replicas counted ready stay
   at least ``D - unavailable``. A removal is charged pessimistically (the scheduler may
   pick a ready replica), except that a revision with no ready replica is removed freely.
   Then scale the target up again into the room the removals made. Without any health
   report for the app nothing is removed.
5. **Done** when the target has ``D`` replicas, ``D`` ready, and no old replica is left:
   old versions are dropped and the phase is ``stable`` (or ``rolled_back``).

Readiness comes from the health monitor's ``AppHealth``: a replica counts when it is
``ready`` and not ``terminating``, and never more than its version's desired count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, ValidationError

from core.spec import TEMPLATE_FIELDS, AppSpec, Model
from core.state import AppHealth, AppPhase, AppState, AppVersion, ReplicaStatus

#: An active rollout is planned again after every health change, and without any: when
#: its progress deadline can expire (at least ``TICK`` from now, at most ``IDLE_TICK``).
TICK = 1.0
IDLE_TICK = 5.0
#: Restarts after which a replica of a new revision counts as crash-looping.
CRASH_RESTARTS = 3


class Rollout(Model):
    """The controller's private bookkeeping of an active rollout (persisted, not published)."""

    from_revision: int = Field(ge=1, description="the last good revision")
    started: float = 0.0
    progress_at: float = 0.0
    best_ready: int = 0
    canary: bool = False
    rollback_of: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class Note:
    """An event the step wants published (``events/<kind>``)."""

    kind: Literal["rollout", "rollback"]
    message: str
    severity: Literal["info", "warning", "error"] = "info"


@dataclass(frozen=True)
class RolloutPlan:
    state: AppState
    rollout: Rollout | None
    events: tuple[Note, ...] = ()
    #: a revision that just failed (for the history), with why
    failed_revision: int | None = None
    failed_reason: str = ""
    #: the published state changed (generation bumped)
    changed: bool = False
    #: plan again after this many seconds (None: the rollout is over)
    requeue: float | None = None


# -- helpers ---------------------------------------------------------------------------


def with_template(base: AppSpec, template: AppSpec) -> AppSpec:
    """``base`` (replicas, route, placement, update...) with ``template``'s container fields.

    Used to go back to an old revision while keeping today's non-template settings. If the
    mix is not valid (e.g. the route names a port the old template lacks), the old
    revision's spec is used as a whole.
    """
    data = base.model_dump(mode="json")
    old = template.model_dump(mode="json")
    for name in TEMPLATE_FIELDS:
        data[name] = old[name]
    try:
        return AppSpec.model_validate(data)
    except ValidationError:
        return template


def ready_counts(health: AppHealth | None) -> dict[int, int]:
    """Ready (and not terminating) replicas per revision."""
    counts: dict[int, int] = {}
    if health is None:
        return counts
    for replica in health.replicas:
        if replica.ready and not replica.terminating:
            counts[replica.revision] = counts.get(replica.revision, 0) + 1
    return counts


def evolve(state: AppState, now: float, **changes: object) -> AppState:
    """A new generation of ``state`` with ``changes``."""
    return state.model_copy(update={**changes, "generation": state.generation + 1, "updated": now})


def split_weights(total: int, shares: list[int]) -> list[int]:
    """Split ``total`` percent proportionally to ``shares`` (largest remainder)."""
    whole = sum(shares)
    if whole <= 0:
        return [0 for _ in shares]
    raw = [total * s / whole for s in shares]
    out = [int(r) for r in raw]
    order = sorted(range(len(shares)), key=lambda i: raw[i] - out[i], reverse=True)
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def begin_rollback(state: AppState, rollout: Rollout, now: float, reason: str) -> AppState | None:
    """Turn the app back to ``rollout.from_revision``; None if that version is gone."""
    good = next((v for v in state.versions if v.revision == rollout.from_revision), None)
    if good is None or good.revision == state.revision:
        return None
    spec = with_template(state.spec, good.spec)
    versions = [v.model_copy(update={"weight": None}) for v in state.versions]
    return evolve(
        state,
        now,
        revision=good.revision,
        spec=spec,
        versions=versions,
        phase="rolling_back",
        message=reason,
    )


# -- the step --------------------------------------------------------------------------


def fails_for_good(replica: ReplicaStatus) -> bool:
    """A crash loop (``CRASH_RESTARTS`` restarts) or an image that cannot be pulled."""
    return replica.phase == "image_pull_failed" or replica.restarts >= CRASH_RESTARTS


def failing_replicas(replicas: Iterable[ReplicaStatus], revision: int) -> list[str]:
    """Why replicas of ``revision`` are failing for good (crash loop, image not pullable)."""
    out = []
    for r in sorted(replicas, key=lambda r: r.id):
        if r.revision != revision or not fails_for_good(r):
            continue
        if r.phase == "image_pull_failed":
            out.append(f"replica {r.id}: {r.reason or 'image pull failed'}")
        elif r.restarts >= CRASH_RESTARTS:
            exit_code = f", last exit code {r.exit_code}" if r.exit_code is not None else ""
            out.append(f"replica {r.id} restarted {r.restarts} times{exit_code}")
    return out


def plan_rollout(
    state: AppState,
    rollout: Rollout | None,
    health: AppHealth | None,
    now: float,
    failing: Sequence[str] = (),
) -> RolloutPlan:
    """One step of the rollout of ``state`` (see the module docstring).

    ``failing`` lists replicas of the target revision that fail for good (see
    ``failing_replicas``); any makes the rollout fail at once.
    """
    if rollout is None:
        return RolloutPlan(state, None)
    start_state = state
    events: list[Note] = []
    failed_revision: int | None = None
    failed_reason = ""
    ready = ready_counts(health)
    key = state.key
    update = state.spec.update

    if rollout.canary and update.canary is None:
        rollout = rollout.model_copy(update={"canary": False})  # canary removed from the spec

    def target_of(s: AppState) -> AppVersion:
        found = next((v for v in s.versions if v.revision == s.revision), None)
        return found or AppVersion(revision=s.revision, spec=s.spec, replicas=0)

    def wanted(s: AppState, r: Rollout) -> int:
        if r.canary and s.spec.update.canary is not None:
            return min(s.spec.update.canary, max(s.replicas, 1))
        return s.replicas

    target = target_of(state)
    need = wanted(state, rollout)
    new_ready = min(ready.get(target.revision, 0), need)
    if new_ready > rollout.best_ready:
        rollout = rollout.model_copy(update={"best_ready": new_ready, "progress_at": now})

    # 1. failure: crash loop or the progress deadline
    stuck = False
    why = ""
    if failing and new_ready < need:
        more = f" (and {len(failing) - 1} more)" if len(failing) > 1 else ""
        why = f"revision {state.revision} is failing: {failing[0]}{more}"
    elif new_ready < need and now - rollout.progress_at > update.progress_deadline:
        why = (
            f"revision {state.revision} had {new_ready}/{need} replicas ready "
            f"after {update.progress_deadline:g}s"
        )
    if why:
        rolled = None
        if update.auto_rollback and rollout.rollback_of is None:
            reason = f"rolled back to revision {rollout.from_revision}: {why}"
            rolled = begin_rollback(state, rollout, now, reason)
        if rolled is not None:
            failed_revision, failed_reason = state.revision, why
            events.append(Note("rollback", f"{key}: {reason}", "warning"))
            rollout = Rollout(
                from_revision=rolled.revision,
                started=now,
                progress_at=now,
                best_ready=0,
                canary=False,
                rollback_of=state.revision,
                reason=reason,
            )
            state = rolled
            target = target_of(state)
        else:
            stuck = True
            if start_state.phase != "failed":
                hint = (
                    "auto_rollback is off"
                    if not update.auto_rollback
                    else "no earlier good revision to return to"
                )
                events.append(Note("rollout", f"{key}: rollout stuck: {why} ({hint})", "error"))

    desired = state.replicas
    olds = [v for v in state.versions if v.revision != target.revision]

    # 2. canary: N new replicas beside the old ones, weighted by their share of replicas
    if rollout.canary and state.spec.update.canary is not None:
        n = wanted(state, rollout)
        excess = sum(v.replicas for v in olds) - desired  # desired lowered with the canary
        trimmed = []
        for v in sorted(olds, key=lambda v: v.revision):
            cut = min(v.replicas, max(0, excess))
            excess -= cut
            trimmed.append(v.model_copy(update={"replicas": v.replicas - cut}))
        olds = trimmed
        old_total = sum(v.replicas for v in olds)
        if old_total == 0:
            versions = [target.model_copy(update={"replicas": desired, "weight": None})]
            rollout = rollout.model_copy(update={"canary": False})
        else:
            new_weight = round(100 * n / (n + old_total))
            old_weights = split_weights(100 - new_weight, [v.replicas for v in olds])
            versions = [
                v.model_copy(update={"weight": w}) for v, w in zip(olds, old_weights, strict=True)
            ]
            versions.append(target.model_copy(update={"replicas": n, "weight": new_weight}))
            ready_now = min(ready.get(target.revision, 0), n)
            if stuck:
                phase: AppPhase = "failed"
                message = (
                    f"canary stuck: {ready_now}/{n} replicas of revision {target.revision} ready"
                )
            elif ready_now >= n:
                phase = "paused"
                message = (
                    f"canary: {n} replica(s) of revision {target.revision} take {new_weight}% "
                    "of traffic; promote or abort"
                )
            else:
                phase = "progressing"
                message = f"canary: {ready_now}/{n} replica(s) of revision {target.revision} ready"
            return _finish(
                start_state,
                state,
                rollout,
                versions,
                phase,
                message,
                events,
                failed_revision,
                failed_reason,
                now,
            )

    # 3. scale the target up, within desired + surge in total
    surge, unavailable = update.max_surge, update.max_unavailable
    counts = {v.revision: v.replicas for v in olds}
    new_count = target.replicas
    total = new_count + sum(counts.values())
    if new_count < desired:
        up = min(desired - new_count, desired + surge - total)
        if up > 0:
            new_count += up
    elif new_count > desired:
        new_count = desired

    # 4. scale old revisions down while enough replicas stay ready
    new_ready = min(ready.get(target.revision, 0), new_count)
    old_ready = {r: min(ready.get(r, 0), c) for r, c in counts.items()}
    budget = new_ready + sum(old_ready.values()) - (desired - unavailable)
    for revision in sorted(counts):
        count = counts[revision]
        if count == 0 or health is None:  # no readiness known yet: remove nothing
            continue
        cost = old_ready[revision]  # removing them all may cost every ready one
        if cost == 0 or cost <= budget:
            counts[revision] = 0
            budget -= cost
        elif budget > 0:
            counts[revision] = count - budget
            budget = 0

    # ... and up again into the room the removals made (unready, so availability holds)
    total = new_count + sum(counts.values())
    if new_count < desired:
        new_count += max(0, min(desired - new_count, desired + surge - total))

    old_left = sum(counts.values())
    done = new_count == desired and new_ready >= desired and old_left == 0
    if done:
        versions = [target.model_copy(update={"replicas": desired, "weight": None})]
        if rollout.rollback_of is not None:
            phase, message = "rolled_back", rollout.reason
            events.append(Note("rollback", f"{key}: back on revision {target.revision}", "warning"))
        else:
            phase, message = "stable", f"revision {target.revision} rolled out"
            events.append(Note("rollout", f"{key}: revision {target.revision} rolled out"))
        return _finish(
            start_state,
            state,
            None,
            versions,
            phase,
            message,
            events,
            failed_revision,
            failed_reason,
            now,
        )

    versions = [v.model_copy(update={"replicas": counts[v.revision], "weight": None}) for v in olds]
    versions.append(target.model_copy(update={"replicas": new_count, "weight": None}))
    progress = (
        f"{new_ready}/{desired} replica(s) of revision {target.revision} ready, "
        f"{old_left} old replica(s) left"
    )
    if stuck:
        phase, message = "failed", f"rollout stuck: {progress}"
    elif rollout.rollback_of is not None:
        phase, message = "rolling_back", f"{rollout.reason} ({progress})"
    else:
        phase, message = "progressing", f"rolling out revision {target.revision}: {progress}"
    if versions != start_state.versions:
        events.append(Note("rollout", f"{key}: {progress}"))
    return _finish(
        start_state,
        state,
        rollout,
        versions,
        phase,
        message,
        events,
        failed_revision,
        failed_reason,
        now,
    )


def _finish(
    start_state: AppState,
    state: AppState,
    rollout: Rollout | None,
    versions: list[AppVersion],
    phase: AppPhase,
    message: str,
    events: list[Note],
    failed_revision: int | None,
    failed_reason: str,
    now: float,
) -> RolloutPlan:
    visible = (state.revision, state.spec, versions, phase, message)
    before = (
        start_state.revision,
        start_state.spec,
        start_state.versions,
        start_state.phase,
        start_state.message,
    )
    changed = visible != before
    if changed:
        state = state.model_copy(
            update={
                "versions": versions,
                "phase": phase,
                "message": message,
                "generation": start_state.generation + 1,
                "updated": now,
            }
        )
    else:
        state = start_state
    return RolloutPlan(
        state=state,
        rollout=rollout,
        events=tuple(events),
        failed_revision=failed_revision,
        failed_reason=failed_reason,
        changed=changed,
        requeue=None if rollout is None else next_plan_in(state, rollout, now),
    )


def next_plan_in(state: AppState, rollout: Rollout, now: float) -> float:
    """Seconds until the rollout must be planned again if nothing changes meanwhile: when
    its progress deadline expires (health changes plan it sooner)."""
    expiry = rollout.progress_at + state.spec.update.progress_deadline - now
    return min(IDLE_TICK, max(TICK, expiry + 0.01))
