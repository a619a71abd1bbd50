"""The local stack and the long-running processes: `up`, `down`, `doctor`, `worker`, `models`, `serve`."""

from __future__ import annotations

import asyncio
import logging
import signal

import click

from stakeflow.cli.common import Failed, current_settings, echo_json, err, friendly, run_async, temporal_client
from stakeflow.config import Settings
from stakeflow.core.contracts import ROLES, QueueRole, queue_name
from stakeflow.core.errors import EndpointError, ServiceError
from stakeflow.local import services
from stakeflow.services import runs
from stakeflow.temporal.cluster import CODEC_PORT, WEBHOOK_PORT

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


async def bring_up(settings: Settings, *, start_worker: bool = True) -> list[str]:
    """Start what is missing: dev server, embedded model, worker. Returns what happened.

    A service that crashed since it was started is reported (how it ended, its log, the fix) and
    started again; one that crashes while starting fails with that report.
    """
    from stakeflow.endpoints import probe_models

    lines = services.ensure_temporal(settings)
    client = await temporal_client(settings)
    lines.append(f"temporal: {settings.target.describe()}")
    if settings.manages_temporal:
        # A dev server database from an earlier release lacks attributes added since (start-dev only
        # registers them when it creates the database); workers would refuse it.
        from stakeflow.temporal import namespace

        added = await namespace.register(client, settings.temporal_namespace)
        if added:
            lines.append(f"temporal: registered search attributes {', '.join(added)}")
    if settings.embedded:
        lines += services.ensure_embedded_model(settings)
    else:
        probe = probe_models(settings)
        if not probe.ok:
            raise EndpointError(f"open model endpoint {probe.detail}: {probe.fix}")
        lines.append(f"open model: {settings.open_url} ({settings.dialect}) {probe.detail}")
    if start_worker and settings.manages_temporal:
        # The server lists a dead worker's poller for a while: a crash recorded by its supervisor wins.
        crashed = services.worker_crashed(settings)
        if not crashed and await runs.has_workflow_poller(client, settings):
            lines.append("worker: polling")
        else:
            lines += await _start_worker(client, settings)
    elif not await runs.has_workflow_poller(client, settings):
        lines.append(
            f"warning: no worker polls {queue_name('workflows', settings.queue_prefix)} on {settings.address}: "
            "start one with `stakeflow worker`"
        )
    return lines


async def _start_worker(client, settings: Settings, wait_s: float = 30.0) -> list[str]:
    pid, lines = services.start_worker(settings)
    deadline = asyncio.get_running_loop().time() + wait_s
    while not await runs.has_workflow_poller(client, settings):
        services.worker_alive(settings, pid)
        if asyncio.get_running_loop().time() > deadline:
            raise ServiceError(
                f"the worker (pid {pid}) did not poll within {wait_s:g}s: see {settings.log_dir / 'worker.log'}"
            )
        await asyncio.sleep(0.1)
    lines.append(f"worker: started (pid {pid}), log {settings.log_dir / 'worker.log'}")
    return lines


@click.command()
@friendly
def up() -> None:
    """Start the Temporal dev server, the embedded open model and a worker, in the background."""
    settings = current_settings()
    for line in run_async(bring_up(settings)):
        click.echo(line)
    click.echo(f"Web UI: {settings.ui_url()}")


@click.command()
@friendly
def down() -> None:
    """Stop what `stakeflow up` started."""
    stopped = services.stop_all(current_settings())
    click.echo("stopped " + ", ".join(stopped) if stopped else "nothing was running")


@click.command()
@click.option(
    "--queues",
    "queues_csv",
    default=",".join(ROLES),
    show_default=True,
    help="Comma-separated queue roles to poll: workflows, open, frontier, tools, train.",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=None,
    help="Worker processes to run, one core each (default: [workers] processes, 1).",
)
@friendly
def worker(queues_csv: str, processes: int | None) -> None:
    """Run a worker in the foreground until SIGTERM (what production runs)."""
    settings = current_settings()
    asked = [q.strip() for q in queues_csv.split(",") if q.strip()]
    unknown = [r for r in asked if r not in ROLES]
    if unknown or not asked:
        raise click.ClickException(f"unknown queue role(s) {', '.join(unknown) or '(none)'}: use {', '.join(ROLES)}")
    roles = [r for r in asked if r in ROLES]  # all of them (checked above), typed as queue roles
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    count = processes or settings.workers.processes
    if count > 1:
        from stakeflow.workers.processes import run_processes

        err(f"starting {count} worker processes (SIGTERM stops them all)")
        code = run_processes(roles, count)
        if code:
            raise Failed(f"a worker process ended with exit code {code}, so the others were stopped: see its log above")
        err("worker processes stopped")
        return
    run_async(_worker(settings, roles))


