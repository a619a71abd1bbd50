"""The worker process: polls stakeflow's task queues until SIGTERM.

One process can serve all five queues (development, `stakeflow up`); production runs
``stakeflow worker --queues open`` near the GPU, ``--queues frontier`` where the API key
lives, and so on. Shutdown is graceful: activities in flight get time to finish, and
whatever does not finish is retried by Temporal on another worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from stakeflow import telemetry
from stakeflow.activities.answer_check import check_answer_activity
from stakeflow.activities.catalogue import CatalogueActivities
from stakeflow.activities.evals import EvalActivities
from stakeflow.activities.learn import LearnActivities
from stakeflow.activities.mcp.toolbox import McpToolbox
from stakeflow.activities.models import ModelActivities
from stakeflow.activities.python_tools import PythonToolbox
from stakeflow.activities.python_tools import load as load_python_tools
from stakeflow.activities.tools import ToolActivities
from stakeflow.core.contracts import ROLES, QueueRole, queue_name
from stakeflow.settings import Settings
from stakeflow.workers.limits import limits_of, worker_kwargs
from stakeflow.workers.sandbox import workflow_runner
from stakeflow.workflows.agent_task import AgentTaskWorkflow
from stakeflow.workflows.learn import LearnWorkflow
from stakeflow.workflows.replay_eval import ReplayEvalWorkflow
from stakeflow.workflows.shadow import ShadowBudgetWorkflow, ShadowEvalWorkflow

log = logging.getLogger("stakeflow.worker")

GRACEFUL_SHUTDOWN = timedelta(seconds=20)


class Toolboxes:
    """What the tools role brings beyond the built-ins: MCP sessions and the team's Python tools.

    Python tools are loaded (and refused with the fix) when the worker starts, not when a run needs one.
    """

    def __init__(self, settings: Settings) -> None:
        self.mcp = McpToolbox(settings.mcp) if settings.mcp else None
        self.python = PythonToolbox(load_python_tools(settings.tools.python)) if settings.tools.python else None
        self.tools = ToolActivities(settings.tools, settings.ledger_dir, mcp=self.mcp, python=self.python)
        self.catalogue = CatalogueActivities(self.mcp, self.python)

    def tool_queues(self, settings: Settings) -> list[str]:
        """The tools queue, and the queue of each MCP server configured on this worker."""
        queues = [queue_name("tools", settings.queue_prefix)]
        for cfg in settings.mcp.values():
            if cfg.task_queue and cfg.task_queue not in queues:
                queues.append(cfg.task_queue)
        return queues

    async def close(self) -> None:
        if self.mcp is not None:
            await self.mcp.close()


def build_workers(
    client: Client,
    settings: Settings,
    roles: Sequence[QueueRole],
    models: ModelActivities,
    toolboxes: Toolboxes | None = None,
) -> list[Worker]:
    """One Temporal Worker per queue (a role's, plus each MCP server's own), sharing the activity instances."""
    boxes = toolboxes or Toolboxes(settings)
    tools = boxes.tools
    prefix = settings.queue_prefix
    learn = LearnActivities(settings)
    workers: list[Worker] = []
    for role in roles:
        queues = [queue_name(role, prefix)]
        kwargs: dict = {}
        if role == "workflows":
            # run_tool is registered here too: fast read-only tools run as local activities.
            evals = EvalActivities(client, settings)
            kwargs = {
                "workflows": [
                    AgentTaskWorkflow,
                    ShadowEvalWorkflow,
                    ShadowBudgetWorkflow,
                    ReplayEvalWorkflow,
                    LearnWorkflow,
                ],
                "workflow_runner": workflow_runner(settings.workers.workflow_sandbox),
                "activities": [
                    tools.run_tool,
                    check_answer_activity,
                    evals.reserve_shadow_budget,
                    evals.settle_shadow_budget,
                    evals.record_eval,
                    evals.read_agreement,
                    evals.record_label,
                    evals.load_replay_examples,
                    learn.export_dataset,
                    learn.promote_adapter,
                ],
            }
        elif role == "open":  # next to vLLM: its adapters are loaded from here
            kwargs = {"activities": [models.call_model, learn.load_adapter, learn.unload_adapter]}
        elif role == "frontier":
            kwargs = {"activities": [models.call_model]}
        elif role == "train":  # where the GPU is: the trainer runs as a child process
            kwargs = {"activities": [learn.train_adapter]}
        elif role == "tools":
            kwargs = {"activities": [tools.run_tool, boxes.catalogue.describe_tools]}
            queues = boxes.tool_queues(settings)
        if role == "workflows" and settings.workers.local_model_calls:
            kwargs["activities"] = [*kwargs["activities"], models.call_model]  # open calls as local activities
        kwargs.update(worker_kwargs(limits_of(settings, role)))  # [workers.<role>]
        for queue in queues:
            workers.append(Worker(client, task_queue=queue, graceful_shutdown_timeout=GRACEFUL_SHUTDOWN, **kwargs))
    return workers


async def run_workers(
    client: Client,
    settings: Settings,
    roles: Sequence[QueueRole] = ROLES,
    stop: asyncio.Event | None = None,
    toolboxes: Toolboxes | None = None,
) -> None:
    """Poll the given queues until ``stop`` is set (or forever), then shut down gracefully."""
    models = ModelActivities(settings)
    toolboxes = toolboxes or Toolboxes(settings)
    workers = build_workers(client, settings, roles, models, toolboxes)
    stop = stop or asyncio.Event()
    tasks = [asyncio.create_task(w.run()) for w in workers]
    log.info("worker polling %s", ", ".join(sorted({w.task_queue for w in workers})))
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    # Export the spans of the work already done now, while in-flight activities get their graceful
    # shutdown: an OTLP backend would otherwise wait for the end of it (up to GRACEFUL_SHUTDOWN), and a
    # SIGKILL that comes first (`stakeflow down` after 15 s, a pod's grace period) would lose them all.
    flushed = asyncio.create_task(asyncio.to_thread(telemetry.flush))
    await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
    await flushed
    await models.close()
    await toolboxes.close()
    stopper.cancel()
    for t in tasks:
        if t in done and (error := t.exception()) is not None:
            raise error
    await asyncio.gather(*tasks, return_exceptions=True)
