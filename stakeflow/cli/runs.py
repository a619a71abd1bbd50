"""Runs: `run`, `status`, `result`, `cancel`, with the step printer and the service watcher of `run`.

Every command that takes a run accepts its workflow id or its Temporal run id
(`runs.resolve_run`); an id that names no run is an error, exit code 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import click

from stakeflow.agents.types import MAX_ROUNDS, SENSITIVITY_CHOICES, STAKES_CHOICES, Progress, TaskResult
from stakeflow.cli.answer_stream import AnswerPrinter
from stakeflow.cli.common import (
    Failed,
    Unsupported,
    current_settings,
    echo_json,
    err,
    friendly,
    open_run,
    run_async,
    temporal_client,
)
from stakeflow.cli.stack import bring_up
from stakeflow.config import Settings
from stakeflow.core.contracts import PROGRESS_QUERY
from stakeflow.core.errors import ServiceError
from stakeflow.local import services
from stakeflow.services import runs
from stakeflow.services.render import progress_lines, result_lines, run_dict, step_line, waiting_lines

POLL_SECONDS = 0.5
SERVICE_CHECK_SECONDS = 2.0


@click.command()
@click.argument("goal")
@click.option("--agent", default=None, help="A named agent ([agents.<name>]): its role, tools and defaults.")
@click.option(
    "--stakes",
    default=None,
    type=click.Choice(STAKES_CHOICES),
    help="Override the policy's stakes for every step (default: the agent's, else auto).",
)
@click.option(
    "--sensitivity",
    default=None,
    type=click.Choice(SENSITIVITY_CHOICES),
    help="private: no data of this run ever goes to the frontier API (default: the agent's, else public).",
)
@click.option(
    "--tools",
    "tools_csv",
    default=None,
    help="Comma-separated tools or globs the run may use, e.g. read_file,git.* (default: the agent's, else all enabled).",
)
@click.option(
    "--workspace",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder the file and SQL tools work in (default: $STAKEFLOW_HOME/workspace).",
)
@click.option("--max-steps", type=click.IntRange(1, 200), default=None, help="Most steps the plan may have.")
@click.option(
    "--max-rounds",
    type=click.IntRange(1, MAX_ROUNDS),
    default=None,
    help="Rounds per step: model call, its tool calls, the model sees the results (default: the agent's, else [policy] max_rounds).",
)
@click.option("--budget-tokens", type=click.IntRange(1), default=None, help="Fail the run past this many tokens.")
@click.option(
    "--budget-usd",
    type=click.FloatRange(0),
    default=None,
    help="The most this run may spend on the frontier, in US dollars (its run_usd budget; see `stakeflow budgets`).",
)
@click.option("--id", "workflow_id", default=None, help="Workflow id to use (default: task-<random>).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--no-wait", is_flag=True, help="Print the ids and return at once.")
@click.option("--auto-approve", is_flag=True, help="Approve high-risk steps without waiting (recorded as such).")
@click.option(
    "--stream/--no-stream",
    default=None,
    help="Print the answer as the model writes it (default: when stdout is a terminal).",
)
@click.option(
    "--strict", is_flag=True, help="Exit with code 3 when the answer is not supported by what the run observed."
)
@friendly
def run(
    goal: str,
    agent: str | None,
    stakes: str | None,
    sensitivity: str | None,
    tools_csv: str | None,
    workspace: str | None,
    max_steps: int | None,
    max_rounds: int | None,
    budget_tokens: int | None,
    budget_usd: float | None,
    workflow_id: str | None,
    as_json: bool,
    no_wait: bool,
    auto_approve: bool,
    strict: bool,
    stream: bool | None,
) -> None:
    """Run GOAL as a durable agent task."""
    settings = current_settings()
    tools = [t.strip() for t in tools_csv.split(",") if t.strip()] if tools_csv is not None else None
    req = runs.build_request(
        settings,
        goal,
        stakes=stakes,
        sensitivity=sensitivity,
        tools=tools,
        workspace=workspace,
        max_steps=max_steps,
        max_rounds=max_rounds,
        budget_tokens=budget_tokens,
        auto_approve=auto_approve,
        agent=agent,
        budget_usd=budget_usd,
    )
    streamed = not as_json and (stream if stream is not None else sys.stdout.isatty())
    result = run_async(_run(settings, req, workflow_id, as_json, no_wait, streamed))
    if strict and result is not None and result.answer_supported is False:
        raise Unsupported(
            f"the answer is not supported by what the run observed: {', '.join(result.unsupported_claims)}"
        )


async def _run(
    settings: Settings, req, workflow_id: str | None, as_json: bool, no_wait: bool, streamed: bool = False
) -> TaskResult | None:
    for line in await bring_up(settings):
        if not as_json and (line.startswith("warning") or "started" in line or "crashed" in line):
            err(line)
    client = await temporal_client(settings)
    handle = await runs.start_run(client, settings, req, workflow_id)
    ui = settings.ui_url(handle.id)
    run_id = handle.result_run_id or handle.run_id or ""
    if no_wait:
        if as_json:
            echo_json({"run_id": run_id, "workflow_id": handle.id, "status": "running", "ui_url": ui})
        else:
            click.echo(f"started {handle.id} (run {run_id})\n  {ui}")
        return None
    if not as_json:
        click.echo(f"run {handle.id} · {ui}")
        if not req.routing.frontier.available:
            err("note: ANTHROPIC_API_KEY is not set: high-stakes steps run on the open model")
    steps = _StepPrinter(handle.id, quiet=as_json)
    watchers = [asyncio.create_task(steps.watch(handle))]
    answer = AnswerPrinter(steps.rest) if streamed else None
    answer_task = asyncio.create_task(answer.watch(client, handle.id)) if answer is not None else None
    if answer_task is not None:
        watchers.append(answer_task)
    ended = False
    if settings.manages_temporal:
        watchers.append(asyncio.create_task(_watch_services(settings, handle.id)))
    try:
        result = await _first(runs.wait_result(handle), watchers)
        ended = True
    except runs.RunFailed as e:
        if answer is not None and answer.shown:
            click.echo("")  # the partial answer's line ends before the failure is told
        info = await runs.describe_run(client, handle.id)
        if as_json:
            echo_json(run_dict(handle.id, run_id, e.status, ui, progress=info.progress, error=str(e)))
        elif info.progress:
            steps.rest(info.progress.steps, info.progress.total_steps)
        raise Failed(f"run {handle.id} {e.status}: {e}") from None
    finally:
        for w in watchers:
            if not (ended and w is answer_task):  # the answer's stream may still be a poll behind the result
                w.cancel()
    if as_json:
        echo_json(run_dict(handle.id, run_id, "completed", ui, result=result))
        return result
    steps.rest(result.steps, len(result.steps))
    lines = result_lines(result, steps=False)
    if answer is not None and answer_task is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(answer_task, 5)
        if answer.finish(result.answer):
            lines = [line for line in lines[:-1] if line]  # the answer is on the screen: the rest, after it
    for line in lines:
        click.echo(line)
    return result


async def _first(awaitable, watchers: list[asyncio.Task]):
    """``awaitable``'s result, unless a watcher raises first (a crashed service the run cannot do without)."""
    main = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait([main, *watchers], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not main and (error := task.exception()) is not None:
                raise error
        return await main
    finally:
        if not main.done():
            main.cancel()


class _StepPrinter:
    """Prints each step once: as it finishes while the run goes on, or at the end if it finished between looks;
    and each wait for approval as it starts (on stderr, with --json too: a person must see it)."""

    def __init__(self, workflow_id: str, quiet: bool) -> None:
        self.workflow_id = workflow_id
        self.quiet = quiet
        self.shown: set[int] = set()
        self.waits_shown: set[int] = set()

    def waits(self, p: Progress) -> None:
        for s in p.steps:
            if s.index in p.awaiting_approval and s.index not in self.waits_shown:
                self.waits_shown.add(s.index)
                for line in waiting_lines(s, p.total_steps, self.workflow_id):
                    err(line)

    def rest(self, steps, total: int) -> None:
        for s in steps:
            if s.status in ("ok", "tool_error", "failed", "skipped") and s.index not in self.shown:
                self.shown.add(s.index)
                if not self.quiet:
                    err(step_line(s, total))

    async def watch(self, handle) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                p = await handle.query(PROGRESS_QUERY, result_type=Progress)
            except Exception:
                continue
            self.rest(p.steps, p.total_steps)
            self.waits(p)


async def _watch_services(settings: Settings, workflow_id: str) -> None:
    """While a run waits: a local service that crashes is reported, and started again once.

    A second crash ends the wait (exit 1) with the report; the run itself is durable and goes on
    when its services are back.
    """
    restarted: set[str] = set()
    while True:
        await asyncio.sleep(SERVICE_CHECK_SECONDS)
        crashed = await asyncio.to_thread(services.crashed_services, settings)
        if not crashed:
            continue
        for c in crashed:
            err(services.crash_report(c))
        again = [c.name for c in crashed if c.name in restarted]
        if again:
            raise ServiceError(
                f"{', '.join(again)} crashed again; run {workflow_id} waits, durable, until it is back: "
                f"fix it (see above, or `stakeflow doctor`), then `stakeflow up` and `stakeflow result {workflow_id} --wait`"
            )
        restarted.update(c.name for c in crashed)
        for line in await bring_up(settings):
            if "started" in line:
                err(line)


def _echo_run(settings: Settings, info: runs.RunInfo) -> None:
    echo_json(
        run_dict(
            info.workflow_id,
            info.run_id,
            info.status,
            settings.ui_url(info.workflow_id),
            result=info.result,
            progress=info.progress,
            error=info.error,
        )
    )


@click.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@friendly
def status(run_id: str, as_json: bool) -> None:
    """Progress of a run: which step, which route, done or failed."""
    settings = current_settings()

    async def go() -> None:
        client, found = await open_run(settings, run_id)
        info = await runs.describe_run(client, found.workflow_id)
        if as_json:
            _echo_run(settings, info)
            return
        click.echo(f"{info.workflow_id}: {info.status}")
        for crashed in services.crashed_services(settings):
            click.echo(services.crash_report(crashed))
        if info.progress:
            for line in progress_lines(info.progress, info.workflow_id):
                click.echo(line)
        if info.error:
            click.echo(f"  error: {info.error}")
        click.echo(f"  {settings.ui_url(info.workflow_id)}")

    run_async(go())


@click.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("--wait", is_flag=True, help="Wait for a running run to finish.")
@friendly
def result(run_id: str, as_json: bool, wait: bool) -> None:
    """The answer and step records of a finished run."""
    settings = current_settings()

    async def go() -> None:
        client, found = await open_run(settings, run_id)
        wf_id = found.workflow_id
        info = await runs.describe_run(client, wf_id)
        if info.status == "running" and wait:
            try:
                await runs.wait_result(client.get_workflow_handle(wf_id, result_type=TaskResult))
            except runs.RunFailed:
                pass
            info = await runs.describe_run(client, wf_id)
        if as_json:
            _echo_run(settings, info)
        elif info.result:
            for line in result_lines(info.result):
                click.echo(line)
        if info.status == "running":
            raise click.ClickException(f"run {wf_id} is still running: `stakeflow status {wf_id}`, or add --wait")
        if info.status != "completed":
            raise Failed(f"run {wf_id} {info.status}: {info.error or ''}".rstrip(": "))

    run_async(go())


@click.command()
@click.argument("run_id")
@friendly
def cancel(run_id: str) -> None:
    """Cancel a run."""
    settings = current_settings()

    async def go() -> None:
        client, found = await open_run(settings, run_id)
        await runs.cancel_run(client, found.workflow_id)
        click.echo(f"cancel requested for {found.workflow_id}")

    run_async(go())