async def _worker(settings: Settings, roles: list[QueueRole]) -> None:
    from stakeflow.temporal import metrics
    from stakeflow.temporal.connection import connect
    from stakeflow.temporal.telemetry import setup_tracing, shutdown
    from stakeflow.workers.main import Holders, run_workers

    holders = Holders(settings)  # a Python tool that cannot be one is refused before anything connects
    runtime = metrics.start(settings)  # before the client: the SDK's metrics come from the client's runtime
    setup_tracing(settings, "worker", extra=[metrics.SpanMetrics(runtime)] if runtime else None)
    client = await connect(settings, runtime=runtime)
    if runtime is not None:
        err(f"metrics on http://{settings.metrics_host}:{settings.metrics_port}/metrics")
    await _check_search_attributes(client, settings, roles)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    names = ", ".join(queue_name(r, settings.queue_prefix) for r in roles)
    err(f"worker polling {names} on {settings.target.describe()} (SIGTERM to stop)")
    try:
        await run_workers(client, settings, roles, stop, holders)
    finally:
        shutdown()  # flush buffered spans to the trace store
    err("worker stopped")


async def _check_search_attributes(client, settings: Settings, roles: list[QueueRole]) -> None:
    """A workflow worker on a namespace without stakeflow's search attributes (or with mistyped ones) would hang runs."""
    from temporalio.service import RPCError

    from stakeflow.temporal import namespace

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


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@friendly
def doctor(as_json: bool) -> None:
    """Check every part a run needs; one line each, with the fix. Exit 1 when something is broken."""
    from stakeflow.services.doctor import run_checks

    checks = run_checks(current_settings())
    if as_json:
        echo_json([c.as_dict() for c in checks])
    else:
        for c in checks:
            click.echo(c.line())
    broken = [c.name for c in checks if c.status == "fail"]
    if broken:
        raise Failed(f"{len(broken)} of {len(checks)} checks failed: {', '.join(broken)}")


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly
def models(ctx: click.Context, as_json: bool) -> None:
    """Which model endpoints are configured and reachable, with their model ids (and LoRA adapters).

    `stakeflow models lora load|unload` manages adapters on a vLLM server.
    """
    if ctx.invoked_subcommand is not None:
        return
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
        for adapter in e.get("adapters") or []:
            click.echo(f"{'':9} adapter {adapter['id']} (LoRA on {adapter['parent']})")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=WEBHOOK_PORT, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on."
)
@friendly
def serve(host: str, port: int) -> None:
    """Run the webhook server: signed POST /hooks/<name> deliveries start runs ([hooks.<name>] in stakeflow.toml)."""
    import uvicorn

    from stakeflow.webhooks import create_app

    settings = current_settings()
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    if not settings.hooks:
        err(f"warning: no [hooks.<name>] tables in {settings.config_path}: every delivery will answer 404")
    uvicorn.run(create_app(settings), host=host, port=port, access_log=False, log_config=None)


@click.command("codec-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=CODEC_PORT, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@friendly
def codec_server(host: str, port: int) -> None:
    """Serve Temporal's remote codec endpoint (/encode, /decode) so the Web UI and CLI can show decrypted payloads."""
    import uvicorn

    from stakeflow.codec_server import create_app, describe

    settings = current_settings()
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    app = create_app(settings)
    for line in describe(settings, host, port):
        err(line)
    uvicorn.run(app, host=host, port=port, access_log=False, log_config=None)


@click.command("codec-key")
@click.option("--id", "key_id", default=None, help="The key's id (default: today's date, e.g. 2026-12-02).")
def codec_key(key_id: str | None) -> None:
    """Print a new AES-256 key as a key-file line: append it to STAKEFLOW_CODEC_KEYS_FILE to rotate to it."""
    import datetime

    from stakeflow.temporal.codec import new_key_line

    click.echo(new_key_line(key_id or datetime.date.today().isoformat()))
