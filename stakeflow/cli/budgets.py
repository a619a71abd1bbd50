"""`stakeflow budgets`: each frontier budget's limit, settled, reserved and left today (``stakeflow.services.budgets``)."""

from __future__ import annotations

import click

from stakeflow.cli.common import current_settings, echo_json, friendly, run_async, temporal_client


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (the dashboard reads the same items).")
@friendly
def budgets(as_json: bool) -> None:
    """Frontier budgets today (UTC): limit, settled, reserved, left, when they reset."""
    from stakeflow.services.budgets import budget_items, budget_lines, configured_budgets

    settings = current_settings()

    async def items() -> list[dict]:
        if not configured_budgets(settings):
            return []
        return await budget_items(await temporal_client(settings), settings)

    found = run_async(items())
    if as_json:
        echo_json(found)
        return
    for line in budget_lines(found, settings):
        click.echo(line)
