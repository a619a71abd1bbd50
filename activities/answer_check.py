"""The ``check_answer`` activity: the answer check (agents/claims.py) where its verdict is recorded.

The check is pure, so the workflow could run it in place; as a (local) activity its verdict goes into the
run's history, and a later release that refines the check replays runs recorded before it as they ran.
"""

from __future__ import annotations

from temporalio import activity

from stakeflow.agents.claims import AnswerCheck, AnswerCheckRequest, check_answer
from stakeflow.core.contracts import CHECK_ANSWER


@activity.defn(name=CHECK_ANSWER)
async def check_answer_activity(req: AnswerCheckRequest) -> AnswerCheck:
    """Whether every figure and quotation of ``req.answer`` appears in the goal or an observation."""
    return check_answer(req.answer, goal=req.goal, observations=req.observations)
