"""``[workers.<role>]`` as the arguments of a Temporal Worker: slots, cache and pollers per queue.

A slot is one task a worker runs at once: on the open queue, one model call in flight, so the open
worker's ``max_concurrent_activities`` is how full it can keep the GPU's batch. Whatever is unset keeps
Temporal's default (100 slots of each kind, 1000 cached workflows, 5 pollers of each kind).
"""

from __future__ import annotations

from typing import Any

from temporalio.worker import PollerBehaviorSimpleMaximum

from stakeflow.config import QueueLimits, Settings
from stakeflow.core.contracts import QueueRole


def limits_of(settings: Settings, role: QueueRole) -> QueueLimits:
    return getattr(settings.workers, role)


def worker_kwargs(limits: QueueLimits) -> dict[str, Any]:
    """The ``Worker(...)`` keyword arguments ``limits`` sets (none for what it leaves unset)."""
    kwargs: dict[str, Any] = {}
    for name in (
        "max_concurrent_activities",
        "max_concurrent_workflow_tasks",
        "max_concurrent_local_activities",
        "max_cached_workflows",
    ):
        value = getattr(limits, name)
        if value is not None:
            kwargs[name] = value
    if limits.workflow_pollers is not None:
        kwargs["workflow_task_poller_behavior"] = PollerBehaviorSimpleMaximum(maximum=limits.workflow_pollers)
    if limits.activity_pollers is not None:
        kwargs["activity_task_poller_behavior"] = PollerBehaviorSimpleMaximum(maximum=limits.activity_pollers)
    return kwargs
