"""The ``check_answer`` activity: the answer check (agents/claims.py) where its verdict is recorded.

The check is pure, so the workflow could run it in place; as a (local) activity its verdict goes into the
run's history, and a later release that refines the check replays runs recorded before it as they ran.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from stakeflow.agents.claims import AnswerCheck, AnswerCheckRequest, check_answer
from stakeflow.core.contracts import CHECK_ANSWER, QueueRole


class AnswerCheckActivities:
    """Holds ``check_answer``: a local activity of the workflows queue (it needs nothing but its input)."""

    def activities(self, role: QueueRole) -> list[Callable[..., Any]]:
        return [self.check_answer] if role == "workflows" else []

    @activity.defn(name=CHECK_ANSWER)
    async def check_answer(self, req: AnswerCheckRequest) -> AnswerCheck:
        """Whether every figure, quotation and name of ``req.answer`` appears in the goal or an observation, and
        whether it reports what the tools returned (agents/claims.py)."""
        return check_answer(
            req.answer,
            goal=req.goal,
            observations=req.observations,
            workspace_paths=req.workspace_paths,
            failed_calls=req.failed_calls,
            reached=req.reached,
        )
