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

from stakeflow import services, tasks
from stakeflow.cli_common import Failed, current_settings, echo_json, err, friendly
from stakeflow.cli_approvals import admin, approve, list_runs, reject
from stakeflow.cli_costs import costs, prices, sql, trace
from stakeflow.render import progress_lines, result_lines, run_dict, step_line
from stakeflow.settings import Settings
from workers.queues import ROLES, queue_name

POLL_SECONDS = 0.5


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stakeflow")
def cli() -> None:
    """Durable hybrid agents: each step on the open model or the frontier, by its stakes."""


# --- the local stack -----------------------------------------------------------------------


async def _bring_up(settings: Settings, *, start_worker: bool = True) -> list[str]:
    """Start what is missing: dev server, embedded model, worker. Returns what happened."""
    lines = [services.ensure_temporal(settings)]
    model_line = services.ensure_embedded_model(settings)
    if model_line:
        lines.append(model_line)
    else:
        ids = tasks.check_open_endpoint(settings)
        lines.append(f"open model: {settings.open_url} ({settings.dialect}) serving {ids}")
    from stakeflow.connection import connect

    client = await connect(settings)
    if start_worker and settings.manages_temporal:
        has = await tasks.has_workflow_poller(client, settings)
        if has:
            lines.append("worker: polling")
        else:
            lines.append(await asyncio.to_thread(services.ensure_worker, settings, lambda: _poller_sync(settings)))
    elif not await tasks.has_workflow_poller(client, settings):
        lines.append(
            f"warning: no worker polls {queue_name('workflows', settings.queue_prefix)} on {settings.address}: "
            "start one with `stakeflow worker`"
        )
    return lines


def _poller_sync(settings: Settings) -> bool:
    async def check() -> bool:
        from stakeflow.connection import connect

        return await tasks.has_workflow_poller(await connect(settings), settings)

    return asyncio.run(check())


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
        if not as_json and (line.startswith("warning") or "started" in line):
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
    watcher = None if as_json else asyncio.create_task(_watch(handle))
    try:
        result = await tasks.wait_result(handle)
    except tasks.RunFailed as e:
        info = await tasks.describe_run(client, handle.id)
        if as_json:
            echo_json(run_dict(handle.id, run_id, e.status, ui, progress=info.progress, error=str(e)))
            raise Failed(f"run {handle.id} {e.status}: {e}") from None
        raise Failed(f"run {handle.id} {e.status}: {e}") from None
    finally:
        if watcher:
            watcher.cancel()
    if as_json:
        echo_json(run_dict(handle.id, run_id, "completed", ui, result=result))
    else:
        for line in result_lines(result):
            click.echo(line)


async def _watch(handle) -> None:
    """Print each step as it finishes, while the run goes on."""
    from agents.types import Progress

    shown: set[int] = set()
    while True:
        await asyncio.sleep(POLL_SECONDS)
        try:
            p = await handle.query("progress", result_type=Progress)
        except Exception:
            continue
        for s in p.steps:
            if s.status in ("ok", "tool_error", "failed", "skipped") and s.index not in shown:
                shown.add(s.index)
                err(step_line(s, p.total_steps))


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
    """A workflow worker on a namespace without stakeflow's search attributes would hang runs."""
    from temporalio.service import RPCError

    from stakeflow import search_attributes
    from stakeflow.errors import ServiceError

    if "workflows" not in roles:
        return
    try:
        absent = await search_attributes.missing(client, settings.temporal_namespace)
    except RPCError as e:  # e.g. no operator permission on a hosted namespace: say so, go on
        err(f"warning: cannot check search attributes ({e.message}); if runs hang, run "
            "`stakeflow admin setup-search-attributes`")
        return
    if absent:
        raise ServiceError(
            f"namespace {settings.temporal_namespace} lacks search attributes {', '.join(absent)}: "
            "run `stakeflow admin setup-search-attributes` (or see deploy/README.md)"
        )


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
