"""Does shadow evaluation slow a run down? The run's wall time with [evals] shadow_rate 0 vs 1, side by side.

The goal (issue "Quality next to cost"): the same within noise, since a shadow runs in its own child workflow
that the run neither waits for nor cancels. One dev server, stakeflow's real workers in this process, scripted
open and frontier servers (tests/fakes) answering after ``--latency`` seconds. Each round runs one task per
rate, alternating, so drift hits both; shadows of a round are left to finish before the next round.

    python bench/shadow.py                    # 5 rounds, a 3-step plan, 0.2 s per model call
    python bench/shadow.py --rounds 9 --latency 0.5
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


from bench.harness import dev_server
from stakeflow.config import Settings
from stakeflow.services import runs
from stakeflow.workers.main import run_workers
from tests.agent_script import agent, call, plan
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, Reply, output_schema

WORKSPACE = REPO / "examples" / "workspace"


def scripted(latency: float):
    inner = agent(
        plan(("Compute", "calculator"), ("Compute again", "calculator"), ("And once more", "calculator")),
        {i: call("calculator", expression=f"{i}*7") for i in (1, 2, 3)},
        answer="done",
    )

    def respond(body):
        schema = output_schema(body) or {}
        if "winner" in (schema.get("properties") or {}):
            return Reply.delayed(latency, {"winner": "tie", "reason": "same"})
        return Reply.delayed(latency, inner(body))

    return respond


async def one(client, settings: Settings, rate: float) -> tuple[float, str]:
    settings.evals.shadow_rate = rate
    req = runs.build_request(settings, "Compute three things", workspace=WORKSPACE)
    started = time.perf_counter()
    handle = await runs.start_run(client, settings, req)
    await handle.result()
    return time.perf_counter() - started, handle.id


async def main(args) -> None:
    home = Path(tempfile.mkdtemp(prefix="stakeflow-bench-shadow-"))
    env = await dev_server()
    try:
        with FakeOpenAIServer(model="qwen-bench") as open_fake, FakeAnthropicServer() as frontier_fake:
            open_fake.script(scripted(args.latency))
            frontier_fake.script(scripted(args.latency))
            settings = Settings(
                home=home,
                queue_prefix=f"b{uuid.uuid4().hex[:6]}",
                open_base_url=open_fake.url,
                open_model="qwen-bench",
                open_dialect="vllm",
                anthropic_api_key="sk-ant-bench",
                anthropic_base_url=frontier_fake.url,
                frontier_model="claude-sonnet-4-6",
            )
            stop = asyncio.Event()
            workers = asyncio.create_task(run_workers(env.client, settings, stop=stop))
            times: dict[float, list[float]] = {0.0: [], 1.0: []}
            await one(env.client, settings, 0.0)  # warm-up
            for n in range(args.rounds):
                for rate in (0.0, 1.0) if n % 2 == 0 else (1.0, 0.0):
                    seconds, wf_id = await one(env.client, settings, rate)
                    times[rate].append(seconds)
                    async for wf in env.client.list_workflows(f"ParentWorkflowId = '{wf_id}'"):
                        await env.client.get_workflow_handle(wf.id).result()  # idle before the next run
                print(f"round {n + 1}: rate 0 {times[0.0][-1]:.3f}s · rate 1 {times[1.0][-1]:.3f}s", file=sys.stderr)
            stop.set()
            await workers
    finally:
        await env.shutdown()
        shutil.rmtree(home, ignore_errors=True)
    calls = 5  # plan, 3 steps, answer
    floor = calls * args.latency
    print(f"\n{args.rounds} rounds · {calls} model calls per run · {args.latency:g} s per call (floor {floor:.2f} s)\n")
    print(f"{'shadow_rate':>12} {'median s':>9} {'min s':>7} {'max s':>7} {'over floor, ms':>15}")
    for rate, values in times.items():
        med = statistics.median(values)
        print(f"{rate:>12g} {med:>9.3f} {min(values):>7.3f} {max(values):>7.3f} {(med - floor) * 1000:>15.0f}")
    diff = statistics.median(times[1.0]) - statistics.median(times[0.0])
    spread = statistics.pstdev(times[0.0] + times[1.0])
    print(f"\nmedian difference (1 - 0): {diff * 1000:+.0f} ms; spread of all runs (stdev): {spread * 1000:.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.2)
    asyncio.run(main(parser.parse_args()))
