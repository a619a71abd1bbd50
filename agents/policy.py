"""StakesPolicy: where a model call goes, and why.

A pure function of the step, the tool's declared risk, the planner's assessment, the user's
override, the run's sensitivity and what is configured. No network, no Temporal: the
workflow calls it, and so can a test or a person reading a plan.

The rules, in order:
1. Stakes: the user's override wins; else a tool whose risk is configured as high-risk makes
   the step high; else the planner's assessment.
2. Private data never goes to the frontier: private + high stays on the open model and is
   flagged for human approval.
3. High stakes go to the frontier when it is configured; when it is not, the step runs on the
   open model and the downgrade is recorded (and printed), never silent.
4. Low stakes go to the open model — unless the measured agreement of the open path for this kind of
   step is too low (shadow evaluation, ``[policy] min_agreement``): then the frontier, the figure cited.
"""

from __future__ import annotations

from dataclasses import dataclass

from stakeflow.agents.types import Risk, RouteDecision, RoutingConfig, Sensitivity, Stakes, StakesOverride
from stakeflow.core.contracts import queue_name


@dataclass(frozen=True)
class StepFacts:
    """What the policy looks at for one model call."""

    tool: str | None = None
    tool_risk: Risk | None = None
    planner_stakes: Stakes = "low"
    override: StakesOverride = "auto"
    sensitivity: Sensitivity = "public"
    # Measured agreement of the open path for this kind of step (agents/evals.routing_by_agreement):
    # whether it calls for the frontier, and the figure that says so.
    agreement_low: bool = False
    agreement: str = ""


def assess_stakes(facts: StepFacts, routing: RoutingConfig) -> tuple[Stakes, str]:
    """The step's stakes and the reason for them."""
    if facts.override != "auto":
        return facts.override, f"user override --stakes {facts.override}"
    if facts.tool and facts.tool_risk in routing.high_risk:
        kind = "is irreversible" if facts.tool_risk == "irreversible" else "has side effects"
        return "high", f"tool {facts.tool} {kind}"
    if facts.planner_stakes == "high":
        return "high", "planner assessed high stakes"
    if facts.tool:
        return "low", f"tool {facts.tool} is read-only; planner assessed low stakes"
    return "low", "planner assessed low stakes"


def decide_route(facts: StepFacts, routing: RoutingConfig, queue_prefix: str = "stakeflow") -> RouteDecision:
    """StakesPolicy: route one model call to the open model or the frontier."""
    stakes, why = assess_stakes(facts, routing)
    if stakes == "low":
        if not facts.agreement:
            return _open(routing, queue_prefix, stakes, why)
        if not facts.agreement_low:
            return _open(routing, queue_prefix, stakes, f"{why}; {facts.agreement}")
        if facts.sensitivity == "private":  # sensitivity wins over any figure
            return _open(routing, queue_prefix, stakes, f"{why}; {facts.agreement}, but the data is private")
        if not routing.frontier.available:
            return _open(routing, queue_prefix, stakes, f"{why}; {facts.agreement}, but the frontier is not configured")
        return _frontier(routing, queue_prefix, stakes, f"{why}; {facts.agreement}")
    if facts.sensitivity == "private":
        return _open(
            routing,
            queue_prefix,
            stakes,
            f"{why}; data is private, so it stays on the open model (needs approval)",
            needs_approval=True,
        )
    if not routing.frontier.available and routing.downgrade_when_frontier_missing:
        return _open(
            routing,
            queue_prefix,
            stakes,
            f"{why}; frontier not configured (ANTHROPIC_API_KEY unset), so downgraded to the open model",
            downgraded=True,
        )
    return _frontier(routing, queue_prefix, stakes, why)


def escalate(
    current: RouteDecision, sensitivity: Sensitivity, routing: RoutingConfig, failures: int, queue_prefix: str
) -> tuple[RouteDecision | None, str]:
    """After the open model's output failed validation: the frontier route, or None and why not."""
    why_not = _why_not_escalate(current, sensitivity, routing, routing.escalate_on_invalid, "escalate_on_invalid")
    if why_not:
        return None, why_not
    return _escalated(current, routing, queue_prefix, f"escalated: open output failed validation {_times(failures)}")


