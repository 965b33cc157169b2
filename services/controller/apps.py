"""What a command does to one app: pure decisions over the current record.

Every function takes the app's current ``AppRecord`` (its retained ``AppState`` and the
private ``Rollout`` bookkeeping), the command's data and ``now``, and returns a
``Decision``: the change (``created``/``updated``/``scaled``/``unchanged``/``deleted``),
the new record, the revision to add to the history (if any) and a field-level diff.
A refusal raises ``SpecError`` with one line per problem.

Revision rules:

- an app's revision changes only when ``AppSpec.template_hash()`` changes (image, command,
  env, resources, ports, health, termination, labels); anything else - replicas, route,
  placement, update policy, autoscale - updates the state in place (new ``generation``);
- revision numbers are handed out by the store, per app, increasing and never reused, even
  after an undo (undo to revision 2 makes revision N+1 with revision 2's template) or a
  delete and re-create;
- with ``autoscale`` set, the replica count belongs to the autoscaler: ``apply`` keeps the
  current count clamped into ``[min, max]`` (the spec's ``replicas`` is only the initial
  count), and a ``scale`` outside ``[min, max]`` is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.commands import AppChange, ScaleCommand
from core.errors import SpecError
from core.keys import AppKey
from core.spec import AppSpec
from core.state import AppState, AppVersion
from services.controller.diff import diff_specs, template_changed
from services.controller.rollout import Rollout, begin_rollback, with_template


@dataclass(frozen=True)
class AppRecord:
    """What the controller persists per app."""

    state: AppState
    rollout: Rollout | None = None

    @property
    def key(self) -> AppKey:
        return AppKey(self.state.namespace, self.state.name)


@dataclass(frozen=True)
class NewRevision:
    """A row for the revision history."""

    revision: int
    created: float
    source: str
    spec: AppSpec
    changes: list[str]


@dataclass(frozen=True)
class Decision:
    key: AppKey
    change: AppChange
    record: AppRecord | None
    revision: NewRevision | None = None
    changes: list[str] = field(default_factory=list)

    @property
    def revision_number(self) -> int:
        if self.record is not None:
            return self.record.state.revision
        return self.revision.revision if self.revision is not None else 0


def effective_replicas(spec: AppSpec, current: int | None) -> int:
    """The replica count an apply leads to (see the module docstring on autoscale)."""
    scale = spec.autoscale
    if scale is None:
        return spec.replicas
    base = spec.replicas if current is None else current
    return max(scale.min, min(scale.max, base))


def _with_replicas(spec: AppSpec, replicas: int) -> AppSpec:
    return spec if spec.replicas == replicas else spec.model_copy(update={"replicas": replicas})


def start_rollout(
    record: AppRecord,
    spec: AppSpec,
    revision: int,
    now: float,
    reason: str,
    *,
    canary: bool,
) -> AppRecord:
    """Make ``revision`` (with ``spec``) the target; old versions keep their counts."""
    state, previous = record.state, record.rollout
    good = previous.from_revision if previous is not None else state.revision
    versions = [
        v.model_copy(update={"weight": None, "spec": with_template(spec, v.spec)})
        for v in state.versions
        if v.replicas > 0 or v.revision == good
    ]
    versions.append(AppVersion(revision=revision, spec=spec, replicas=0))
    new_state = state.model_copy(
        update={
            "revision": revision,
            "generation": state.generation + 1,
            "spec": spec,
            "replicas": spec.replicas,
            "versions": versions,
            "phase": "progressing",
            "message": f"rolling out revision {revision} ({reason})",
            "updated": now,
        }
    )
    rollout = Rollout(
        from_revision=good,
        started=now,
        progress_at=now,
        best_ready=0,
        canary=canary and spec.update.canary is not None,
        rollback_of=None,
        reason=reason,
    )
    return AppRecord(new_state, rollout)


def decide_apply(
    current: AppRecord | None, spec: AppSpec, next_revision: int, now: float, source: str
) -> Decision:
    """Create or update one app from a validated spec."""
    key = spec.key
    spec = _with_replicas(
        spec, effective_replicas(spec, current.state.replicas if current else None)
    )
    if current is None:
        state = AppState(
            namespace=spec.namespace,
            name=spec.name,
            revision=next_revision,
            generation=1,
            spec=spec,
            replicas=spec.replicas,
            versions=[AppVersion(revision=next_revision, spec=spec, replicas=spec.replicas)],
            phase="stable",
            message="",
            updated=now,
        )
        changes = ["created"]
        return Decision(
            key,
            "created",
            AppRecord(state, None),
            NewRevision(next_revision, now, source, spec, changes),
            changes,
        )

    old = _with_replicas(current.state.spec, current.state.replicas)
    changes = diff_specs(old, spec)
    if not changes:
        state = current.state
        if state.phase == "rolled_back" and current.rollout is None:
            # Applying the revision the app was rolled back to acknowledges the rollback.
            settled = state.model_copy(
                update={
                    "phase": "stable",
                    "message": "",
                    "generation": state.generation + 1,
                    "updated": now,
                }
            )
            return Decision(key, "unchanged", AppRecord(settled, None))
        return Decision(key, "unchanged", current)
    if template_changed(old, spec):
        record = start_rollout(
            current, spec, next_revision, now, source or "apply", canary=current.state.replicas > 0
        )
        return Decision(
            key,
            "updated",
            record,
            NewRevision(next_revision, now, source, spec, changes),
            changes,
        )
    only_replicas = all(line.startswith("replicas:") for line in changes)
    return Decision(
        key,
        "scaled" if only_replicas else "updated",
        AppRecord(_update_in_place(current, spec, now), current.rollout),
        None,
        changes,
    )


def _update_in_place(record: AppRecord, spec: AppSpec, now: float) -> AppState:
    """Same template: new settings for every version; counts follow unless rolling out."""
    state = record.state
    versions: list[AppVersion] = []
    for version in state.versions:
        if version.revision == state.revision:
            update: dict[str, object] = {"spec": spec}
            if record.rollout is None:
                update["replicas"] = spec.replicas
            versions.append(version.model_copy(update=update))
        else:
            versions.append(version.model_copy(update={"spec": with_template(spec, version.spec)}))
    if not any(v.revision == state.revision for v in versions):
        versions.append(AppVersion(revision=state.revision, spec=spec, replicas=spec.replicas))
    return state.model_copy(
        update={
            "generation": state.generation + 1,
            "spec": spec,
            "replicas": spec.replicas,
            "versions": versions,
            "updated": now,
        }
    )


def decide_scale(current: AppRecord, command: ScaleCommand, now: float) -> Decision:
    state = current.state
    key = current.key
    scale = state.spec.autoscale
    if command.source == "autoscaler" and scale is None:
        raise SpecError([f"app {key} has no autoscale; the autoscaler may not scale it"])
    if scale is not None and not scale.min <= command.replicas <= scale.max:
        raise SpecError(
            [
                f"app {key} autoscales between {scale.min} and {scale.max} replicas: "
                f"cannot scale to {command.replicas} (change autoscale in the spec)"
            ]
        )
    if command.replicas == state.replicas:
        return Decision(key, "unchanged", current)
    spec = _with_replicas(state.spec, command.replicas)
    changes = [f"replicas: {state.replicas} -> {command.replicas}"]
    return Decision(
        key,
        "scaled",
        AppRecord(_update_in_place(current, spec, now), current.rollout),
        None,
        changes,
    )


def decide_undo(
    current: AppRecord,
    to_revision: int,
    old_spec: AppSpec,
    next_revision: int,
    now: float,
    source: str,
) -> Decision:
    """Roll the app to ``to_revision``'s template as a new revision ``next_revision``."""
    state = current.state
    spec = with_template(_with_replicas(state.spec, state.replicas), old_spec)
    spec = _with_replicas(spec, state.replicas)
    if not template_changed(state.spec, spec):
        return Decision(current.key, "unchanged", current)
    changes = diff_specs(state.spec, spec)
    reason = f"undo to revision {to_revision}"
    record = start_rollout(current, spec, next_revision, now, reason, canary=False)
    return Decision(
        current.key,
        "updated",
        record,
        NewRevision(
            next_revision, now, f"{reason}{' by ' + source if source else ''}", spec, changes
        ),
        changes,
    )


