"""Cost review commands: `trace`, `costs`, `sql`, `prices`. Each reads the DuckDB trace store.

`trace` and `costs --run` take a run's workflow id or its Temporal run id; how an id is found, and
what happens when Temporal is unreachable, is in `stakeflow.services.reports`.
"""

from __future__ import annotations

import click

from stakeflow.cli.common import current_settings, echo_json, friendly, run_async
from stakeflow.services.reports import cost_review, open_store, parse_since, settle, traced_workflow_id


@click.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@friendly
def trace(run_id: str, as_json: bool) -> None:
    """The span tree of one run: workflow, steps, model and tool calls, with tokens and cost."""
    from stakeflow.traces import render_tree, trace_tree

    settings = current_settings()
    store = open_store(settings)
    workflow_id = run_async(traced_workflow_id(settings, store, run_id))
    run_async(settle(store, workflow_id))  # a run just ended: its last calls' spans
    rows = trace_tree(store, workflow_id)
    if as_json:
        echo_json(rows)
    else:
        click.echo(render_tree(rows))


@click.command()
@click.option("--since", default=None, help="Only spans newer than this: 30m, 24h, 7d, 2w (default: all).")
@click.option(
    "--by",
    "by",
    default="model",
    show_default=True,
    help="Breakdown: run, model, route, stakes, tool, day, source or agent.",
)
@click.option("--run", "run_id", default=None, help="One run's bill (its workflow id or Temporal run id).")
@click.option("--agent", default=None, help="Only the model calls of this named agent's runs.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "as_csv", is_flag=True)
@friendly
def costs(since: str | None, by: str, run_id: str | None, agent: str | None, as_json: bool, as_csv: bool) -> None:
    """Totals and breakdowns, with what the frontier would have cost and what the open model saved."""
    from stakeflow.traces import format_table, to_csv

    settings = current_settings()
    window = parse_since(since)
    store = open_store(settings)
    if run_id is not None:
        run_id = run_async(traced_workflow_id(settings, store, run_id))
        run_async(settle(store, run_id))
    report = cost_review(settings, store, window, by, run_id, agent)
    if as_json:
        echo_json(report)
        return
    rows = report["rows"]
    columns = list(rows[0]) if rows else [by]
    if as_csv:
        click.echo(to_csv(columns, [[r[c] for c in columns] for r in rows]), nl=False)
        return
    click.echo(format_table(columns, [[r[c] for c in columns] for r in rows]))
    from stakeflow.traces import summary_line

    click.echo(summary_line(report))


@click.command()
@click.argument("query")
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "as_csv", is_flag=True)
@friendly
def sql(query: str, as_json: bool, as_csv: bool) -> None:
    """Read-only SQL over the trace store (tables: spans, runs)."""
    from stakeflow.traces import format_table, run_sql, to_csv

    columns, rows = run_sql(open_store(current_settings()), query)
    if as_json:
        echo_json([dict(zip(columns, r, strict=True)) for r in rows])
    elif as_csv:
        click.echo(to_csv(columns, rows), nl=False)
    else:
        click.echo(format_table(columns, rows))


@click.command()
@click.option("--json", "as_json", is_flag=True)
@friendly
def prices(as_json: bool) -> None:
    """The price table in force: built-in entries and stakeflow.toml overrides."""
    from stakeflow.prices import PriceTable, describe

    rows = describe(PriceTable.from_settings(current_settings()))
    if as_json:
        echo_json(rows)
        return
    from stakeflow.traces import format_table

    columns = list(rows[0]) if rows else ["model"]
    click.echo(format_table(columns, [[r[c] for c in columns] for r in rows]))
