"""Where a (c) model call's time goes: Temporal's handling, stakeflow's own work, the model request.

bench/overhead.py measures (c) − (fc) per step, stakeflow's run above a workflow of the same shapes with no
work in it. Most of that difference is inside the regular ``call_model`` activities (their history's
started→completed against a no-op's), and that is a sum this benchmark takes apart, per call:

  act run      ActivityTaskStarted → Completed in the history (mean per call_model; for (fc) per no-op)
  body         the ``call_model`` method, entered → returned (wall, and the worker's main-thread CPU)
  request      the model request inside it: pydantic-ai's ``direct.model_request`` (the open route's model
               and client, activities/open_chat.py) with the HTTP exchange and the fake server's answer
  stakeflow    body − request: the shape cache, messages, output validation, pricing, span, heartbeat
  Temporal     act run − body: the task reaching the method after it started, the input decoded, the
               result encoded, the completion sent (against (fc)'s act run, where the body is ~0)

for the plan and step calls (a plain request each); the answer call, whose request is streamed and published to
the run as it arrives (activities/model_stream.py), is timed whole on a line of its own.

It runs only (c) and (fc), alternating, on one dev server, with the same set-up as overhead.py (its fake
server, script, workers and floor workflow), so the process is as idle as it can be between calls. The
timers wrap ``ModelActivities.call_model`` and the ``model_request`` names that activities/models.py and
activities/model_stream.py call, in this process only (class and module attributes, before the workers start).

    python bench/segments.py              # 1 warm-up + 20 measured runs of each, 10 steps
    python bench/segments.py --runs 40
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.harness import check, dev_server, exit_now, hermetic, printed


@dataclass
class Timer:
    """Wall and main-thread CPU of every call of one wrapped coroutine function, in seconds."""

    wall: float = 0.0
    cpu: float = 0.0
    calls: int = 0

    def wrap(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(fn)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.count(wall, cpu)

        return timed

    def count(self, wall: float, cpu: float) -> None:
        """One call, started at ``time.perf_counter()`` ``wall`` and ``time.thread_time()`` ``cpu``."""
        self.wall += time.perf_counter() - wall
        self.cpu += time.thread_time() - cpu
        self.calls += 1

    def reset(self) -> None:
        self.wall = self.cpu = 0.0
        self.calls = 0


@dataclass
class Samples:
    """Per measured run: means per call (ms) and the run's wall time per step (ms)."""

    rows: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.rows.setdefault(key, []).append(value)

    def median(self, key: str) -> float:
        return statistics.median(self.rows[key]) if self.rows.get(key) else float("nan")


# A run's history, per step (bench/histories.py's Breakdown fields): where (c) − (fc) is, model calls or not.
HISTORY_PARTS = ("wft_wait", "wft_run", "act_wait", "act_run")


def install_timers() -> dict[str, Timer]:
    """Wrap call_model and the model request it makes; before the workers are built.

    ``body`` counts the calls that made a plain request (the plan and the steps); ``answer`` the answer call,
    whose request is streamed and published to the run as it arrives (activities/model_stream.py), so it has
    no plain request to set apart.
    """
    from stakeflow.activities import models

    timers = {"body": Timer(), "request": Timer(), "answer": Timer()}
    request = timers["request"]
    call_model = models.ModelActivities.call_model

    @functools.wraps(call_model)
    async def timed_call_model(*args: Any, **kwargs: Any) -> Any:
        wall, cpu, before = time.perf_counter(), time.thread_time(), request.calls
        try:
            return await call_model(*args, **kwargs)
        finally:
            (timers["body"] if request.calls > before else timers["answer"]).count(wall, cpu)

    models.ModelActivities.call_model = timed_call_model  # type: ignore[method-assign]
    models.model_request = request.wrap(models.model_request)  # type: ignore[attr-defined]
    return timers


