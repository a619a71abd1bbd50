"""`stakeflow tools` and `stakeflow agents`: what runs can use, and the named agents."""

from __future__ import annotations

import click

from stakeflow.cli.common import Failed, current_settings, echo_json, err, friendly


@click.command()
@click.option("--agent", default=None, help="Only the tools this named agent may use.")
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue as JSON.")
@friendly
def tools(agent: str | None, as_json: bool) -> None:
    """Every tool a run may use: risk (and where it came from), open-world flag, source."""
    from stakeflow.cli.listing import tool_row, tools_report

    listing = tools_report(current_settings(), agent)
    rows = [tool_row(v) for v in listing.tools]
    if as_json:
        echo_json({"tools": rows, "problems": listing.problems})
    else:
        for r in rows:
            world = "open-world" if r["open_world"] else "closed"
            flags = ", ".join(f for f, on in (("private", r["private"]), ("not idempotent", not r["idempotent"])) if on)
            click.echo(
                f"{r['name']:<28} {r['risk']:<12} {world:<10} {r['source']:<12} risk: {r['risk_from']}"
                + (f" · {flags}" if flags else "")
            )
        for p in listing.problems:
            err(f"unavailable: {p}")
    if listing.problems and not listing.tools:
        raise Failed("no tools could be listed")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the agents as JSON.")
@friendly
def agents(as_json: bool) -> None:
    """The named agents ([agents.<name>] in stakeflow.toml)."""
    from stakeflow.services.runs import open_models

    settings = current_settings()
    rows = []
    for name, cfg in sorted(settings.agents.items()):
        used, configured = open_models(settings, name)
        rows.append({"name": name, **cfg.model_dump(), "open_model_in_use": used, "promoted": used != configured})
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"no agents: add [agents.<name>] to {settings.config_path} (see README, Agents)")
    for r in rows:
        tools_text = ", ".join(r["tools"]) if r["tools"] is not None else "all enabled tools"
        about = r["description"] or (r["instructions"].splitlines()[0][:60] if r["instructions"] else "")
        click.echo(
            f"{r['name']:<20} {about}\n{'':<20} tools: {tools_text} · stakes {r['stakes']} · "
            f"sensitivity {r['sensitivity']}"
            + (f" · open model {r['open_model_in_use']}" if r["open_model"] or r["promoted"] else "")
            + (" (promoted by stakeflow learn)" if r["promoted"] else "")
        )


@click.group(invoke_without_command=True)
@click.option("--by", "by", default="kind", show_default=True, help="Breakdown: tool, kind, agent, model, day or week.")
@click.option("--since", default="7d", show_default=True, help="Window: 7d, 24h, 30m or an ISO date.")
@click.option("--routing", "show_routing", is_flag=True, help="The routing table the next run would use.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "as_csv", is_flag=True)
@click.pass_context
@friendly
def evals(ctx: click.Context, by: str, since: str, show_routing: bool, as_json: bool, as_csv: bool) -> None:
    """Shadow evaluation: how often the open path agreed with the frontier, beside what each cost.

    `stakeflow evals replay` judges a candidate model on the held-out examples instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    from stakeflow.services.evals import report, routing
    from stakeflow.traces import format_table, to_csv

    settings = current_settings()
    if show_routing:
        rows = routing(settings)
        if as_json:
            echo_json(rows)
            return
        columns = ["agent", "kind", "tool", "n", "agreement", "agreement_low", "route", "reason"]
        click.echo(
            format_table(columns, [[r[c] for c in columns] for r in rows])
            if rows
            else "no shadow evaluations yet: set [evals] shadow_rate (README, Quality next to cost)"
        )
        return
    result = report(settings, by, since)
    if as_json:
        echo_json(result)
        return
    columns = [
        by,
        "n",
        "agreement",
        "agreement_low",
        "agreement_high",
        "judged",
        "open_cost_usd",
        "frontier_cost_usd",
        "judge_cost_usd",
        "open_p50_ms",
        "frontier_p50_ms",
    ]
    table = [[r[c] for c in columns] for r in result["rows"]]
    if as_csv:
        click.echo(to_csv(columns, table), nl=False)
        return
    if not table:
        click.echo(
            f"agreement not measured since {result['since']}: set [evals] shadow_rate (README, Quality next to cost)"
        )
        return
    click.echo(format_table(columns, table))
    t = result["total"]
    click.echo(f"total: {t['agreeing']} of {t['n']} agreed (agree, tie or open better) since {result['since']}")
