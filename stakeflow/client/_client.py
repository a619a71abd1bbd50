"""``Client`` and ``RunHandle``: stakeflow from Python, through the service functions the CLI and the webhook server
call (``stakeflow.services.runs``, ``stakeflow.services.reports``), so a run started here is the run `stakeflow run`
would start with the same options, and reads back the same way.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
from collections.abc import Sequence
from datetime import timedelta
from pathlib import PurePath

from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError

from stakeflow.agents.types import (
    ApprovalRecord,
    RunOptions,
    Sensitivity,
    StakesOverride,
    TaskResult,
    ToolCall,
)
from stakeflow.client._preparation import plugin, request_for
from stakeflow.client._reports import CostReport, Trace, TraceSpan
from stakeflow.config import Settings, load_settings
from stakeflow.core.contracts import queue_name
from stakeflow.core.errors import InputError, RunFailed
from stakeflow.services import reports, runs
from stakeflow.temporal.connection import connect

log = logging.getLogger("stakeflow.client")


class Client:
    """An async client for stakeflow's runs, costs and traces.

        client = await Client.connect()
        result = await client.run("Summarise notes.txt", workspace="examples/workspace")

    ``settings``: stakeflow's configuration (``load_settings()`` unless given: the environment, stakeflow.toml,
    Temporal's profiles, as for the CLI). ``temporal``: the Temporal client, with stakeflow's plugin (converter,
    codec, tracing, and the activity ``stakeflow.workflow.run_agent`` needs): a ``Worker`` made from it runs a
    team's own workflows that call agents. Local services are not started here: `stakeflow up` does that.
    """

    def __init__(self, temporal: TemporalClient, settings: Settings) -> None:
        self.temporal = temporal
        self.settings = settings

    @classmethod
    async def connect(cls, settings: Settings | None = None) -> Client:
        """Connect as the CLI does (address, namespace, TLS, API key and payload codec from the same sources);
        ServiceError naming the fix when Temporal cannot be reached, ConfigError for unusable settings."""
        settings = settings if settings is not None else await asyncio.to_thread(load_settings)
        return cls(await connect(settings, plugin=plugin(settings)), settings)

    async def run(
        self,
        goal: str,
        *,
        agent: str | None = None,
        stakes: StakesOverride | None = None,
        sensitivity: Sensitivity | None = None,
        tools: Sequence[str] | None = None,
        workspace: str | PurePath | None = None,
        max_steps: int | None = None,
        max_rounds: int | None = None,
        budget_tokens: int | None = None,
        budget_usd: float | None = None,
        auto_approve: bool = False,
        id: str | None = None,
    ) -> TaskResult:
        """Run ``goal`` and wait for its result (`stakeflow run`; the options are its options by the same names).

        InputError naming the fix for a request the CLI would refuse; RunFailed (``status``: failed, canceled,
        terminated, timed_out) with the failing step and its reason when the run ends without a result.
        """
        handle = await self.start(
            goal,
            agent=agent,
            stakes=stakes,
            sensitivity=sensitivity,
            tools=tools,
            workspace=workspace,
            max_steps=max_steps,
            max_rounds=max_rounds,
            budget_tokens=budget_tokens,
            budget_usd=budget_usd,
            auto_approve=auto_approve,
            id=id,
        )
        return await handle.result()

    async def start(
        self,
        goal: str,
        *,
        agent: str | None = None,
        stakes: StakesOverride | None = None,
        sensitivity: Sensitivity | None = None,
        tools: Sequence[str] | None = None,
        workspace: str | PurePath | None = None,
        max_steps: int | None = None,
        max_rounds: int | None = None,
        budget_tokens: int | None = None,
        budget_usd: float | None = None,
        auto_approve: bool = False,
        id: str | None = None,
    ) -> RunHandle:
        """Start ``goal`` as a run and return at once (`stakeflow run --no-wait`). ``id`` is the workflow id
        (default ``task-<random>``): a running one is joined, a finished one is never reused (InputError)."""
        options = RunOptions.checked(
            goal,
            agent=agent,
            stakes=stakes,
            sensitivity=sensitivity,
            tools=tools,
            workspace=workspace,
            max_steps=max_steps,
            max_rounds=max_rounds,
            budget_tokens=budget_tokens,
            budget_usd=budget_usd,
            auto_approve=auto_approve,
            source="python",
        )
        req = await asyncio.to_thread(request_for, self.settings, options)
        if not await runs.has_workflow_poller(self.temporal, self.settings):
            log.warning(
                "no worker polls %s on %s: the run waits until one does (`stakeflow up`, or `stakeflow worker`)",
                queue_name("workflows", self.settings.queue_prefix),
                self.settings.address,
            )
        try:
            handle = await runs.start_run(self.temporal, self.settings, req, id)
        except WorkflowAlreadyStartedError:
            raise InputError(
                f"workflow id '{id}' belongs to a run that has ended, and stakeflow never reuses an id: pass another "
                f"id, or read that run with `await client.get_handle('{id}')`"
            ) from None
        return self._handle(handle.id, handle.result_run_id or handle.run_id or "")

    async def get_handle(self, run_id: str) -> RunHandle:
        """The run ``run_id`` names: its workflow id or its Temporal run id (as the CLI's commands take either);
        InputError saying what was searched when it names none."""
        found = await runs.resolve_run(self.temporal, run_id)
        return self._handle(found.workflow_id, found.run_id)

    async def costs(
        self,
        *,
        since: str | timedelta | None = None,
        by: str = "model",
        run: str | None = None,
        agent: str | None = None,
    ) -> CostReport:
        """`stakeflow costs`: totals and a breakdown ``by`` run, model, route, stakes, tool, day, source or agent;
        ``since`` "30m", "24h", "7d", "2w", a timedelta, or None for all; ``run`` one run's bill (either id)."""
        window = reports.parse_since(since)
        store = await asyncio.to_thread(reports.open_store, self.settings)
        run_id = None if run is None else await reports.traced_workflow_id(self.settings, store, run, self.temporal)
        if run_id is not None:
            await reports.settle(store, run_id)  # a run just ended: its last calls' spans
        report = await asyncio.to_thread(reports.cost_review, self.settings, store, window, by, run_id, agent)
        return CostReport.model_validate(report)

    async def trace(self, run_id: str) -> Trace:
        """`stakeflow trace`: the run's spans in tree order (``Trace.text()`` prints them as the CLI does)."""
        from stakeflow.traces import trace_tree

        store = await asyncio.to_thread(reports.open_store, self.settings)
        workflow_id = await reports.traced_workflow_id(self.settings, store, run_id, self.temporal)
        await reports.settle(store, workflow_id)  # a run just ended: its last calls' spans
        rows = await asyncio.to_thread(trace_tree, store, workflow_id)
        return Trace(workflow_id=workflow_id, spans=[TraceSpan.model_validate(row) for row in rows])

    def _handle(self, workflow_id: str, run_id: str) -> RunHandle:
        return RunHandle(self.temporal, workflow_id, run_id, self.settings.ui_url(workflow_id))


class RunHandle:
    """One run: ``workflow_id`` (what stakeflow, its traces and the Web UI key runs by), the Temporal ``run_id``,
    and the Web UI's ``ui_url``. Streaming its answer (issue 25 §3) belongs here, beside ``result``."""

    def __init__(self, temporal: TemporalClient, workflow_id: str, run_id: str, ui_url: str) -> None:
        self.temporal = temporal
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.ui_url = ui_url

    def __repr__(self) -> str:
        return f"RunHandle(workflow_id={self.workflow_id!r}, run_id={self.run_id!r})"

    async def result(self) -> TaskResult:
        """The run's result, once it ends (`stakeflow result --wait`); RunFailed naming the step and the reason."""
        handle: WorkflowHandle = self.temporal.get_workflow_handle(self.workflow_id, result_type=TaskResult)
        try:
            return await runs.wait_result(handle)
        except RunFailed as e:
            raise RunFailed(
                f"run {self.workflow_id} {e.status}: {e} (`await handle.status()`, or `stakeflow status "
                f"{self.workflow_id}`, shows each step)",
                e.status,
            ) from None

    async def status(self) -> runs.RunInfo:
        """`stakeflow status`: running or how it ended, each step's progress and route, the result or the error."""
        return await runs.describe_run(self.temporal, self.workflow_id)

    async def approve(
        self, step: int, note: str = "", *, calls: Sequence[ToolCall] | None = None, by: str | None = None
    ) -> ApprovalRecord:
        """`stakeflow approve`: let ``step``, which waits for approval, act; with ``calls``, these calls instead
        (the same tools, the approver's arguments). ``by``: who decided (default: this process's user)."""
        return await runs.decide_step(
            self.temporal,
            self.workflow_id,
            step,
            True,
            note,
            by or getpass.getuser(),
            list(calls) if calls is not None else None,
        )

    async def reject(self, step: int, note: str, *, by: str | None = None) -> ApprovalRecord:
        """`stakeflow reject`: skip ``step``; the run goes on without it. ``note`` says why (recorded)."""
        return await runs.decide_step(self.temporal, self.workflow_id, step, False, note, by or getpass.getuser())

    async def cancel(self) -> None:
        """`stakeflow cancel`: ask the run to end (a run waiting for approval ends cleanly)."""
        await runs.cancel_run(self.temporal, self.workflow_id)
