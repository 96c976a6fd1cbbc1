"""One asset's graph as data: seven stages in order, each consuming the one before."""

from __future__ import annotations

from cluster.graph import plan_asset

STAGES = ["scan", "validate", "hash", "resize", "convert", "compress", "record"]


def test_plan_has_the_seven_stages_in_order():
    assert [call.stage for call in plan_asset("asset-1", 1, "batch-a")] == STAGES


def test_each_stage_consumes_the_previous_key():
    plan = plan_asset("asset-1", 1, "batch-a")
    assert plan[0].after is None
    assert [call.after for call in plan[1:]] == [call.key for call in plan[:-1]]


def test_keys_are_unique_per_asset_attempt_and_batch():
    plans = [plan_asset(asset, attempt, batch)
             for asset in ("asset-1", "asset-2")
             for attempt in (1, 2)
             for batch in ("batch-a", "batch-b")]
    keys = [call.key for plan in plans for call in plan]
    assert len(keys) == len(set(keys)) == 8 * 7


def test_planning_is_deterministic():
    assert plan_asset("asset-1", 3, "batch-a") == plan_asset("asset-1", 3, "batch-a")
