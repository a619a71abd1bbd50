"""What a run has done, counted one way for every place that shows it.

The run span (and so the trace store's ``runs`` view), the search attributes (the Web UI, `stakeflow list`)
and the answer's stakes all ask here. A step counts once it ran to an outcome (ok, tool error, failed);
one that is pending, running, waiting for approval, or was skipped (rejected, timed out) never acted, so
it does not count — a run cancelled while a high-stakes step waits is a low-stakes run with that step
uncounted, everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from stakeflow.agents.types import Stakes, StepRecord

DONE_STATUSES = ("ok", "tool_error", "failed")


def executed(steps: list[StepRecord]) -> list[StepRecord]:
    """The steps that ran to an outcome."""
    return [s for s in steps if s.status in DONE_STATUSES]


@dataclass(frozen=True)
class RunTally:
    step_count: int
    open_steps: int
    frontier_steps: int
    escalations: int
    stakes: Stakes  # high once any executed step was high


def tally(steps: list[StepRecord]) -> RunTally:
    done = executed(steps)
    return RunTally(
        step_count=len(steps),
        open_steps=sum(1 for s in done if s.route == "open"),
        frontier_steps=sum(1 for s in done if s.route == "frontier"),
        escalations=sum(1 for s in done if s.escalated),
        stakes="high" if any(s.stakes == "high" for s in done) else "low",
    )
