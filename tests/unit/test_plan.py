"""One asset's graph as data: seven stages in order, each consuming the one before; an
index-only recipe's four, with no render stage."""

from __future__ import annotations

from cluster.graph import RENDER_STAGES, plan_asset, stages_for
from pipelines.recipe import DEFAULT_RECIPE, INDEX_RECIPE, Recipe

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


def test_a_rendering_recipe_plans_all_seven_stages():
    assert [call.stage for call in plan_asset("a", 1, "b", stages_for(DEFAULT_RECIPE))] == STAGES


def test_an_index_only_graph_has_no_render_stages():
    # Bulk partitions run the same stages_for list (cluster.bulk.run_partition).
    for recipe in (INDEX_RECIPE, Recipe("catalogue", ())):
        plan = plan_asset("asset-1", 1, "batch-a", stages_for(recipe))
        assert [call.stage for call in plan] == ["scan", "validate", "hash", "record"]
        assert not set(RENDER_STAGES) & {call.stage for call in plan}
        assert [call.after for call in plan[1:]] == [call.key for call in plan[:-1]]
