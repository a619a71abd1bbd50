"""StakesPolicy is a pure function: tested with no network and no Temporal."""

import pytest

from stakeflow.agents.policy import StepFacts, assess_stakes, decide_route, escalate
from stakeflow.agents.types import ModelEndpoint, RoutingConfig


def routing(frontier: bool = True, **kw) -> RoutingConfig:
    return RoutingConfig(
        open=ModelEndpoint(route="open", model="qwen-7b", provider="openai-compatible"),
        frontier=ModelEndpoint(route="frontier", model="claude-x", provider="anthropic", available=frontier),
        **kw,
    )


def test_low_stakes_read_only_tool_goes_to_open_model():
    d = decide_route(StepFacts(tool="read_file", tool_risk="read_only"), routing(), "sf")
    assert (d.route, d.model, d.task_queue, d.stakes) == ("open", "qwen-7b", "sf-open", "low")
    assert d.reason == "tool read_file is read-only; planner assessed low stakes"


def test_side_effect_tool_makes_the_step_high_and_goes_to_frontier():
    d = decide_route(StepFacts(tool="write_file", tool_risk="side_effect"), routing(), "sf")
    assert (d.route, d.model, d.task_queue, d.stakes) == ("frontier", "claude-x", "sf-frontier", "high")
    assert d.reason == "tool write_file has side effects"
    assert not d.needs_approval and not d.downgraded


def test_irreversible_tool_reason():
    stakes, why = assess_stakes(StepFacts(tool="drop_table", tool_risk="irreversible"), routing())
    assert (stakes, why) == ("high", "tool drop_table is irreversible")


def test_planner_high_goes_to_frontier():
    d = decide_route(StepFacts(planner_stakes="high"), routing(), "sf")
    assert (d.route, d.reason) == ("frontier", "planner assessed high stakes")


@pytest.mark.parametrize("override,route", [("low", "open"), ("high", "frontier")])
def test_user_override_wins_over_tool_risk_and_planner(override, route):
    d = decide_route(
        StepFacts(tool="write_file", tool_risk="side_effect", planner_stakes="high", override=override), routing(), "sf"
    )
    assert d.route == route
    assert d.reason == f"user override --stakes {override}"


def test_private_high_stays_on_open_model_and_needs_approval():
    d = decide_route(StepFacts(tool="write_file", tool_risk="side_effect", sensitivity="private"), routing(), "sf")
    assert (d.route, d.stakes, d.needs_approval) == ("open", "high", True)
    assert "private" in d.reason


def test_private_never_goes_to_frontier_even_with_user_override_high():
    d = decide_route(StepFacts(override="high", sensitivity="private"), routing(), "sf")
    assert d.route == "open"


def test_frontier_missing_downgrades_visibly():
    d = decide_route(StepFacts(planner_stakes="high"), routing(frontier=False), "sf")
    assert (d.route, d.downgraded) == ("open", True)
    assert "ANTHROPIC_API_KEY unset" in d.reason


def test_frontier_missing_with_downgrade_off_still_routes_to_frontier():
    # The frontier worker then fails the step, naming ANTHROPIC_API_KEY.
    d = decide_route(
        StepFacts(planner_stakes="high"), routing(frontier=False, downgrade_when_frontier_missing=False), "sf"
    )
    assert d.route == "frontier"


def test_configured_high_risk_levels_are_respected():
    d = decide_route(StepFacts(tool="write_file", tool_risk="side_effect"), routing(high_risk=["irreversible"]), "sf")
    assert (d.route, d.stakes) == ("open", "low")


def test_escalation_when_allowed():
    current = decide_route(StepFacts(tool="read_file", tool_risk="read_only"), routing(), "sf")
    d, why = escalate(current, "public", routing(), 2, "sf")
    assert d is not None
    assert (d.route, d.escalated, d.task_queue) == ("frontier", True, "sf-frontier")
    assert why == "escalated: open output failed validation twice"
    assert d.reason.endswith(why)


@pytest.mark.parametrize(
    "sensitivity,cfg,expected",
    [
        ("private", routing(), "data is private and never leaves the open model"),
        ("public", routing(frontier=False), "frontier not configured (ANTHROPIC_API_KEY unset)"),
        ("public", routing(escalate_on_invalid=False), "escalation is off ([policy] escalate_on_invalid = false)"),
    ],
)
def test_no_escalation_and_why(sensitivity, cfg, expected):
    current = decide_route(StepFacts(), cfg, "sf")
    d, why = escalate(current, sensitivity, cfg, 2, "sf")
    assert d is None and why == expected


def test_fallback_when_open_endpoint_is_unavailable():
    from stakeflow.agents.policy import fallback

    current = decide_route(StepFacts(), routing(), "sf")
    d, why = fallback(current, "public", routing(), "sf")
    assert d is not None and (d.route, d.fallback, d.escalated) == ("frontier", True, False)
    assert why == "fallback: open model endpoint unavailable"
    assert fallback(current, "private", routing(), "sf") == (None, "data is private and never leaves the open model")
    assert fallback(current, "public", routing(fallback_on_unavailable=False), "sf")[0] is None
    assert (
        fallback(current, "public", routing(frontier=False), "sf")[1]
        == "frontier not configured (ANTHROPIC_API_KEY unset)"
    )