async def bench(args: argparse.Namespace) -> tuple[Samples, Samples]:
    from bench import calculator_task as task
    from bench import overhead as o
    from stakeflow.workers.main import run_workers
    from tests.fakes import FakeOpenAIServer

    timers = install_timers()
    steps = args.steps
    c, fc = Samples(), Samples()
    with (
        tempfile.TemporaryDirectory(prefix="stakeflow-bench-") as tmp,
        FakeOpenAIServer(model=task.MODEL_NAME) as fake,
    ):
        fake.script(task.stakeflow_responder(steps))
        env = await dev_server()
        client = env.client
        settings = task.stakeflow_settings(Path(tmp), fake.url)
        workspace = Path(tmp) / "workspace"
        workspace.mkdir()
        stop = asyncio.Event()
        sf_workers = asyncio.create_task(run_workers(client, settings, stop=stop))
        floor = task.floor_workers(client)
        floor_tasks = [asyncio.create_task(w.run()) for w in floor]
        try:
            for round_no in range(args.warmup + args.runs):
                for t in timers.values():
                    t.reset()
                c_ms, c_hist = await o.run_stakeflow(client, settings, steps, workspace)
                body, request, answer = timers["body"], timers["request"], timers["answer"]
                check(
                    body.calls == request.calls == steps + 1 and answer.calls == 1,
                    f"{body.calls} call_model bodies, {request.calls} model requests and {answer.calls} answer calls "
                    f"timed, not {steps + 1}, {steps + 1} and 1",
                )
                fc_ms, fc_hist = await o.run_floor(client, steps, "c")
                if round_no < args.warmup:
                    continue
                calls = body.calls
                c.add("step", c_ms / steps)
                c.add("act run", c_hist.act_run / c_hist.act_count)
                c.add("body", body.wall / calls * 1000)
                c.add("body cpu", body.cpu / calls * 1000)
                c.add("request", request.wall / calls * 1000)
                c.add("request cpu", request.cpu / calls * 1000)
                c.add("answer", answer.wall * 1000)
                c.add("answer cpu", answer.cpu * 1000)
                fc.add("step", fc_ms / steps)
                fc.add("act run", fc_hist.act_run / fc_hist.act_count)
                for samples, hist in ((c, c_hist), (fc, fc_hist)):
                    for part in HISTORY_PARTS:
                        samples.add(part, getattr(hist, part) / steps)
                    samples.add("outside", (hist.client_total - hist.server_total) / steps)
        finally:
            stop.set()
            await asyncio.wait_for(sf_workers, 30)
            await asyncio.gather(*(w.shutdown() for w in floor))
            await asyncio.gather(*floor_tasks, return_exceptions=True)
            await env.shutdown()
    return c, fc


def report(args: argparse.Namespace, c: Samples, fc: Samples) -> str:
    m = c.median
    steps = args.steps
    plain = steps + 1  # the plan and the steps: one plain request each; then one streamed answer
    body, request, answer, act = m("body"), m("request"), m("answer"), m("act run")
    floor_act = fc.median("act run")
    every_body = (plain * body + answer) / (plain + 1)  # over all the calls, as the history's act run is
    w = 62
    lines = [
        f"where a call_model's time goes, {time.strftime('%Y-%m-%d')}: (c) and (fc) of bench/overhead.py alternating, "
        f"{steps} steps, median of {args.runs} runs after {args.warmup} warm-up",
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} (1 min) at the end; untraced",
        "",
        f"{'per call_model, ms':<{w}} {'wall':>7} {'CPU':>7}",
        f"{'act run: started -> completed in the history, all calls':<{w}} {act:7.2f}",
        f"{'  body: call_model entered -> returned, all calls':<{w}} {every_body:7.2f}",
        f"{'  Temporal: act run - body':<{w}} {act - every_body:7.2f}",
        f"{'(fc) act run of a no-op activity (its Temporal handling alone)':<{w}} {floor_act:7.2f}",
        f"{'plan and step calls (' + str(plain) + ' a run): body':<{w}} {body:7.2f} {m('body cpu'):7.2f}",
        f"{'  request: direct.model_request (client, HTTP, fake server)':<{w}} {request:7.2f} {m('request cpu'):7.2f}",
        f"{'  stakeflow: body - request':<{w}} {body - request:7.2f} {m('body cpu') - m('request cpu'):7.2f}",
        f"{'the answer call (1 a run), streamed and published: body':<{w}} {answer:7.2f} {m('answer cpu'):7.2f}",
        "",
        "CPU = the worker's main thread (where activities run) while the call was awaited: what else the event loop",
        "ran meanwhile is in it, the fake server's thread is not.",
        "",
        f"per step: (c) {m('step'):.1f} ms, (fc) {fc.median('step'):.1f}, (c) - (fc) {m('step') - fc.median('step'):.1f}; "
        f"of that, the call_model act runs above a no-op's {(act - floor_act) * (plain + 1) / steps:.1f}:",
        f"  plain requests {request * plain / steps:.1f}, stakeflow around them {(body - request) * plain / steps:.1f}, "
        f"the answer call {answer / steps:.1f}, Temporal above its no-op {(act - every_body - floor_act) * (plain + 1) / steps:.1f}",
        "the histories, (c) - (fc) per step: "
        + ", ".join(f"{part.replace('_', ' ')} {m(part) - fc.median(part):+.1f}" for part in HISTORY_PARTS)
        + f"; the client's start and result calls around the server's first and last events {m('outside') - fc.median('outside'):+.1f}",
        "(wft = workflow task: wait = scheduled -> started, run = started -> completed, local activities included;",
        " act = the regular activities, the call_model calls: wait = scheduled -> started)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="measured runs of each (default 20)")
    parser.add_argument("--steps", type=int, default=10, help="plan steps (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs of each first (default 1)")
    args = parser.parse_args()
    if args.runs < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("--runs and --steps must be >= 1, --warmup >= 0")
    hermetic()
    exit_now(printed(lambda: report(args, *asyncio.run(bench(args)))))


if __name__ == "__main__":
    main()
