"""``shoal rebalance``'s output."""

from __future__ import annotations

from core.commands import RebalanceMove, RebalancePlan
from services.cli.rebalance import render_plan


def test_the_cli_renders_a_rebalance_plan() -> None:
    move = RebalanceMove(
        replica="default.web.1",
        namespace="default",
        app="web",
        source="n1",
        target="n2",
        reason="n1 80% allocated -> n2 0%",
    )
    text = render_plan(RebalancePlan(dry_run=True, moves=[move], message="1 moves planned"))
    assert text.splitlines() == [
        "default.web.1  default/web  n1 -> n2  (n1 80% allocated -> n2 0%)",
        "1 moves planned (dry run: nothing moved)",
    ]
    assert (
        render_plan(RebalancePlan(message="the nodes are balanced")) == "the nodes are balanced\n"
    )
