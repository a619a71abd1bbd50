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
    from stakeflow.catalog import tool_row, tools_report

    listing = tools_report(current_settings(), agent)
    rows = [tool_row(v) for v in listing.tools]
    if as_json:
        echo_json({"tools": rows, "problems": listing.problems})
    else:
        for r in rows:
            world = "open-world" if r["open_world"] else "closed"
            flags = ", ".join(f for f, on in (("private", r["private"]), ("not idempotent", not r["idempotent"])) if on)
            click.echo(f"{r['name']:<28} {r['risk']:<12} {world:<10} {r['source']:<12} risk: {r['risk_from']}"
                       + (f" · {flags}" if flags else ""))
        for p in listing.problems:
            err(f"unavailable: {p}")
    if listing.problems and not listing.tools:
        raise Failed("no tools could be listed")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the agents as JSON.")
@friendly
def agents(as_json: bool) -> None:
    """The named agents ([agents.<name>] in stakeflow.toml)."""
    settings = current_settings()
    rows = [{"name": name, **cfg.model_dump()} for name, cfg in sorted(settings.agents.items())]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"no agents: add [agents.<name>] to {settings.config_path} (see README, Agents)")
    for r in rows:
        tools_text = ", ".join(r["tools"]) if r["tools"] is not None else "all enabled tools"
        about = r["description"] or (r["instructions"].splitlines()[0][:60] if r["instructions"] else "")
        click.echo(f"{r['name']:<20} {about}\n{'':<20} tools: {tools_text} · stakes {r['stakes']} · "
                   f"sensitivity {r['sensitivity']}" + (f" · open model {r['open_model']}" if r["open_model"] else ""))
