"""The `stakeflow` command. Commands parse, call a service function, print."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from typing import Any

import click

from stakeflow import tasks
from stakeflow.core.errors import EndpointError, ServiceError
from stakeflow.local import services
from stakeflow.cli_common import Failed, current_settings, echo_json, err, friendly
from stakeflow.cli_approvals import admin, approve, list_runs, reject
from stakeflow.cli_costs import costs, prices, sql, trace
from stakeflow.render import progress_lines, result_lines, run_dict, step_line
from stakeflow.settings import Settings
from stakeflow.core.contracts import PROGRESS_QUERY, ROLES, queue_name

POLL_SECONDS = 0.5


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stakeflow")
def cli() -> None:
    """Durable hybrid agents: each step on the open model or the frontier, by its stakes."""


# --- the local stack -----------------------------------------------------------------------


async def _bring_up(settings: Settings, *, start_worker: bool = True) -> list[str]:
    """Start what is missing: dev server, embedded model, worker. Returns what happened.

    A service that crashed since it was started is reported (how it ended, its log, the fix) and
    started again; one that crashes while starting fails with that report.
    """
    from stakeflow.connection import connect
    from stakeflow.endpoints import probe_models

    lines = services.ensure_temporal(settings)
    if settings.embedded:
        lines += services.ensure_embedded_model(settings)
    else:
        probe = probe_models(settings)
        if not probe.ok:
            raise EndpointError(f"open model endpoint {probe.detail}: {probe.fix}")
        lines.append(f"open model: {settings.open_url} ({settings.dialect}) {probe.detail}")
    client = await connect(settings)
    if start_worker and settings.manages_temporal:
        # The server lists a dead worker's poller for a while: a crash recorded by its supervisor wins.
        crashed = services.worker_crashed(settings)
        if not crashed and await tasks.has_workflow_poller(client, settings):
            lines.append("worker: polling")
        else:
            lines += await _start_worker(client, settings)
    elif not await tasks.has_workflow_poller(client, settings):
        lines.append(
            f"warning: no worker polls {queue_name('workflows', settings.queue_prefix)} on {settings.address}: "
            "start one with `stakeflow worker`"
        )
    return lines


async def _start_worker(client, settings: Settings, wait_s: float = 30.0) -> list[str]:
    pid, lines = services.start_worker(settings)
    deadline = asyncio.get_running_loop().time() + wait_s
    while not await tasks.has_workflow_poller(client, settings):
        services.worker_alive(settings, pid)
        if asyncio.get_running_loop().time() > deadline:
            raise ServiceError(f"the worker (pid {pid}) did not poll within {wait_s:g}s: see {settings.log_dir / 'worker.log'}")
        await asyncio.sleep(0.1)
    lines.append(f"worker: started (pid {pid}), log {settings.log_dir / 'worker.log'}")
    return lines


@cli.command()
@friendly
def up() -> None:
    """Start the Temporal dev server, the embedded open model and a worker, in the background."""
    settings = current_settings()
    for line in asyncio.run(_bring_up(settings)):
        click.echo(line)
    click.echo(f"Web UI: {settings.ui_url()}")


@cli.command()
@friendly
def down() -> None:
    """Stop what `stakeflow up` started."""
    stopped = services.stop_all(current_settings())
    click.echo("stopped " + ", ".join(stopped) if stopped else "nothing was running")


# --- runs ----------------------------------------------------------------------------------


@cli.command()
@click.argument("goal")
@click.option("--stakes", default="auto", show_default=True, type=click.Choice(["auto", "low", "high"]),
              help="Override the policy's stakes for every step.")
@click.option("--sensitivity", default="public", show_default=True, type=click.Choice(["public", "private"]),
              help="private: no data of this run ever goes to the frontier API.")
@click.option("--tools", "tools_csv", default=None, help="Comma-separated tools the run may use (default: all enabled).")
@click.option("--workspace", type=click.Path(file_okay=False), default=None,
              help="Folder the file and SQL tools work in (default: $STAKEFLOW_HOME/workspace).")
@click.option("--max-steps", type=click.IntRange(1, 200), default=None, help="Most steps the plan may have.")
@click.option("--budget-tokens", type=click.IntRange(1), default=None, help="Fail the run past this many tokens.")
@click.option("--id", "workflow_id", default=None, help="Workflow id to use (default: task-<random>).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--no-wait", is_flag=True, help="Print the ids and return at once.")
@click.option("--auto-approve", is_flag=True, help="Approve high-risk steps without waiting (recorded as such).")
@friendly
def run(goal: str, stakes: str, sensitivity: str, tools_csv: str | None, workspace: str | None,
        max_steps: int | None, budget_tokens: int | None, workflow_id: str | None, as_json: bool,
        no_wait: bool, auto_approve: bool) -> None:
    """Run GOAL as a durable agent task."""
    settings = current_settings()
    tools = [t.strip() for t in tools_csv.split(",") if t.strip()] if tools_csv is not None else None
    req = tasks.build_request(settings, goal, stakes=stakes, sensitivity=sensitivity, tools=tools,
                              workspace=workspace, max_steps=max_steps, budget_tokens=budget_tokens,
                              auto_approve=auto_approve)
    asyncio.run(_run(settings, req, workflow_id, as_json, no_wait))


async def _run(settings: Settings, req, workflow_id: str | None, as_json: bool, no_wait: bool) -> None:
    from stakeflow.connection import connect

    for line in await _bring_up(settings):
        if not as_json and (line.startswith("warning") or "started" in line or "crashed" in line):
            err(line)
    client = await connect(settings)
    handle = await tasks.start_run(client, settings, req, workflow_id)
    ui = settings.ui_url(handle.id)
    run_id = handle.result_run_id or handle.run_id or ""
    if no_wait:
        if as_json:
            echo_json({"run_id": run_id, "workflow_id": handle.id, "status": "running", "ui_url": ui})
        else:
            click.echo(f"started {handle.id} (run {run_id})\n  {ui}")
        return
    if not as_json:
        click.echo(f"run {handle.id} · {ui}")
        if not req.routing.frontier.available:
            err("note: ANTHROPIC_API_KEY is not set: high-stakes steps run on the open model")
    steps = _StepPrinter(quiet=as_json)
    watchers = [asyncio.create_task(steps.watch(handle))]
    if settings.manages_temporal:
        watchers.append(asyncio.create_task(_watch_services(settings, handle.id)))
    try:
        result = await _first(tasks.wait_result(handle), watchers)
    except tasks.RunFailed as e:
        info = await tasks.describe_run(client, handle.id)
        if as_json:
            echo_json(run_dict(handle.id, run_id, e.status, ui, progress=info.progress, error=str(e)))
        elif info.progress:
            steps.rest(info.progress.steps, info.progress.total_steps)
        raise Failed(f"run {handle.id} {e.status}: {e}") from None
    finally:
        for w in watchers:
            w.cancel()
    if as_json:
        echo_json(run_dict(handle.id, run_id, "completed", ui, result=result))
        return
    steps.rest(result.steps, len(result.steps))
    for line in result_lines(result, steps=False):
        click.echo(line)


async def _first(awaitable, watchers: list[asyncio.Task]):
    """``awaitable``'s result, unless a watcher raises first (a crashed service the run cannot do without)."""
    main = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait([main, *watchers], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not main and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return await main
    finally:
        if not main.done():
            main.cancel()


class _StepPrinter:
    """Prints each step once: as it finishes while the run goes on, or at the end if it finished between looks."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.shown: set[int] = set()

    def rest(self, steps, total: int) -> None:
        for s in steps:
            if s.status in ("ok", "tool_error", "failed", "skipped") and s.index not in self.shown:
                self.shown.add(s.index)
                if not self.quiet:
                    err(step_line(s, total))

    async def watch(self, handle) -> None:
        from agents.types import Progress

        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                p = await handle.query(PROGRESS_QUERY, result_type=Progress)
            except Exception:
                continue
            self.rest(p.steps, p.total_steps)


SERVICE_CHECK_SECONDS = 2.0


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
        for line in await _bring_up(settings):
            if "started" in line:
                err(line)


def _client(settings: Settings):
    from stakeflow.connection import connect

    return connect(settings)


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@friendly
def status(run_id: str, as_json: bool) -> None:
    """Progress of a run: which step, which route, done or failed."""
    settings = current_settings()

    async def go() -> None:
        info = await tasks.describe_run(await _client(settings), run_id)
        if as_json:
            echo_json(run_dict(info.workflow_id, info.run_id, info.status, settings.ui_url(info.workflow_id),
                                result=info.result, progress=info.progress, error=info.error))
            return
        click.echo(f"{info.workflow_id}: {info.status}")
        for crashed in services.crashed_services(settings):
            click.echo(services.crash_report(crashed))
        if info.progress:
            for line in progress_lines(info.progress):
                click.echo(line)
        if info.error:
            click.echo(f"  error: {info.error}")
        click.echo(f"  {settings.ui_url(info.workflow_id)}")

    asyncio.run(go())


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("--wait", is_flag=True, help="Wait for a running run to finish.")
@friendly
def result(run_id: str, as_json: bool, wait: bool) -> None:
    """The answer and step records of a finished run."""
    settings = current_settings()

    async def go() -> None:
        client = await _client(settings)
        info = await tasks.describe_run(client, run_id)
        if info.status == "running" and wait:
            try:
                await tasks.wait_result(client.get_workflow_handle(run_id, result_type=tasks.TaskResult))
            except tasks.RunFailed:
                pass
            info = await tasks.describe_run(client, run_id)
        ui = settings.ui_url(info.workflow_id)
        if as_json:
            echo_json(run_dict(info.workflow_id, info.run_id, info.status, ui, result=info.result,
                                progress=info.progress, error=info.error))
        elif info.result:
            for line in result_lines(info.result):
                click.echo(line)
        if info.status == "running":
            raise click.ClickException(f"run {run_id} is still running: `stakeflow status {run_id}`, or add --wait")
        if info.status != "completed":
            raise Failed(f"run {run_id} {info.status}: {info.error or ''}".rstrip(": "))

    asyncio.run(go())


@cli.command()
@click.argument("run_id")
@friendly
def cancel(run_id: str) -> None:
    """Cancel a run."""
    settings = current_settings()

    async def go() -> None:
        await tasks.cancel_run(await _client(settings), run_id)
        click.echo(f"cancel requested for {run_id}")

    asyncio.run(go())


# --- workers and models --------------------------------------------------------------------


@cli.command()
@click.option("--queues", "queues_csv", default=",".join(ROLES), show_default=True,
              help="Comma-separated queue roles to poll: workflows, open, frontier, tools.")
@friendly
def worker(queues_csv: str) -> None:
    """Run a worker in the foreground until SIGTERM (what production runs)."""
    settings = current_settings()
    roles = [q.strip() for q in queues_csv.split(",") if q.strip()]
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise click.ClickException(f"unknown queue role(s) {', '.join(unknown) or '(none)'}: use {', '.join(ROLES)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_worker(settings, roles))


async def _worker(settings: Settings, roles: list[str]) -> None:
    from stakeflow.connection import connect
    from stakeflow.telemetry import setup_tracing, shutdown
    from workers.main import run_workers

    setup_tracing(settings, "worker")
    client = await connect(settings)
    await _check_search_attributes(client, settings, roles)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    names = ", ".join(queue_name(r, settings.queue_prefix) for r in roles)  # type: ignore[arg-type]
    err(f"worker polling {names} on {settings.address} (SIGTERM to stop)")
    try:
        await run_workers(client, settings, roles, stop)  # type: ignore[arg-type]
    finally:
        shutdown()  # flush buffered spans to the trace store
    err("worker stopped")


async def _check_search_attributes(client, settings: Settings, roles: list[str]) -> None:
    """A workflow worker on a namespace without stakeflow's search attributes (or with mistyped ones) would hang runs."""
    from temporalio.service import RPCError

    from stakeflow import namespace

    if "workflows" not in roles or not settings.check_search_attributes:
        return
    ns = settings.temporal_namespace
    try:
        wrong = await namespace.problems(client, ns)
    except RPCError as e:
        raise ServiceError(
            f"cannot check stakeflow's search attributes on namespace {ns} ({e.message}): a missing one makes runs "
            "hang. Register them (`stakeflow admin setup-search-attributes`, or deploy/README.md for a cluster "
            "where you lack operator rights), then set STAKEFLOW_CHECK_SEARCH_ATTRIBUTES=false to skip this check"
        ) from None
    if wrong:
        raise ServiceError(
            f"namespace {ns} has wrong search attributes ({'; '.join(wrong)}): "
            "run `stakeflow admin setup-search-attributes` (or see deploy/README.md)"
        )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@friendly
def doctor(as_json: bool) -> None:
    """Check every part a run needs; one line each, with the fix. Exit 1 when something is broken."""
    from stakeflow.doctor import run_checks

    checks = run_checks(current_settings())
    if as_json:
        echo_json([c.as_dict() for c in checks])
    else:
        for c in checks:
            click.echo(c.line())
    broken = [c.name for c in checks if c.status == "fail"]
    if broken:
        raise Failed(f"{len(broken)} of {len(checks)} checks failed: {', '.join(broken)}")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@friendly
def models(as_json: bool) -> None:
    """Which model endpoints are configured and reachable, with their model ids."""
    from stakeflow.endpoints import describe_endpoints

    report = describe_endpoints(current_settings())
    if as_json:
        echo_json(report)
        return
    for e in report:
        state = "reachable" if e["reachable"] else "unreachable"
        if not e["configured"]:
            state = "not configured"
        click.echo(f"{e['route']:9} {state:15} {e['url'] or '-'}  model {e['model']}  {e['detail']}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@friendly
def serve(host: str, port: int) -> None:
    """Run the webhook server: signed POST /hooks/<name> deliveries start runs ([hooks.<name>] in stakeflow.toml)."""
    import uvicorn

    from stakeflow.webhooks import create_app

    settings = current_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.hooks:
        err(f"warning: no [hooks.<name>] tables in {settings.config_path}: every delivery will answer 404")
    uvicorn.run(create_app(settings), host=host, port=port, access_log=False, log_config=None)


for command in (trace, costs, sql, prices, approve, reject, list_runs, admin):
    cli.add_command(command)


def main() -> None:
    """Console entry point. Ends with os._exit: temporalio can crash at interpreter exit (sdk-python#300)."""
    code = 0
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err("aborted")
        code = 1
    except click.ClickException as e:
        e.show()
        code = e.exit_code
    except click.exceptions.Exit as e:
        code = e.exit_code
    except KeyboardInterrupt:
        code = 130
    except Exception as e:  # the last guard: one line, unless debugging
        if os.environ.get("STAKEFLOW_DEBUG") == "1":
            raise
        err(f"Error: unexpected {type(e).__name__}: {e} (STAKEFLOW_DEBUG=1 shows the traceback)")
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