def decide_promote(current: AppRecord, now: float) -> Decision:
    rollout = current.rollout
    state = current.state
    if rollout is None or not rollout.canary:
        raise SpecError([f"app {current.key} has no canary to promote"])
    new_rollout = rollout.model_copy(update={"canary": False, "progress_at": now})
    new_state = state.model_copy(
        update={
            "generation": state.generation + 1,
            "versions": [v.model_copy(update={"weight": None}) for v in state.versions],
            "phase": "progressing",
            "message": f"canary promoted: rolling out revision {state.revision}",
            "updated": now,
        }
    )
    return Decision(current.key, "updated", AppRecord(new_state, new_rollout))


def decide_abort(current: AppRecord, now: float, who: str = "") -> Decision:
    rollout = current.rollout
    state = current.state
    key = current.key
    if rollout is None or rollout.rollback_of is not None:
        raise SpecError([f"app {key} has no rollout in progress to abort"])
    what = "canary" if rollout.canary else "rollout"
    reason = f"{what} of revision {state.revision} aborted{' by ' + who if who else ''}"
    reason = f"rolled back to revision {rollout.from_revision}: {reason}"
    rolled = begin_rollback(state, rollout, now, reason)
    if rolled is None:
        raise SpecError([f"app {key}: revision {rollout.from_revision} is no longer available"])
    new_rollout = Rollout(
        from_revision=rolled.revision,
        started=now,
        progress_at=now,
        best_ready=0,
        canary=False,
        rollback_of=state.revision,
        reason=reason,
    )
    return Decision(current.key, "updated", AppRecord(rolled, new_rollout))
