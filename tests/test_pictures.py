"""The text pictures of the fleet table: sparklines and meters."""

from __future__ import annotations

from lifsea_tui.tui.pictures import meter, spark


def test_spark_scales_to_the_largest_or_to_the_top_given() -> None:
    assert spark([0, 1, 2, 4], 8) == "▁▃▅█"
    assert spark([0, 1, 2, 4], 8, top=8) == "▁▂▃▅"  # load drawn against the node's CPUs
    assert spark([5, 6, 7], 2) == spark([6, 7], 8)  # the newest values, oldest on the left
    assert spark([], 6) == "" and spark([0, 0], 6) == "▁▁"


def test_meter_fills_to_an_eighth_of_a_cell_and_clamps() -> None:
    assert meter(0.5, 4) == "██··"
    assert meter(0.95, 4) == "███▊"
    assert meter(1.7, 3) == "███" and meter(-1, 3) == "···"
