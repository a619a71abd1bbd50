"""stakeflow from Python: ``Client`` (``from stakeflow import Client``), over the service functions the CLI and the
webhook server call, and what a team's own Temporal worker needs to run agents inside its workflows.

A floor of its own (README, "Layout"): above the services, which it calls, below the entry points; nothing of
stakeflow imports it but the package's front door (``stakeflow.Client``, loaded lazily) and the entry points.

* ``_client``: ``Client`` (connect, run, start, get_handle, costs, trace) and ``RunHandle`` (result, status,
  approve, reject, cancel);
* ``_preparation``: a run's request from its options (the CLI's ``build_request``), the ``stakeflow.prepare_run``
  activity ``stakeflow.workflow.run_agent`` calls on a team's queue, and ``plugin``, stakeflow's Temporal plugin
  with that activity;
* ``_reports``: ``CostReport`` and ``Trace``, what `stakeflow costs --json` and `stakeflow trace --json` print.

Results are the run's own types (``TaskResult``, ``Progress`` inside ``RunInfo``, ``ApprovalRecord``); errors are
``stakeflow.core.errors``' (``InputError``, ``ConfigError``, ``ServiceError``, ``RunFailed``), their messages
naming the fix.
"""

from stakeflow.agents.types import ApprovalRecord, Progress, RunOptions, StepRecord, TaskResult, ToolCall
from stakeflow.client._client import Client, RunHandle
from stakeflow.client._preparation import RunPreparation, plugin
from stakeflow.client._reports import CostReport, Trace, TraceSpan
from stakeflow.services.runs import RunInfo

__all__ = [
    "ApprovalRecord",
    "Client",
    "CostReport",
    "Progress",
    "RunHandle",
    "RunInfo",
    "RunOptions",
    "RunPreparation",
    "StepRecord",
    "TaskResult",
    "ToolCall",
    "Trace",
    "TraceSpan",
    "plugin",
]
