"""The server-wide budget of output held for peers (``transports.output_budget``)."""

from __future__ import annotations

from sealchat.transports.output_budget import OutputBudget


def test_the_sum_follows_what_each_peer_holds() -> None:
    budget: OutputBudget[str] = OutputBudget(1000)
    assert budget.update("a", 300) == []
    assert budget.update("b", 200) == []
    assert budget.update("a", 100) == []  # written: less held
    assert budget.total == 300
    budget.forget("b")
    assert budget.total == 100
    assert budget.update("a", 0) == []
    assert budget.total == 0


def test_the_peer_whose_output_crosses_the_limit_need_not_be_the_one_dropped() -> None:
    budget: OutputBudget[str] = OutputBudget(800)
    budget.update("slow", 400)
    budget.update("slower", 300)
    budget.update("quick", 50)
    assert budget.update("quick", 150) == ["slow"]  # 850 > 800: down to 450 ≤ 700
    assert budget.total == 450


def test_as_many_go_as_it_takes_largest_first() -> None:
    budget: OutputBudget[int] = OutputBudget(800)
    for peer in range(8):
        budget.update(peer, 100)  # 800: at the limit, not past it
    assert budget.update(8, 200) == [8, 0]  # 1000 → 800 → 700: seven eighths
    assert budget.total == 700


def test_less_held_never_drops_anyone() -> None:
    budget: OutputBudget[str] = OutputBudget(100)
    budget.update("a", 100)
    budget.limit = 50  # (only so that the sum is past the limit already)
    assert budget.update("a", 90) == []


def test_a_dropped_peer_counts_no_more_until_it_is_forgotten() -> None:
    budget: OutputBudget[str] = OutputBudget(100)
    assert budget.update("a", 200) == ["a"]
    assert budget.total == 0
    assert budget.update("a", 300) == []  # its writer still reports on its way out
    assert budget.total == 0
    budget.forget("a")
    assert budget.update("a", 50) == []  # a new peer may reuse what named it
    assert budget.total == 50
