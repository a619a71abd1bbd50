"""ReplayEvalWorkflow: held-out examples re-asked of candidate open models, each answer judged against the reference.

`stakeflow evals replay --model NAME` starts it: the test split of the dataset (captured calls with a frontier or
approved reference) is read page by page by an activity on the workflows worker (the trace store is local to
it), each example is sent to every model being compared (the candidate — another model or a LoRA adapter by its
served name — and the current open model), and each answer is scored against the reference the way a shadow
evaluation scores it (exact for step actions, a two-order judge otherwise). Resumable (a worker restart loses
nothing), with a ``progress`` query, visible in the Web UI, at a configurable concurrency.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from stakeflow.agents.evals import (
        AGREEING,
        EvalPolicy,
        ReplayExample,
        ReplayModelReport,
        ReplayPage,
        ReplayPageRequest,
        ReplayProgress,
        ReplayRequest,
        ShadowRequest,
    )
    from stakeflow.agents.types import ModelCallResult, ModelEndpoint
    from stakeflow.core import errors
    from stakeflow.core.contracts import CALL_MODEL, LOAD_REPLAY_EXAMPLES, PROGRESS_QUERY, REPLAY_WORKFLOW
    from stakeflow.workflows.shadow import Judging

PAGE = 20


@workflow.defn(name=REPLAY_WORKFLOW)
class ReplayEvalWorkflow(Judging):
    def __init__(self) -> None:
        self._progress = ReplayProgress()

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> ReplayProgress:
        return self._progress

    @workflow.run
    async def run(self, req: ReplayRequest) -> list[ReplayModelReport]:
        self._progress.models = [ReplayModelReport(model=m.model, base_url=m.base_url) for m in req.models]
        offset = 0
        while self._progress.done < req.limit:
            page = await workflow.execute_activity(
                LOAD_REPLAY_EXAMPLES,
                ReplayPageRequest(filters=req.filters, offset=offset, limit=min(PAGE, req.limit - self._progress.done)),
                result_type=ReplayPage,
                task_queue=req.workflows_queue,
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=RetryPolicy(maximum_attempts=5),
            )
            if not page.examples:
                break
            self._progress.total = max(self._progress.total, offset + len(page.examples) + (1 if page.more else 0))
            for start in range(0, len(page.examples), req.concurrency):
                batch = page.examples[start : start + req.concurrency]
                await asyncio.gather(*(self._one(req, ex) for ex in batch))
            offset += len(page.examples)
            if not page.more:
                break
        self._progress.finished = True
        return self._progress.models

    async def _one(self, req: ReplayRequest, example: ReplayExample) -> None:
        for n, model in enumerate(req.models):
            report = self._progress.models[n]
            call = example.call.model_copy(
                update={
                    "run_id": workflow.info().workflow_id,
                    "endpoint": model,
                    "source": "replay",
                    "capture": False,
                }
            )
            try:
                answer = await workflow.execute_activity(
                    CALL_MODEL,
                    call,
                    result_type=ModelCallResult,
                    task_queue=req.open_queue,
                    start_to_close_timeout=timedelta(minutes=5),
                    heartbeat_timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(
                        maximum_attempts=3,
                        non_retryable_error_types=errors.NON_RETRYABLE_MODEL_ERRORS,
                    ),
                    summary=f"replay · {example.call.purpose} · {model.model}",
                )
            except ActivityError as e:
                report.n += 1
                report.errors += 1
                report.last_error = str(getattr(e.cause, "message", e.cause))[:300]
                continue
            shadowish = ShadowRequest(
                eval_id=example.example_id,
                step=example.call.step,
                kind=example.call.purpose,
                goal=example.goal,
                call=example.call,
                open_result=answer,
                frontier=req.judge,
                frontier_queue=req.frontier_queue,
                policy=EvalPolicy(judge_model=req.judge.model),
                parent_workflow_id=workflow.info().workflow_id,
            )
            verdict, _, _, judge_cost = await self._compare(shadowish, example.reference)
            report.n += 1
            report.agreeing += int(verdict in AGREEING)
            report.cost_usd += answer.cost.usd or 0.0
            report.judge_cost_usd += judge_cost or 0.0
            report.latencies_ms.append(round(answer.latency_ms, 1))
        self._progress.done += 1


__all__ = ["ReplayEvalWorkflow", "ModelEndpoint"]