def escalate_stuck(
    current: RouteDecision, sensitivity: Sensitivity, routing: RoutingConfig, stuck: str, queue_prefix: str
) -> tuple[RouteDecision | None, str]:
    """After a step on the open model ended its rounds without the result it needed (``stuck`` says how, e.g.
    "3 failed sql_query calls"): the frontier route for a re-run of the step, or None and why not."""
    why_not = _why_not_escalate(current, sensitivity, routing, routing.escalate_when_stuck, "escalate_when_stuck")
    if why_not:
        return None, why_not
    return _escalated(current, routing, queue_prefix, f"escalated: open model stuck after {stuck}")


def escalate_unsupported(
    current: RouteDecision, sensitivity: Sensitivity, routing: RoutingConfig, claims: list[str], queue_prefix: str
) -> tuple[RouteDecision | None, str]:
    """After an answer, asked twice, still gave figures nothing the run observed holds: the frontier route for
    one more answer, or None and why not. Follows ``escalate_when_stuck``: the open model could not do it."""
    why_not = _why_not_escalate(current, sensitivity, routing, routing.escalate_when_stuck, "escalate_when_stuck")
    if why_not:
        return None, why_not
    shown = ", ".join(claims[:3]) + (f" and {len(claims) - 3} more" if len(claims) > 3 else "")
    return _escalated(
        current, routing, queue_prefix, f"escalated: answer not supported by what the run observed ({shown})"
    )


def _why_not_escalate(
    current: RouteDecision, sensitivity: Sensitivity, routing: RoutingConfig, enabled: bool, setting: str
) -> str:
    if current.route != "open":
        return "already on the frontier"
    if not enabled:
        return f"escalation is off ([policy] {setting} = false)"
    if sensitivity == "private":
        return "data is private and never leaves the open model"
    if not routing.frontier.available:
        return "frontier not configured (ANTHROPIC_API_KEY unset)"
    return ""


def _escalated(
    current: RouteDecision, routing: RoutingConfig, queue_prefix: str, reason: str
) -> tuple[RouteDecision, str]:
    decision = _frontier(routing, queue_prefix, current.stakes, f"{current.reason}; {reason}")
    return decision.model_copy(update={"escalated": True}), reason


def fallback(
    current: RouteDecision, sensitivity: Sensitivity, routing: RoutingConfig, queue_prefix: str
) -> tuple[RouteDecision | None, str]:
    """After the open endpoint stayed unavailable through its retries: the frontier route, or None and why not."""
    if current.route != "open":
        return None, "already on the frontier"
    if not routing.fallback_on_unavailable:
        return None, "fallback is off ([policy] fallback_on_unavailable = false)"
    if sensitivity == "private":
        return None, "data is private and never leaves the open model"
    if not routing.frontier.available:
        return None, "frontier not configured (ANTHROPIC_API_KEY unset)"
    reason = "fallback: open model endpoint unavailable"
    decision = _frontier(routing, queue_prefix, current.stakes, f"{current.reason}; {reason}")
    return decision.model_copy(update={"fallback": True}), reason


def downgrade_for_budget(current: RouteDecision, why: str, routing: RoutingConfig, queue_prefix: str) -> RouteDecision:
    """A frontier call a spent budget refused, on the open model instead: ``...; downgraded: <why>``."""
    return _open(routing, queue_prefix, current.stakes, f"{current.reason}; downgraded: {why}", downgraded=True)


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _open(routing: RoutingConfig, prefix: str, stakes: Stakes, reason: str, **flags: bool) -> RouteDecision:
    return RouteDecision(
        route="open",
        model=routing.open.model,
        task_queue=queue_name("open", prefix),
        stakes=stakes,
        reason=reason,
        **flags,
    )


def _frontier(routing: RoutingConfig, prefix: str, stakes: Stakes, reason: str) -> RouteDecision:
    return RouteDecision(
        route="frontier",
        model=routing.frontier.model,
        task_queue=queue_name("frontier", prefix),
        stakes=stakes,
        reason=reason,
    )
