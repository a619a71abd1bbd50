"""Learning from the frontier: `dataset export`, `evals replay`, `models lora`, `learn`."""

from __future__ import annotations

from pathlib import Path

import click

from stakeflow.cli.common import current_settings, echo_json, friendly


@click.group()
def dataset() -> None:
    """Captured model calls as fine-tuning data ([dataset] capture = true)."""


@dataset.command("export")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write: OUT.train.jsonl, OUT.test.jsonl and OUT.manifest.json.")
@click.option("--since", default=None, help="Only calls since: 7d, 24h or an ISO date.")
@click.option("--agent", default=None, help="Only this named agent's calls.")
@click.option("--tool", default=None, help="Only steps that used this tool.")
@click.option("--source", "sources", multiple=True, type=click.Choice(["frontier", "shadow", "approved"]),
              help="Where the reference answers come from (repeatable; default: all three).")
@click.option("--split", default=0.8, show_default=True, type=float, help="Share of examples for training.")
@click.option("--format", "fmt", default="openai", show_default=True, type=click.Choice(["openai", "trl"]),
              help="openai: {messages}; trl: {prompt, completion} (conversational).")
@click.option("--include-private", is_flag=True, help="Private runs too (captured only with include_private).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@friendly
def export(out: str, since: str | None, agent: str | None, tool: str | None, sources: tuple[str, ...],
           split: float, fmt: str, include_private: bool, as_json: bool) -> None:
    """Write the dataset: the open model's prompts with the reference answers, deduplicated, split."""
    from stakeflow.datasets import SOURCES, collect, write
    from stakeflow.evals_report import parse_since

    settings = current_settings()
    chosen = tuple(sources) or SOURCES
    exported = collect(settings, since=parse_since(since) if since else None, agent=agent, tool=tool,
                       sources=chosen, include_private=include_private, split=split)
    filters = {"since": since, "agent": agent, "tool": tool, "sources": list(chosen), "split": split,
               "include_private": include_private}
    manifest = write(exported, Path(out), fmt, filters)  # type: ignore[arg-type]
    if as_json:
        echo_json(manifest)
        return
    c = manifest["counts"]
    click.echo(f"{c['train']} train · {c['test']} test · {c['duplicates_dropped']} duplicates dropped · "
               f"excluded {c['excluded'] or 'none'}")
    for name, f in manifest["files"].items():
        click.echo(f"  {name}: {f['lines']} lines, sha256 {f['sha256'][:16]}…")
