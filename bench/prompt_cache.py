"""What the frontier's prompt cache takes off a run's input bill (issue 27, section 2): one multi-step, multi-round
task run on a scripted frontier with Anthropic's cache semantics, with the cache and without it.

The frontier fake (tests/fakes ``FakeAnthropicServer(cache=PromptCache())``) bills input as the API does: a
breakpoint's prefix at least ``--min-tokens`` long is written (charged as a cache write), a later request with the
same prefix reads it (charged as a cache read), the rest is uncached; ``PromptCache(enabled=False)`` counts the
same tokens and caches nothing, which is what the same requests cost with no cache. Input dollars are those figures
at the built-in price table's rates for ``--model``; the bill line is stakeflow's own (``cost_line``), from the
usage the fake reported.

The task: a goal naming two workspace files (a 300-row orders.csv, a ~6 KB notes.txt), every step high stakes (so
on the frontier), the plan cycling through six kinds of step with 1 to 3 rounds each (read the notes; sum revenue
by region: a wrong query, then the right one; read the terms; count big orders: two wrong queries, then the right
one; the largest customers: 2 rounds; a calculation), then the answer. Six steps (the default) are a plan call,
10 step calls and an answer call per run. Runs follow each other on one worker, as a team's runs do within the
cache's 5 minutes, each with its own goal (so what they share is the tools and the system prompt); the first run of
each mode starts with an empty cache (``cold``).

    python bench/prompt_cache.py                  # 6 steps, 3 runs per mode (~30 s on 2 cores)
    python bench/prompt_cache.py --steps 3 --runs 5 --min-tokens 2048
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from temporalio.testing import WorkflowEnvironment

from bench.harness import dev_server
from stakeflow.agents.billing import cost_line
from stakeflow.agents.types import TaskResult, Usage
from stakeflow.config import Settings
from stakeflow.prices import PriceTable
from stakeflow.services import runs
from stakeflow.workers.main import run_workers
from tests.agent_script import agent, call, plan
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, PromptCache, purpose_of

TARGET = 0.40  # the issue's: cached input dollars at most 40% of uncached
GOAL = "Summarise revenue by region in orders.csv, and what notes.txt says about the regions and big orders."
REVENUE = "SELECT region, sum(units * unit_price) AS revenue FROM 'orders.csv' GROUP BY region ORDER BY region"
BIG = "SELECT count(*) AS big_orders FROM 'orders.csv' WHERE units >= 40"
TOP = "SELECT customer, sum(units) AS units FROM 'orders.csv' GROUP BY customer ORDER BY units DESC LIMIT 5"


def workspace(root: Path) -> Path:
    """orders.csv (300 rows), notes.txt (~6 KB of meeting notes) and terms.txt, the same every invocation."""
    rng = random.Random(27)
    ws = root / "ws"
    ws.mkdir()
    regions, customers = ["North", "South", "East", "West"], [f"C{n:03d}" for n in range(1, 41)]
    rows = ["order_id,order_date,customer,region,units,unit_price"]
    for n in range(300):
        day = f"2026-{7 + n // 100:02d}-{1 + n % 28:02d}"
        units, price = rng.randint(1, 60), rng.choice(["4.50", "6.25", "9.80", "12.00"])
        rows.append(f"{5000 + n},{day},{rng.choice(customers)},{rng.choice(regions)},{units},{price}")
    (ws / "orders.csv").write_text("\n".join(rows) + "\n")
    topics = ["delivery windows", "the new roaster", "wholesale terms", "late invoices", "green coffee stock"]
    notes = [
        f"- {region}: {rng.choice(topics)} came up again; the account team will follow up with "
        f"{rng.choice(customers)} and report back by the end of the month (meeting {n + 1})."
        for n in range(40)
        for region in [regions[n % 4]]
    ]
    (ws / "notes.txt").write_text("Regional review notes, Q3 2026\n\n" + "\n".join(notes) + "\n")
    terms = " ".join(f"Clause {n}: orders of {10 * n} units or more ship free within the region." for n in range(1, 30))
    (ws / "terms.txt").write_text(terms + "\n")
    return ws


# The steps a run's plan cycles through (``--steps``): title, tool, and each round's call (the last one succeeds).
STEPS = [
    ("Read the notes", "read_file", [{"path": "notes.txt"}]),
    ("Sum revenue by region", "sql_query", [{"query": "SELECT sum(revenue) FROM 'orders.csv'"}, {"query": REVENUE}]),
    ("Read the trade terms", "read_file", [{"path": "terms.txt"}]),
    (
        "Count the big orders",
        "sql_query",
        [
            {"query": "SELECT count(*) FROM 'orders.csv' WHERE qty >= 40"},
            {"query": "SELECT count(*) FROM 'order.csv' WHERE units >= 40"},
            {"query": BIG},
        ],
    ),
    (
        "Find the largest customers",
        "sql_query",
        [{"query": "SELECT customer, sum(kg) FROM 'orders.csv'"}, {"query": TOP}],
    ),
    ("Check the numbers", "calculator", [{"expression": "12.5 * 40"}]),
]


def script(steps: int):
    planned = [STEPS[n % len(STEPS)] for n in range(steps)]
    return agent(
        plan(*((title, tool, "high") for title, tool, _ in planned)),
        {n: [call(tool, **args) for args in rounds] for n, (_, tool, rounds) in enumerate(planned, start=1)},
        answer="Revenue by region is in the table above; the notes ask the account team to follow up on big orders.",
    )


def input_usd(prices: PriceTable, model: str, figures: dict[str, int]) -> float:
    """One request's input at the table's rates: uncached, cache write and cache read tokens."""
    usage = Usage(
        input_tokens=figures["input_tokens"],
        cache_write_tokens=figures["cache_creation_input_tokens"],
        cache_read_tokens=figures["cache_read_input_tokens"],
        requests=1,
    )
    return prices.price_call(model, usage, 0).usd or 0.0


async def mode(env: WorkflowEnvironment, args: argparse.Namespace, cached: bool, ws: Path) -> list[dict]:
    """``args.runs`` runs one after another on one worker; per run: its frontier calls, tokens, input dollars."""
    prices, rows = PriceTable.builtin(), []
    cache = PromptCache(min_tokens=args.min_tokens, enabled=cached)
    with FakeOpenAIServer(model="qwen-bench") as open_fake, FakeAnthropicServer(cache=cache) as frontier:
        open_fake.script(script(args.steps))
        frontier.script(script(args.steps))
        settings = Settings(
            home=Path(tempfile.mkdtemp(prefix="sf-cache-")),
            queue_prefix=f"pc{uuid.uuid4().hex[:8]}",
            open_base_url=open_fake.url,
            open_model="qwen-bench",
            open_dialect="vllm",
            anthropic_api_key="sk-ant-bench",
            anthropic_base_url=frontier.url,
            frontier_model=args.model,
        )
        stop = asyncio.Event()
        workers = asyncio.create_task(run_workers(env.client, settings, stop=stop))
        try:
            for n in range(args.runs):
                before = len(cache.log)
                # Each run its own goal, as a team's runs have: what runs share is the tools and system prompt.
                goal = f"{GOAL} (request {n + 1})"
                req = runs.build_request(settings, goal, workspace=ws, stakes="high", max_steps=args.steps)
                handle = await runs.start_run(env.client, settings, req, f"pc-{n}-{uuid.uuid4().hex[:6]}")
                result = await handle.result(rpc_timeout=None)
                result = TaskResult.model_validate(result) if isinstance(result, dict) else result
                if result.status != "completed":
                    raise SystemExit(f"run {n} ({'cached' if cached else 'uncached'}) ended {result.status}")
                log, bodies = cache.log[before:], [c.body for c in frontier.calls[before:]]
                steps = [purpose_of(b) == "step" for b in bodies]
                rows.append(
                    {
                        "mode": "cached" if cached else "uncached",
                        "run": f"{n + 1}{' cold' if n == 0 else ''}",
                        "calls": len(log),
                        "step_calls": sum(steps),
                        "input_tok": sum(e["input_tokens"] for e in log),
                        "write_tok": sum(e["cache_creation_input_tokens"] for e in log),
                        "read_tok": sum(e["cache_read_input_tokens"] for e in log),
                        "input_usd": sum(input_usd(prices, args.model, e) for e in log),
                        # the plan and the answer: one call each, nothing later reads their prefix
                        "plan_answer_usd": sum(
                            input_usd(prices, args.model, e) for e, s in zip(log, steps, strict=True) if not s
                        ),
                        "bill": cost_line(result.cost),
                    }
                )
        finally:
            stop.set()
            await workers
    return rows


def table(rows: list[dict]) -> None:
    columns = [c for c in rows[0] if c != "bill"]
    cells = [[f"{r[c]:.5f}" if c.endswith("_usd") else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per mode (the first starts with an empty cache)")
    parser.add_argument("--steps", type=int, default=6, help=f"plan steps, cycling through {len(STEPS)} kinds")
    parser.add_argument("--model", default="claude-sonnet-4-6", help="priced from the built-in table")
    parser.add_argument("--min-tokens", type=int, default=1024, help="the shortest prefix cached (the API's minimum)")
    args = parser.parse_args()
    env = await dev_server()
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ws = workspace(Path(tmp))
            rows = [*await mode(env, args, False, ws), *await mode(env, args, True, ws)]
    finally:
        await env.shutdown()
    table(rows)
    uncached = [r["input_usd"] for r in rows if r["mode"] == "uncached"]
    cached = [r["input_usd"] for r in rows if r["mode"] == "cached"]
    per_run_u, per_run_c = sum(uncached) / len(uncached), sum(cached) / len(cached)
    print(f"\nthe cached mode's last bill: {rows[-1]['bill']}")
    print(f"frontier input per run, {args.model}: uncached ${per_run_u:.5f}, cached ${per_run_c:.5f}")
    for label, ratio in (("mean of the runs", per_run_c / per_run_u), ("cold first run", cached[0] / uncached[0])):
        verdict = "meets" if ratio <= TARGET else "MISSES"
        print(f"cached / uncached, {label}: {ratio:.2f}  -> {verdict} the target <= {TARGET:.2f}")
    print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
