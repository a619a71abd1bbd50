"""The worker process: polls stakeflow's task queues until SIGTERM.

One process can serve all four queues (development, `stakeflow up`); production runs
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

from activities.models import ModelActivities
from activities.tools import ToolActivities
from stakeflow import telemetry
from stakeflow.settings import Settings
from stakeflow.core.contracts import ROLES, QueueRole, queue_name
from workflows.agent_task import AgentTaskWorkflow

log = logging.getLogger("stakeflow.worker")

GRACEFUL_SHUTDOWN = timedelta(seconds=20)


def build_workers(
    client: Client, settings: Settings, roles: Sequence[QueueRole], models: ModelActivities
) -> list[Worker]:
    """One Temporal Worker per queue role, all sharing the same activity instances."""
    tools = ToolActivities(settings.tools, settings.ledger_dir)
    prefix = settings.queue_prefix
    workers: list[Worker] = []
    for role in roles:
        kwargs: dict = {}
        if role == "workflows":
            # run_tool is registered here too: fast read-only tools run as local activities.
            kwargs = {"workflows": [AgentTaskWorkflow], "activities": [tools.run_tool]}
        elif role in ("open", "frontier"):
            kwargs = {"activities": [models.call_model]}
        elif role == "tools":
            kwargs = {"activities": [tools.run_tool]}
        workers.append(
            Worker(
                client,
                task_queue=queue_name(role, prefix),
                graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
                **kwargs,
            )
        )
    return workers


async def run_workers(
    client: Client, settings: Settings, roles: Sequence[QueueRole] = ROLES, stop: asyncio.Event | None = None
) -> None:
    """Poll the given queues until ``stop`` is set (or forever), then shut down gracefully."""
    models = ModelActivities(settings)
    workers = build_workers(client, settings, roles, models)
    stop = stop or asyncio.Event()
    tasks = [asyncio.create_task(w.run()) for w in workers]
    log.info("worker polling %s", ", ".join(queue_name(r, settings.queue_prefix) for r in roles))
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    # Export the spans of the work already done now, while in-flight activities get their graceful
    # shutdown: an OTLP backend would otherwise wait for the end of it (up to GRACEFUL_SHUTDOWN), and a
    # SIGKILL that comes first (`stakeflow down` after 15 s, a pod's grace period) would lose them all.
    flushed = asyncio.create_task(asyncio.to_thread(telemetry.flush))
    await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
    await flushed
    await models.close()
    stopper.cancel()
    for t in tasks:
        if t in done and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
    await asyncio.gather(*tasks, return_exceptions=True)
