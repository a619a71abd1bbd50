"""Learning from the frontier: `dataset export`, `evals replay`, `models lora`, `learn`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from stakeflow.cli.common import current_settings, echo_json, friendly

if TYPE_CHECKING:  # annotations only: the commands import these modules where they run
    from stakeflow.agents.evals import ReplayPart
    from stakeflow.stores.datasets import Format


@click.group()
def dataset() -> None:
    """Captured model calls as fine-tuning data ([dataset] capture = true)."""


@dataset.command("export")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write: OUT.train.jsonl, OUT.test.jsonl and OUT.manifest.json.",
)
@click.option("--since", default=None, help="Only calls since: 7d, 24h or an ISO date.")
@click.option("--agent", default=None, help="Only this named agent's calls.")
@click.option("--tool", default=None, help="Only steps that used this tool.")
@click.option(
    "--source",
    "sources",
    multiple=True,
    type=click.Choice(["frontier", "shadow", "approved"]),
    help="Where the reference answers come from (repeatable; default: all three).",
)
@click.option("--split", default=0.8, show_default=True, type=float, help="Share of examples for training.")
@click.option(
    "--format",
    "fmt",
    default="openai",
    show_default=True,
    type=click.Choice(["openai", "trl"]),
    help="openai: {messages}; trl: {prompt, completion} (conversational).",
)
@click.option("--include-private", is_flag=True, help="Private runs too (captured only with include_private).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@friendly
def export(
    out: str,
    since: str | None,
    agent: str | None,
    tool: str | None,
    sources: tuple[str, ...],
    split: float,
    fmt: Format,  # one of the --format choices
    include_private: bool,
    as_json: bool,
) -> None:
    """Write the dataset: the open model's prompts with the reference answers, deduplicated, split."""
    from stakeflow.services.evals import parse_since
    from stakeflow.stores.datasets import SOURCES, collect, write

    settings = current_settings()
    chosen = tuple(sources) or SOURCES
    exported = collect(
        settings.traces_path,
        since=parse_since(since) if since else None,
        agent=agent,
        tool=tool,
        sources=chosen,
        include_private=include_private,
        split=split,
    )
    filters = {
        "since": since,
        "agent": agent,
        "tool": tool,
        "sources": list(chosen),
        "split": split,
        "include_private": include_private,
    }
    manifest = write(exported, Path(out), fmt, filters)
    if as_json:
        echo_json(manifest)
        return
    c = manifest["counts"]
    click.echo(
        f"{c['train']} train · {c['test']} test · {c['duplicates_dropped']} duplicates dropped · "
        f"excluded {c['excluded'] or 'none'}"
    )
    for name, f in manifest["files"].items():
        click.echo(f"  {name}: {f['lines']} lines, sha256 {f['sha256'][:16]}…")


def replay_command():
    """`stakeflow evals replay`, attached to the `evals` group in stakeflow.cli."""

    @click.command("replay")
    @click.option("--model", required=True, help="The candidate: a model, or a LoRA adapter by its served name.")
    @click.option("--base-url", default=None, help="Its OpenAI-compatible server (default: the open endpoint).")
    @click.option(
        "--split",
        "part",
        default="test",
        show_default=True,
        type=click.Choice(["test", "train"]),
        help="Which part of the dataset ([learn] split of it is train) to re-ask.",
    )
    @click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 5000))
    @click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 64))
    @click.option("--agent", default=None, help="Only this agent's examples.")
    @click.option("--tool", default=None, help="Only steps that used this tool.")
    @click.option("--no-wait", is_flag=True, help="Print the workflow id and return (watch it in the Web UI).")
    @click.option("--json", "as_json", is_flag=True)
    @friendly
    def replay(
        model: str,
        base_url: str | None,
        part: ReplayPart,  # one of the --split choices
        limit: int,
        concurrency: int,
        agent: str | None,
        tool: str | None,
        no_wait: bool,
        as_json: bool,
    ) -> None:
        """Re-ask the held-out examples of a candidate model and the current one; judge both against the reference."""
        from stakeflow.cli.common import run_async
        from stakeflow.services.learn import replay_rows, start_replay

        settings = current_settings()

        async def go() -> None:
            handle, req = await start_replay(settings, model, base_url, part, limit, concurrency, agent, tool)
            if no_wait:
                click.echo(f"started {handle.id}: {settings.ui_url(handle.id)}")
                return
            reports = await handle.result()
            rows = replay_rows(reports)
            if as_json:
                echo_json({"workflow_id": handle.id, "models": rows})
                return
            for r in rows:
                click.echo(
                    f"{r['model']:<32} agreement {r['agreement_text']:<22} n={r['n']:<4} "
                    f"cost ${r['cost_usd']:.4f} · p50 {r['p50_ms']:.0f} ms"
                    + (f" · {r['errors']} errors (last: {r['last_error']})" if r["errors"] else "")
                )
            click.echo(f"workflow {handle.id} · {settings.ui_url(handle.id)}")

        run_async(go())

    return replay


