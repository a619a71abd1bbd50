"""A storm against a frontier budget: N runs started at once, each wanting two frontier calls, with and without
``[budgets] frontier_usd_per_day``; the frontier's own log against the budget, and what reserving costs in time.

One dev server, stakeflow's real workers in this process, scripted open and frontier servers (tests/fakes)
answering after ``--latency`` seconds, the frontier billing input tokens as a quarter of each request's bytes.

    python bench/budgets.py                        # 200 runs, a budget of about 20 runs
    python bench/budgets.py --runs 100 --budget-runs 10 --latency 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from stakeflow.agents.budgets import GLOBAL_BUDGET, BudgetTotals, budget_workflow_id
from stakeflow.agents.types import TaskResult
from stakeflow.config import PriceConfig, Settings
from stakeflow.core.contracts import BUDGET_QUERY
from stakeflow.services import runs
from stakeflow.workers.main import run_workers
from tests.agent_script import agent, plan, think
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, Reply

OUTPUT_TOKENS = 600
CALL_USD = 0.0095  # about what one call of this script is billed


def script():
    return agent(plan(("Weigh it", None, "high")), {1: think("weighed")}, "done")


def billed(respond, latency: float):
    def answer(body):
        reply = Reply.delayed(latency, respond(body))
        reply.usage = {"input_tokens": len(json.dumps(body)) // 4, "output_tokens": OUTPUT_TOKENS}
        return reply

    return answer


def billed_usd(request) -> float:
    return (len(json.dumps(request.body)) // 4) * 3.0 / 1e6 + OUTPUT_TOKENS * 15.0 / 1e6


async def storm(env: WorkflowEnvironment, n: int, budget: float | None, latency: float) -> dict:
    with FakeOpenAIServer(model="qwen-bench") as open_fake, FakeAnthropicServer() as frontier:
        open_fake.script(lambda body: Reply.delayed(latency, script()(body)))
        frontier.script(billed(script(), latency))
        settings = Settings(
            home=Path(tempfile.mkdtemp()),
            queue_prefix=f"b{uuid.uuid4().hex[:8]}",
            open_base_url=open_fake.url,
            open_model="qwen-bench",
            open_dialect="vllm",
            anthropic_api_key="sk-ant-bench",
            anthropic_base_url=frontier.url,
            frontier_model="claude-bench",
            prices={"claude-bench": PriceConfig(input_per_mtok=3.0, output_per_mtok=15.0)},
            budgets={"frontier_usd_per_day": budget},
        )
        stop = asyncio.Event()
        workers = asyncio.create_task(run_workers(env.client, settings, stop=stop))
        started = time.monotonic()
        handles = [
            await runs.start_run(env.client, settings, runs.build_request(settings, f"Weigh case {i}"), f"b-{i}-{uuid.uuid4().hex[:6]}")
            for i in range(n)
        ]  # fmt: skip
        results = await asyncio.gather(*(h.result(rpc_timeout=None) for h in handles))
        wall = time.monotonic() - started
        totals = None
        if budget is not None:
            day = time.strftime("%Y-%m-%d", time.gmtime())
            handle = env.client.get_workflow_handle(budget_workflow_id(settings.queue_prefix, GLOBAL_BUDGET, day))
            totals = await handle.query(BUDGET_QUERY, result_type=BudgetTotals)
        stop.set()
        await workers
    results = [TaskResult.model_validate(r) if isinstance(r, dict) else r for r in results]
    return {
        "budget": f"${budget:.2f}" if budget is not None else "none",
        "runs": n,
        "wall_s": round(wall, 1),
        "frontier_calls": len(frontier.calls),
        "billed_usd": round(sum(billed_usd(r) for r in frontier.calls), 4),
        "settled_usd": round(totals.settled_usd, 4) if totals else "",
        "reserved_usd": round(totals.reserved_usd, 4) if totals else "",
        "runs_on_frontier": sum(any(s.route == "frontier" for s in r.steps) for r in results),
        "downgraded_steps": sum(s.downgraded for r in results for s in r.steps),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--budget-runs", type=int, default=20, help="the budget, in runs' worth of frontier calls")
    parser.add_argument("--latency", type=float, default=0.1)
    args = parser.parse_args()
    env = await dev_server()
    try:
        rows = [await storm(env, args.runs, None, args.latency)]
        rows.append(await storm(env, args.runs, args.budget_runs * 2 * CALL_USD, args.latency))
    finally:
        await env.shutdown()
    columns = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))


if __name__ == "__main__":
    asyncio.run(main())
