"""Runs: the one place that starts them and finds them, for the CLI and the webhook server alike.

* ``_start``: the request (validated, with the agent's defaults and the routing facts), the start, the wait;
* ``_find``: runs that exist: by workflow id or Temporal run id, their status and result, cancelling one,
  deciding its approvals, listing runs;
* ``_events``: a run's events as they happen (its workflow stream, read by query).
"""

from stakeflow.services.runs._events import run_events
from stakeflow.services.runs._find import (
    ResolvedRun,
    RunInfo,
    cancel_run,
    decide_step,
    describe_run,
    failure_status,
    failure_text,
    find_run,
    list_runs,
    resolve_run,
)
from stakeflow.services.runs._start import (
    MAX_ENUM_FILES,
    MAX_LISTED_FILES,
    RUN_TIMEOUT_HINT,
    RunFailed,
    agent_config,
    budget_refs,
    build_request,
    distrust_of,
    has_poller,
    has_workflow_poller,
    list_workspace,
    new_workflow_id,
    open_models,
    routing_config,
    run_details,
    run_summary,
    start_run,
    wait_result,
    workspace_paths,
    workspace_tables,
)

__all__ = [
    "MAX_ENUM_FILES",
    "MAX_LISTED_FILES",
    "RUN_TIMEOUT_HINT",
    "ResolvedRun",
    "RunFailed",
    "RunInfo",
    "agent_config",
    "budget_refs",
    "build_request",
    "distrust_of",
    "cancel_run",
    "decide_step",
    "describe_run",
    "failure_status",
    "failure_text",
    "find_run",
    "has_poller",
    "has_workflow_poller",
    "list_runs",
    "list_workspace",
    "new_workflow_id",
    "open_models",
    "resolve_run",
    "routing_config",
    "run_events",
    "run_details",
    "run_summary",
    "start_run",
    "wait_result",
    "workspace_paths",
    "workspace_tables",
]
