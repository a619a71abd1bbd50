"""Human-in-the-loop and run listing commands: `approve`, `reject`, `list`, `admin`.

`approve` and `reject` take a run's workflow id or its Temporal run id (`runs.resolve_run`).
"""

from __future__ import annotations

import getpass

import click

from stakeflow.cli.common import current_settings, echo_json, friendly, open_run, run_async, temporal_client
from stakeflow.core.contracts import SEARCH_ATTRIBUTES
from stakeflow.services import runs
from stakeflow.temporal import namespace


def _decide(run_id: str, step: int, approve: bool, note: str, calls_json: str | None = None) -> None:
    settings = current_settings()
    tool_calls = _parse_calls(calls_json) if calls_json else None

    async def go() -> None:
        client, found = await open_run(settings, run_id)
        wf_id = found.workflow_id
        record = await runs.decide_step(client, wf_id, step, approve, note, getpass.getuser(), tool_calls)
        click.echo(
            f"step {step} of {wf_id} {record.decision} by {record.by}" + (f": {record.note}" if record.note else "")
        )

    run_async(go())


@click.command()
@click.argument("run_id")
@click.argument("step", type=int)
@click.option("--note", default="", help="Why (recorded in the result and the trace).")
@click.option(
    "--calls",
    "calls_json",
    default=None,
    help='Approve these calls instead, as JSON: [{"tool": "write_file", "args": {...}}] (same tools).',
)
@friendly
def approve(run_id: str, step: int, note: str, calls_json: str | None) -> None:
    """Let a step that waits for approval act (as it is, or with the arguments you give)."""
    _decide(run_id, step, True, note, calls_json)


def _parse_calls(text: str) -> list:
    from pydantic import TypeAdapter, ValidationError

    from stakeflow.agents.types import ToolCall
    from stakeflow.core.errors import InputError

    try:
        return TypeAdapter(list[ToolCall]).validate_json(text)
    except ValidationError as e:
        raise InputError(
            f"--calls is not a JSON list of calls ({e.errors()[0]['msg']}): write it like "
            '\'[{"tool": "write_file", "args": {"path": "a.txt", "content": "x"}}]\''
        ) from None


@click.command()
@click.argument("run_id")
@click.argument("step", type=int)
@click.option("--note", required=True, help="Why (required; recorded in the result and the trace).")
@friendly
def reject(run_id: str, step: int, note: str) -> None:
    """Skip a step that waits for approval; the run goes on without it."""
    _decide(run_id, step, False, note)


@click.command("list")
@click.option("--query", default=None, help='Visibility query, e.g. "StakeflowCostUsd > 0.01".')
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
@friendly
def list_runs(query: str | None, limit: int, as_json: bool) -> None:
    """List runs, newest first, through Temporal's visibility query language."""
    settings = current_settings()

    async def go() -> list[dict]:
        return await runs.list_runs(await temporal_client(settings), query, limit)

    rows = run_async(go())
    if as_json:
        echo_json(rows)
        return
    from stakeflow.traces import format_table

    columns = [
        "workflow_id",
        "status",
        "started",
        "stakes",
        "source",
        "open_steps",
        "frontier_steps",
        "cost_usd",
        "awaiting_approval",
    ]
    click.echo(format_table(columns, [[r[c] for c in columns] for r in rows]))


@click.group()
def admin() -> None:
    """Operator commands for a Temporal cluster stakeflow did not start."""


@admin.command("setup-search-attributes")
@friendly
def setup_search_attributes() -> None:
    """Register stakeflow's search attributes in the namespace (idempotent)."""
    settings = current_settings()

    async def go() -> list[str]:
        return await namespace.register(await temporal_client(settings), settings.temporal_namespace)

    added = run_async(go())
    if added:
        click.echo(f"added {', '.join(added)} to namespace {settings.temporal_namespace}")
    else:
        click.echo(f"all {len(SEARCH_ATTRIBUTES)} search attributes already present")
