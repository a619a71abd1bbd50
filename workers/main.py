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

from stakeflow.activities.answer_check import AnswerCheckActivities
from stakeflow.activities.catalogue import CatalogueActivities
from stakeflow.activities.evals import EvalActivities
from stakeflow.activities.learn import LearnActivities
from stakeflow.activities.mcp.toolbox import McpToolbox
from stakeflow.activities.models import ModelActivities
from stakeflow.activities.parameters import EvalParameters, LearnParameters, ModelParameters
from stakeflow.activities.python_tools import PythonToolbox
from stakeflow.activities.python_tools import load as load_python_tools
from stakeflow.activities.tools import ToolActivities
from stakeflow.config import Settings
from stakeflow.core.contracts import ROLES, QueueRole
from stakeflow.core.errors import ConfigError
from stakeflow.temporal import telemetry
from stakeflow.temporal.plugin import ActivityHolder, StakeflowPlugin, queue_roles
from stakeflow.workers.limits import limits_of, worker_kwargs
from stakeflow.workflows.agent_task import AgentTaskWorkflow
from stakeflow.workflows.budget_day import BudgetWorkflow
from stakeflow.workflows.hook_gate import HookGateWorkflow
from stakeflow.workflows.learn import LearnWorkflow
from stakeflow.workflows.replay_eval import ReplayEvalWorkflow
from stakeflow.workflows.shadow import ShadowBudgetWorkflow, ShadowEvalWorkflow

log = logging.getLogger("stakeflow.worker")

GRACEFUL_SHUTDOWN = timedelta(seconds=20)
WORKFLOWS = (
    AgentTaskWorkflow,
    ShadowEvalWorkflow,
    BudgetWorkflow,
    ShadowBudgetWorkflow,  # earlier releases' shadow budgets, for the day of an upgrade
    ReplayEvalWorkflow,
    LearnWorkflow,
    HookGateWorkflow,
)


class Holders:
    """Every activity holder of a worker process, each built from the narrow parameters it needs, shared by the
    process's workers (one per queue): clients, MCP sessions and caches are made once.

    Python tools are loaded (and refused with the fix) when the worker starts, not when a run needs one.
    """

    def __init__(self, settings: Settings) -> None:
        self.mcp = McpToolbox(settings.mcp) if settings.mcp else None
        python = settings.tools.python
        self.python = PythonToolbox(load_python_tools(python), settings.tools.python_threads) if python else None
        self.tools = ToolActivities(settings.tools, settings.ledger_dir, mcp=self.mcp, python=self.python)
        self.catalogue = CatalogueActivities(self.mcp, self.python)
        model_params = ModelParameters.from_settings(settings)
        _check_budget_prices(settings, model_params)
        self.models = ModelActivities(model_params)
        self.evals = EvalActivities(EvalParameters.from_settings(settings))
        self.learn = LearnActivities(LearnParameters.from_settings(settings))
        self.answers = AnswerCheckActivities()

    @property
    def all(self) -> list[ActivityHolder]:
        return [self.tools, self.catalogue, self.models, self.evals, self.learn, self.answers]

    async def close(self) -> None:
        await self.models.close()
        if self.mcp is not None:
            await self.mcp.close()


def _check_budget_prices(settings: Settings, params: ModelParameters) -> None:
    """A frontier budget needs the frontier model's price (a call's worst case is priced): refused at start-up."""
    b = settings.budgets
    limits = [b.frontier_usd_per_day, b.run_usd, *(a.usd_per_day for a in settings.agents.values())]
    limits += [h.usd_per_day for h in settings.hooks.values()]
    if params.frontier.api_key is None or all(limit is None for limit in limits):
        return
    if params.prices.lookup(settings.frontier_model) is None:
        raise ConfigError(
            f"frontier budgets are set but the frontier model '{settings.frontier_model}' has no price, so no call's "
            f'worst case can be priced: add [prices."{settings.frontier_model}"] input_per_mtok and output_per_mtok '
            f"to {settings.config_path}"
        )


def plugin_for(settings: Settings, holders: Holders) -> StakeflowPlugin:
    """The plugin of a stakeflow worker process: stakeflow's workflows, and the holders' activities by queue role."""
    return StakeflowPlugin(settings, holders=holders.all, workflows=WORKFLOWS)


def build_workers(client: Client, settings: Settings, roles: Sequence[QueueRole], holders: Holders) -> list[Worker]:
    """One Temporal Worker per queue of ``roles`` (a role's, plus each MCP server's own for the tools role).

    The workers share one client, on ``client``'s connection, whose plugin gives each worker what its queue's role
    runs (``StakeflowPlugin``); here only the queues and each role's limits (``[workers.<role>]``) are decided.
    """
    client = Client(client.service_client, namespace=client.namespace, plugins=[plugin_for(settings, holders)])
    return [
        Worker(
            client,
            task_queue=queue,
            graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
            **worker_kwargs(limits_of(settings, role)),
        )
        for queue, role in queue_roles(settings).items()
        if role in roles
    ]


async def run_workers(
    client: Client,
    settings: Settings,
    roles: Sequence[QueueRole] = ROLES,
    stop: asyncio.Event | None = None,
    holders: Holders | None = None,
) -> None:
    """Poll the given queues until ``stop`` is set (or forever), then shut down gracefully."""
    holders = holders or Holders(settings)
    workers = build_workers(client, settings, roles, holders)
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
    await holders.close()
    stopper.cancel()
    for t in tasks:
        if t in done and (error := t.exception()) is not None:
            raise error
    await asyncio.gather(*tasks, return_exceptions=True)
