"""`stakeflow report`: the cost-and-quality dashboard as one HTML file (``stakeflow.services.report``)."""

from __future__ import annotations

from pathlib import Path

import click

from stakeflow.cli.common import current_settings, friendly
from stakeflow.cli.costs import parse_since
from stakeflow.core.errors import InputError


@click.command()
@click.option("--html", "html_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Write the page here (one self-contained file: open it in any browser, offline).")  # fmt: skip
@click.option("--since", default="30d", show_default=True, help="Window: 30m, 24h, 7d, 2w, or all.")
@click.option("--agent", default=None, help="Only this named agent's runs ([agents.<name>]).")
@friendly
def report(html_path: Path, since: str, agent: str | None) -> None:
    """The cost-and-quality dashboard: spend, saving, agreement, escalations, routing, top runs, budgets."""
    from stakeflow.services.report import build_report

    window = parse_since(since)
    page = build_report(current_settings(), window, agent)
    try:
        html_path.write_text(page, encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot write {html_path}: {e.strerror}: choose a writable path for --html") from None
    size = html_path.stat().st_size
    click.echo(f"wrote {html_path} ({size / 1e6:.1f} MB): open {html_path.resolve().as_uri()} in a browser")
