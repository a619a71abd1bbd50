"""The plan is a living checklist: after a step that did not get what it needed, the model revises the steps that
remain (add, drop, reorder) with what the run has seen, within ``max_steps``.

A mixin of AgentTaskWorkflow. The file the plan expected does not exist, the first query shows the data is
elsewhere: the plan changes course instead of marching on. A revision is one model call ("replan", routed like
the plan) whose output replaces the pending steps; the checklist in the Web UI, the progress query and
``status`` follow. A step that went well needs no revision, so a run whose steps work costs no extra call. A
revision that cannot be had (the model fails) keeps the plan as it was, and a run revises at most
``MAX_REPLANS`` times (a small model that cannot do a step tends to plan the same step again). Runs of earlier
releases carry ``RoutingConfig.replan = False``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from stakeflow.agents import prompts
    from stakeflow.agents.policy import decide_route
    from stakeflow.agents.types import ModelCallRequest, PlannedStep, StepRecord
    from stakeflow.workflows.failures import StepFailure
    from stakeflow.workflows.model_steps import ModelSteps
    from stakeflow.workflows.run_tools import RunTools

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager

MAX_REPLANS = 2  # revisions per run (each is a model call, and the steps it adds may fail too)


class Replanning(ModelSteps, RunTools):
    """Revising the remaining steps after one that failed."""

    _step_span: Callable[[int, str], AbstractAsyncContextManager[None]]  # the workflow's
    _show_checklist: Callable[[], None]

    async def _revised(self, index: int, steps: list[PlannedStep]) -> list[PlannedStep]:
        """The plan after step ``index``: revised if that step failed and there is room, else as it was."""
        req = self._req
        record = self._progress.steps[index - 1]
        room = req.max_steps - index
        if not req.routing.replan or record.status != "tool_error" or room <= 0:
            return steps
        if self._progress.replans >= MAX_REPLANS:  # a plan revised twice and failing again will not be saved by a third
            return steps
        tools = self._tool_views(self._allowed)
        call = ModelCallRequest(
            purpose="replan",
            step=index,
            system=prompts.with_role(req.instructions, prompts.REPLAN_SYSTEM),
            prompt=prompts.replan_prompt(
                req.goal,
                tools,
                self._progress.steps[:index],
                [s.title for s in steps[index:]],
                room,
                req.workspace_files,
            ),
            tools=tools,
            max_steps=room,
        )
        decision = decide_route(self._facts(None, "low"), req.routing, req.queue_prefix)
        try:
            async with self._step_span(index, "replan"):
                reply, decision = await self._call_model(
                    call, decision, StepRecord(index=index, title="replan"), label=f"replan after step {index}"
                )
                self._mark(decision)
        except StepFailure as e:
            self._progress.notices.append(f"plan not revised after step {index}: {e}")
            return steps
        new = (reply.plan.steps if reply.plan else [])[:room]
        self._progress.steps[index:] = [
            StepRecord(index=index + n, title=s.title, tools=[s.tool] if s.tool else []) for n, s in enumerate(new, 1)
        ]
        self._progress.total_steps = len(self._progress.steps)
        self._progress.replans += 1
        self._progress.notices.append(
            f"plan revised after step {index}: {len(new)} step(s) remain"
            + (f" ({', '.join(s.title for s in new)})" if new else "")
        )
        self._show_checklist()
        return [*steps[:index], *new]
