"""``decide``: table-driven, the time passed in."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.provisioner.decide import (
    Drain,
    GiveUp,
    History,
    Hold,
    Joining,
    Limits,
    Load,
    NodeUse,
    Pending,
    Provision,
    Remove,
    Size,
    choose_size,
    decide,
    helpable,
    holds,
)

GI = 1024**3
MI = 1024**2
SMALL = Size("small", 1.0, 1 * GI, 0.05)
LARGE = Size("large", 4.0, 8 * GI, 0.30)
SIZES = [SMALL, LARGE]
LIMITS = Limits(min_nodes=1, max_nodes=4, budget=1.0, up_cooldown=10, down_cooldown=60, low_for=30)


def pend(count: int, cpu: float = 0.25, memory: int = 256 * MI, **kw: object) -> Pending:
    return Pending(app="default/web", count=count, cpu=cpu, memory=memory, **kw)  # type: ignore[arg-type]


def load(cpu: float = 0.25, memory: int = 256 * MI, app: str = "default/web") -> Load:
    return Load(app=app, cpu=cpu, memory=memory)


def node(
    id: str, *loads: Load, owned: bool = False, cpu: float = 1.0, memory: int = GI, **kw: object
) -> NodeUse:
    return NodeUse(id=id, cpu=cpu, memory=memory, loads=loads, owned=owned, **kw)  # type: ignore[arg-type]


FULL = node("static", load(), load(), load(), load())


def kinds(actions: list[object]) -> list[str]:
    return [a.kind for a in actions]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "pending", "nodes", "joining", "limits", "history", "now", "expect"),
    [
        ("nothing pending, nothing owned", [], [FULL], [], LIMITS, History(), 100, []),
        ("pending fits a small node", [pend(2)], [FULL], [], LIMITS, History(), 100, ["provision"]),
        (
            "wait for the joining node",
            [pend(2)],
            [FULL],
            [Joining("auto-1", "small", 0.05, 95)],
            LIMITS,
            History(),
            100,
            [],
        ),
        (
            "a node that never joins is given up",
            [pend(2)],
            [FULL],
            [Joining("auto-1", "small", 0.05, 0)],
            replace(LIMITS, join_timeout=50),
            History(),
            100,
            ["give_up", "provision"],
        ),
        (
            "at the maximum",
            [pend(2)],
            [FULL, node("a", owned=True), node("b", owned=True), node("c", owned=True)],
            [],
            LIMITS,
            History(),
            100,
            ["hold"],
        ),
        ("in the up cooldown", [pend(2)], [FULL], [], LIMITS, History(last_up=95), 100, []),
        (
            "after the up cooldown",
            [pend(2)],
            [FULL],
            [],
            LIMITS,
            History(last_up=89),
            100,
            ["provision"],
        ),
        (
            "over the budget",
            [pend(2)],
            [FULL],
            [],
            replace(LIMITS, budget=0.01),
            History(),
            100,
            ["hold"],
        ),
        (
            "a constraint no new node meets",
            [pend(2, constraints=(("zone", ("b",)),))],
            [FULL],
            [],
            LIMITS,
            History(),
            100,
            [],
        ),
        (
            "a constraint the node labels meet",
            [pend(2, constraints=(("zone", ("b",)),))],
            [FULL],
            [],
            replace(LIMITS, labels=(("zone", "b"),)),
            History(),
            100,
            ["provision"],
        ),
        (
            "a replica larger than every size",
            [pend(1, cpu=8.0)],
            [FULL],
            [],
            LIMITS,
            History(),
            100,
            [],
        ),
        (
            "a drained empty node is removed",
            [],
            [FULL, node("auto-1", owned=True, draining=True, cordoned=True)],
            [],
            LIMITS,
            History(last_up=99),
            100,
            ["remove"],
        ),
        (
            "empty but not for long enough",
            [],
            [FULL, node("auto-1", owned=True)],
            [],
            LIMITS,
            History(low_since=(("auto-1", 80),)),
            100,
            [],
        ),
        (
            "drained but its agent still stops a container",
            [],
            [FULL, node("auto-1", owned=True, draining=True, cordoned=True, running=1)],
            [],
            LIMITS,
            History(last_up=99),
            100,
            [],
        ),
        (
            "empty long enough: drained",
            [],
            [FULL, node("auto-1", owned=True)],
            [],
            LIMITS,
            History(low_since=(("auto-1", 60),)),
            100,
            ["drain"],
        ),
        (
            "empty, but in the down cooldown",
            [],
            [FULL, node("auto-1", owned=True)],
            [],
            LIMITS,
            History(last_up=50, low_since=(("auto-1", 0),)),
            100,
            [],
        ),
        (
            "never below the minimum",
            [],
            [node("auto-1", owned=True)],
            [],
            LIMITS,
            History(low_since=(("auto-1", 0),)),
            100,
            [],
        ),
        (
            "a node not ours is never drained",
            [],
            [FULL, node("other")],
            [],
            LIMITS,
            History(low_since=(("other", 0),)),
            100,
            [],
        ),
        (
            "under-used, its replica fits elsewhere",
            [],
            [node("static", load()), node("auto-1", load(), owned=True)],
            [],
            LIMITS,
            History(low_since=(("auto-1", 0),)),
            100,
            ["drain"],
        ),
        (
            "under-used but no room elsewhere",
            [],
            [FULL, node("auto-1", load(), owned=True)],
            [],
            LIMITS,
            History(low_since=(("auto-1", 0),)),
            100,
            [],
        ),
        (
            "under-used, consolidation off",
            [],
            [node("static", load()), node("auto-1", load(), owned=True)],
            [],
            replace(LIMITS, consolidate=False),
            History(low_since=(("auto-1", 0),)),
            100,
            [],
        ),
        (
            "nothing removed while demand is pending",
            [pend(1, cpu=8.0), pend(2)],
            [FULL, node("auto-1", owned=True)],
            [],
            replace(LIMITS, max_nodes=2),
            History(low_since=(("auto-1", 0),)),
            100,
            ["hold"],
        ),
        (
            "one drain at a time",
            [],
            [
                FULL,
                node("auto-1", owned=True),
                node("auto-2", load(), owned=True, draining=True, cordoned=True),
            ],
            [],
            LIMITS,
            History(low_since=(("auto-1", 0),)),
            100,
            [],
        ),
    ],
)
def test_decide(
    name: str,
    pending: list[Pending],
    nodes: list[NodeUse],
    joining: list[Joining],
    limits: Limits,
    history: History,
    now: float,
    expect: list[str],
) -> None:
    plan = decide(pending, nodes, joining, SIZES, limits, history, now)
    assert kinds(plan.actions) == expect, name
    for action in plan.actions:
        assert action.reason


def test_the_cheapest_size_that_holds_everything() -> None:
    assert choose_size(SIZES, [pend(3)], None) == (SMALL, "")
    assert choose_size(SIZES, [pend(6)], None) == (LARGE, "")
    # nothing holds 40: the one holding most
    assert choose_size(SIZES, [pend(40)], None) == (LARGE, "")
    # the budget leaves only the small one
    assert choose_size(SIZES, [pend(6)], 0.1) == (SMALL, "")
    size, why = choose_size(SIZES, [pend(6)], 0.01)
    assert size is None
    assert "budget" in why


def test_holds_respects_max_per_node_and_memory() -> None:
    assert holds(SMALL, [pend(10)]) == 4  # 1 cpu / 0.25
    assert holds(SMALL, [pend(10, max_per_node=2)]) == 2
    assert holds(SMALL, [pend(10, cpu=0.1, memory=512 * MI)]) == 2


def test_provision_reason_says_what_and_why() -> None:
    plan = decide(
        [pend(2, reason="0/1 nodes fit: 1 insufficient cpu")],
        [FULL],
        [],
        SIZES,
        LIMITS,
        History(),
        100,
    )
    (action,) = plan.actions
    assert isinstance(action, Provision)
    assert action.size == SMALL
    assert "2 of default/web" in action.reason
    assert "insufficient cpu" in action.reason
    assert plan.history.last_up == 100


def test_budget_counts_owned_and_joining_nodes() -> None:
    owned = [
        node(f"auto-{i}", load(), load(), load(), load(), owned=True, price=0.3) for i in range(3)
    ]
    plan = decide(
        [pend(2)], [FULL, *owned], [], SIZES, replace(LIMITS, max_nodes=10), History(), 100
    )
    assert kinds(plan.actions) == ["provision"]  # 0.9 spent, small (0.05) fits the 1.0 budget
    plan = decide(
        [pend(6)], [FULL, *owned], [], [LARGE], replace(LIMITS, max_nodes=10), History(), 100
    )
    (hold,) = plan.actions
    assert isinstance(hold, Hold)
    assert "budget" in hold.reason


def test_low_since_is_kept_and_forgotten() -> None:
    nodes = [FULL, node("auto-1", owned=True)]
    plan = decide([], nodes, [], SIZES, LIMITS, History(), 10)
    assert plan.history.low_since == (("auto-1", 10),)
    plan = decide([], nodes, [], SIZES, LIMITS, plan.history, 20)
    assert plan.history.low_since == (("auto-1", 10),)  # kept from the first time
    busy = [FULL, node("auto-1", load(), load(), load(), owned=True)]
    plan = decide([], busy, [], SIZES, LIMITS, plan.history, 30)
    assert plan.history.low_since == ()
    plan = decide([], nodes, [], SIZES, LIMITS, plan.history, 40)
    (drain_none,) = [plan.history.low_since]
    assert drain_none == (("auto-1", 40),)  # the clock starts again


def test_scale_down_picks_the_emptiest_then_the_dearest() -> None:
    nodes = [
        FULL,
        node("auto-a", load(), owned=True, price=0.5),
        node("auto-b", owned=True, price=0.1),
        node("auto-c", owned=True, price=0.3),
    ]
    history = History(low_since=(("auto-a", 0), ("auto-b", 0), ("auto-c", 0)))
    (action,) = decide([], nodes, [], SIZES, LIMITS, history, 100).actions
    assert isinstance(action, Drain)
    assert action.node == "auto-c"


def test_remove_and_give_up_name_the_node() -> None:
    drained = node("auto-1", owned=True, draining=True, cordoned=True)
    (remove,) = decide([], [FULL, drained], [], SIZES, LIMITS, History(), 100).actions
    assert isinstance(remove, Remove)
    assert remove.node == "auto-1"
    late = Joining("auto-2", "small", 0.05, 0)
    actions = decide(
        [], [FULL], [late], SIZES, replace(LIMITS, join_timeout=10), History(), 100
    ).actions
    assert isinstance(actions[0], GiveUp)
    assert actions[0].node == "auto-2"


def test_helpable_keeps_only_what_a_new_node_could_take() -> None:
    wanted = [pend(1), pend(1, cpu=5.0), pend(1, constraints=(("gpu", ("yes",)),)), pend(0)]
    assert helpable(wanted, SIZES, LIMITS) == [pend(1)]


def test_rebalance_after_a_node_joined_when_allowed() -> None:
    limits = replace(LIMITS, rebalance=True, rebalance_after=5)
    before = [FULL]
    after = [FULL, node("auto-1", owned=True)]
    plan = decide([], before, [], SIZES, limits, History(), 0)  # the first pass: a baseline
    assert plan.history.ready_nodes == ("static",)
    plan = decide([], after, [], SIZES, limits, plan.history, 10)
    assert plan.actions == []
    assert plan.history.rebalance_at == 15
    plan = decide([], after, [], SIZES, limits, plan.history, 14)
    assert plan.actions == []
    plan = decide([], after, [], SIZES, limits, plan.history, 15)
    assert kinds(plan.actions) == ["rebalance"]
    assert "auto-1 joined" in plan.actions[0].reason
    assert plan.history.rebalance_at is None
    # not allowed: never
    plan = decide([], before, [], SIZES, LIMITS, History(), 0)
    plan = decide([], after, [], SIZES, LIMITS, plan.history, 10)
    assert plan.history.rebalance_at is None


def test_rebalance_waits_for_pending_demand() -> None:
    limits = replace(LIMITS, rebalance=True, rebalance_after=0)
    history = History(ready_nodes=("static",))
    plan = decide([pend(2)], [FULL, node("auto-1", owned=True)], [], SIZES, limits, history, 10)
    assert kinds(plan.actions) == ["provision"]
    assert plan.history.rebalance_at == 10  # kept for later
