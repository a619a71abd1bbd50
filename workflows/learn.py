"""LearnWorkflow: export the agent's dataset, train a LoRA adapter, load it into vLLM, judge it, promote it — or not.

`stakeflow learn --agent NAME` starts it. Each stage is an activity where it belongs: the export on the workflows
worker (the trace store is there), the trainer on a `stakeflow-train` worker (where the GPU is), the adapter's
load and unload on the open worker (next to vLLM), the judgement as a child ReplayEvalWorkflow. The adapter is
promoted — the agent's open model becomes it, in a promotion record that `run --agent` reads — only if it
agrees with the reference at least ``margin`` more often than the current open model; otherwise it is unloaded
and the result says why. Every stage shows in the Web UI (details) and survives worker restarts.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, FailureError, TimeoutType
from temporalio.exceptions import TimeoutError as TemporalTimeout  # not the builtin

with workflow.unsafe.imports_passed_through():
    from stakeflow.agents.evals import (
        AdapterRequest,
        DatasetFiles,
        LearnRequest,
        LearnResult,
        Promotion,
        ReplayFilters,
        ReplayModelReport,
        ReplayRequest,
        TrainRequest,
    )
    from stakeflow.agents.types import ModelEndpoint
    from stakeflow.core import errors
    from stakeflow.core.contracts import (
        EXPORT_DATASET,
        LEARN_WORKFLOW,
        LOAD_ADAPTER,
        PROGRESS_QUERY,
        PROMOTE_ADAPTER,
        REPLAY_WORKFLOW,
        TRAIN_ADAPTER,
        UNLOAD_ADAPTER,
        queue_name,
    )
    from stakeflow.workflows.calls import ActivityOptions
    from stakeflow.workflows.replay_eval import ReplayEvalWorkflow

T = TypeVar("T")
SHORT = ActivityOptions(start_to_close_timeout=timedelta(minutes=5), retry_policy=RetryPolicy(maximum_attempts=5))


@workflow.defn(name=LEARN_WORKFLOW)
class LearnWorkflow:
    def __init__(self) -> None:
        self._stage_name = "starting"
        self._lines: list[str] = []

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> list[str]:
        return list(self._lines)

    def _at(self, stage: str, line: str) -> None:
        self._stage_name = stage
        self._lines.append(line)
        workflow.set_current_details("\n".join(f"- {x}" for x in self._lines))

    @workflow.run
    async def run(self, req: LearnRequest) -> LearnResult:
        prefix = req.queue_prefix
        self._at("export", f"exporting the dataset of {_whose(req)}")
        files = await self._stage(workflow.execute_activity(EXPORT_DATASET, req, result_type=DatasetFiles, **SHORT))
        if files.train_examples < req.min_examples or files.test_examples == 0:
            raise ApplicationError(
                f"export: {files.train_examples} training and {files.test_examples} held-out examples of "
                f"{_whose(req)} (need {req.min_examples} and at least 1, [learn] min_examples): capture more runs "
                "([dataset] capture = true) or lower min_examples",
                type=errors.NOT_ENOUGH_DATA,
                non_retryable=True,
            )
        self._at(
            "train",
            f"training {req.adapter_name} on {files.train_examples} examples "
            f"({files.test_examples} held out) on {queue_name('train', prefix)}",
        )
        trained = await self._stage(
            workflow.execute_activity(
                TRAIN_ADAPTER,
                TrainRequest(learn=req, files=files),
                result_type=AdapterRequest,
                task_queue=queue_name("train", prefix),
                start_to_close_timeout=timedelta(seconds=req.timeout_s),
                heartbeat_timeout=timedelta(seconds=req.heartbeat_s),
                schedule_to_start_timeout=timedelta(hours=1),
                retry_policy=RetryPolicy(maximum_attempts=2, non_retryable_error_types=[errors.TRAINER_FAILED]),
                summary=f"train {req.adapter_name}",
            )
        )
        self._at("load", f"loading adapter {trained.name} into vLLM")
        await self._stage(
            workflow.execute_activity(LOAD_ADAPTER, trained, task_queue=queue_name("open", prefix), **SHORT)
        )
        self._at("judge", f"judging {trained.name} against {req.current_model} on the held-out examples")
        try:
            reports = await self._stage(
                workflow.execute_child_workflow(
                    ReplayEvalWorkflow.run,
                    ReplayRequest(
                        filters=ReplayFilters(agent=req.agent or None, split=req.split, part="test"),
                        models=[
                            ModelEndpoint(route="open", model=trained.name, provider="openai-compatible"),
                            ModelEndpoint(route="open", model=req.current_model, provider="openai-compatible"),
                        ],
                        judge=ModelEndpoint(route="frontier", model=req.judge_model, provider="anthropic"),
                        limit=req.replay_limit,
                        concurrency=req.concurrency,
                        open_queue=queue_name("open", prefix),
                        frontier_queue=queue_name("frontier", prefix),
                        workflows_queue=queue_name("workflows", prefix),
                    ),
                    id=f"{workflow.info().workflow_id}-judge",
                    task_queue=queue_name("workflows", prefix),
                    static_summary=f"replay: {trained.name} vs {req.current_model}",
                )
            )
        except ApplicationError:
            await self._unload(trained, prefix)
            raise
        candidate, current = reports[0], reports[1]
        result = LearnResult(
            adapter=trained.name,
            adapter_path=trained.path,
            candidate=candidate,
            current=current,
            train_examples=files.train_examples,
            test_examples=files.test_examples,
        )
        better = _rate(candidate) - _rate(current)
        figures = (
            f"{trained.name} agreed with the reference on {_rate(candidate):.0%} of {candidate.n} held-out "
            f"examples, {req.current_model} on {_rate(current):.0%} of {current.n}"
        )
        if candidate.n and candidate.errors < candidate.n and better >= req.margin:
            self._at("promote", f"promoting {trained.name}")
            await self._stage(
                workflow.execute_activity(
                    PROMOTE_ADAPTER,
                    Promotion(
                        agent=req.agent,
                        open_model=trained.name,
                        previous=req.current_model,
                        configured=req.configured_model,
                        evidence=figures,
                        at=workflow.now().isoformat(),
                    ),
                    **SHORT,
                )
            )
            result.promoted, result.reason = True, f"promoted: {figures} (margin {req.margin:.0%})"
        else:
            await self._unload(trained, prefix)
            failed = (
                f"; {candidate.errors} candidate answers failed ({candidate.last_error})" if candidate.errors else ""
            )
            result.reason = (
                f"not promoted, unloaded: {figures}{failed}; promotion needs {req.margin:.0%} more "
                "agreement than the current model ([learn] margin)"
            )
        self._at("done", result.reason)
        return result

    async def _stage(self, work: Awaitable[T]) -> T:
        """The stage's result; its failure as this workflow's, named by stage, with the cause's own words."""
        try:
            return await work
        except (ActivityError, ChildWorkflowError) as e:
            cause = e.cause
            message = cause.message if isinstance(cause, FailureError) else str(cause or e)
            if isinstance(cause, TemporalTimeout) and cause.type == TimeoutType.SCHEDULE_TO_START:
                message = (
                    f"no worker took the {self._stage_name} step in time: start `stakeflow worker --queues "
                    f"{'train' if self._stage_name == 'train' else 'open'}` where it belongs, then run it again"
                )
            kind = cause.type if isinstance(cause, ApplicationError) else type(cause).__name__
            raise ApplicationError(
                f"{self._stage_name}: {message}", type=kind or errors.LEARN_FAILED, non_retryable=True
            ) from None

    async def _unload(self, adapter: AdapterRequest, prefix: str) -> None:
        self._at("unload", f"unloading {adapter.name}")
        await self._stage(
            workflow.execute_activity(UNLOAD_ADAPTER, adapter, task_queue=queue_name("open", prefix), **SHORT)
        )


def _whose(req: LearnRequest) -> str:
    return f"agent {req.agent}" if req.agent else "runs without a named agent"


def _rate(r: ReplayModelReport) -> float:
    return r.agreeing / r.n if r.n else 0.0


__all__ = ["LearnWorkflow", "REPLAY_WORKFLOW"]