@click.group("lora")
def lora_group() -> None:
    """LoRA adapters on the vLLM server (its runtime LoRA API)."""


@lora_group.command("load")
@click.argument("name")
@click.argument("path")
@friendly
def lora_load(name: str, path: str) -> None:
    """Load the adapter at PATH (on the vLLM host) under NAME; an agent then uses it by that name."""
    from stakeflow.endpoints import lora

    settings = current_settings()
    click.echo(lora(settings.open_url, settings.open_api_key, "load", name, path))


@lora_group.command("unload")
@click.argument("name")
@friendly
def lora_unload(name: str) -> None:
    """Unload the adapter NAME."""
    from stakeflow.endpoints import lora

    settings = current_settings()
    click.echo(lora(settings.open_url, settings.open_api_key, "unload", name))


@click.command()
@click.option("--agent", default=None, help="The named agent to learn for (default: runs without a named agent).")
@click.option(
    "--margin",
    default=None,
    type=click.FloatRange(0, 1),
    help="Promote only if the adapter agrees this much more often ([learn] margin, 0.02).",
)
@click.option(
    "--min-examples",
    default=None,
    type=click.IntRange(1),
    help="Fewest training examples to train on ([learn] min_examples, 20).",
)
@click.option("--revert", is_flag=True, help="Forget the agent's promotion: its configured open model is used again.")
@click.option("--no-wait", is_flag=True, help="Print the workflow id and return (watch it in the Web UI).")
@click.option("--json", "as_json", is_flag=True)
@friendly
def learn(
    agent: str | None, margin: float | None, min_examples: int | None, revert: bool, no_wait: bool, as_json: bool
) -> None:
    """Train a LoRA adapter on the frontier's answers, judge it, promote it only if it is better.

    A LearnWorkflow: export the agent's dataset, run [learn] trainer on a `stakeflow worker --queues train`
    (where the GPU is), load the adapter into vLLM, replay the held-out examples against it and the current
    open model, and promote it (the agent's runs use it from then on) only if it beats the current model's
    agreement by the margin; otherwise unload it and say why.
    """
    from temporalio.client import WorkflowFailureError

    from stakeflow.cli.common import run_async
    from stakeflow.services.learn import start_learn
    from stakeflow.stores.promotions import learn_dir, revoke

    settings = current_settings()
    if revert:
        removed = revoke(learn_dir(settings), agent)
        click.echo(
            f"{agent or 'runs without an agent'}: {removed.open_model} no longer promoted"
            if removed
            else f"{agent or 'runs without an agent'}: nothing was promoted"
        )
        return

    async def go() -> None:
        from stakeflow.core.contracts import queue_name
        from stakeflow.services.runs import has_poller
        from stakeflow.temporal.connection import connect

        handle, req = await start_learn(settings, agent, margin=margin, min_examples=min_examples)
        if not await has_poller(await connect(settings), settings, "train"):
            click.echo(
                f"warning: no worker polls {queue_name('train', settings.queue_prefix)}: start "
                "`stakeflow worker --queues train` where the GPU is (the run waits up to an hour for one)",
                err=True,
            )
        if no_wait:
            click.echo(f"started {handle.id}: {settings.ui_url(handle.id)}")
            return
        click.echo(
            f"{handle.id}: training {req.adapter_name} for {agent or 'the open route'} "
            f"(watch: {settings.ui_url(handle.id)})",
            err=True,
        )
        try:
            result = await handle.result()
        except WorkflowFailureError as e:
            cause = e.cause
            raise click.ClickException(f"{handle.id} failed at {getattr(cause, 'message', cause)}") from None
        if as_json:
            echo_json({"workflow_id": handle.id, **result.model_dump()})
            return
        click.echo(result.reason)
        click.echo(
            f"adapter {result.adapter} at {result.adapter_path} · {result.train_examples} trained on, "
            f"{result.test_examples} held out"
        )

    run_async(go())
