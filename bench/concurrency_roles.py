"""The child processes of bench/concurrency.py, and the floor they serve: each role runs in its own process.

  model-server   the scripted model (tests/fakes' FakeOpenAIServer) answering after ``--latency`` seconds:
                 stakeflow's plan, step and answer, or pydantic-ai's calculator calls; prints its URL
  pai-worker     pydantic-ai's TemporalDurability worker (bench/calculator_task.py's agent and workflow); prints "polling"
  floor-worker   the Temporal floor of stakeflow's shape (SleepFloorWorkflow, activities that only sleep); prints
                 "polling"

Each runs until SIGTERM or SIGINT. bench/concurrency.py starts them; by hand:

    python bench/concurrency_roles.py model-server --latency 1 --calls 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from temporalio import activity, workflow
from temporalio.client import Client

from bench.calculator_task import bench_runner

MODEL_NAME = "fake-open-model"
FLOOR_QUEUE = "bench-cc-floor"
FLOOR_ACTIVITY_QUEUE = "bench-cc-floor-activities"
PAI_QUEUE = "bench-pydantic-ai"  # bench/calculator_task.py's PYDANTIC_AI_QUEUE


# --- the floor: stakeflow's shape, activities that only sleep ------------------------------------------


@activity.defn(name="bench_sleep")
async def sleep_activity(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@activity.defn(name="bench_cc_noop")
async def noop_activity(step: int) -> int:
    return step


@dataclass
class SleepFloorParams:
    """Input of SleepFloorWorkflow: stakeflow's shape (plan, steps x (model + local tool), answer)."""

    steps: int = 1
    latency_s: float = 1.0
    local: bool = False  # the model calls as local activities too (the shape of [workers] local_model_calls)
    activity_queue: str = ""


@workflow.defn(name="BenchSleepFloorWorkflow")
class SleepFloorWorkflow:
    """The orchestration alone, with model calls that take ``latency_s``: no model, no tool, tiny payloads."""

    @workflow.run
    async def run(self, p: SleepFloorParams) -> int:
        for i in range(p.steps + 2):  # plan, steps, answer
            if p.local:
                await workflow.execute_local_activity(
                    sleep_activity, p.latency_s, start_to_close_timeout=timedelta(seconds=60)
                )
            else:
                await workflow.execute_activity(
                    sleep_activity,
                    p.latency_s,
                    task_queue=p.activity_queue,
                    start_to_close_timeout=timedelta(seconds=60),
                )
            if 0 < i <= p.steps:  # a step's tool, after its model call
                await workflow.execute_local_activity(noop_activity, i, start_to_close_timeout=timedelta(seconds=30))
        return p.steps


# --- child processes: the model server, the pydantic-ai and floor workers ------------------------------


def serve_model(latency: float, sf_steps: int, pai_steps: int) -> None:
    """The scripted model: stakeflow's plan/step/answer, or pydantic-ai's calculator calls, after ``latency``."""
    from bench.calculator_task import pydantic_ai_responder, stakeflow_responder
    from tests.fakes import FakeOpenAIServer, Reply

    sf, pai = stakeflow_responder(sf_steps), pydantic_ai_responder(pai_steps)

    def respond(body: dict[str, Any]) -> Any:
        names = [t.get("function", {}).get("name") for t in body.get("tools") or []]
        item = pai(body) if "calculator" in names else sf(body)
        return Reply.delayed(latency, item)

    server = FakeOpenAIServer(model=MODEL_NAME, responder=respond)
    server.start()
    assert server._httpd is not None
    # Every run's calls arrive at once: a 5-connection backlog would drop SYNs (1 s client retransmits).
    server._httpd.socket.listen(4096)
    print(server.url, flush=True)
    wait_for_sigterm()
    server.stop()


async def serve_workers(kind: str, address: str, model_url: str, pollers: int, slots: int, key: str) -> None:
    from temporalio.worker import PollerBehaviorSimpleMaximum, Worker

    limits: dict[str, Any] = {}
    if slots:
        limits = {
            "max_concurrent_activities": slots,
            "max_concurrent_workflow_tasks": slots,
            "max_concurrent_local_activities": slots,
        }
    if pollers:
        limits.update(
            workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(pollers),
            activity_task_poller_behavior=PollerBehaviorSimpleMaximum(pollers),
        )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if kind == "pai":
        from pydantic_ai.durable_exec.temporal import PydanticAIPlugin

        from bench import calculator_task

        calculator_task.OPENAI.base_url = model_url
        client = await Client.connect(address, plugins=[PydanticAIPlugin()])
        workers = [
            Worker(
                client,
                task_queue=PAI_QUEUE,
                workflows=[calculator_task.BenchPydanticAIWorkflow],
                workflow_runner=bench_runner(__name__),
                **limits,
            )
        ]
    else:
        from temporalio.contrib.pydantic import pydantic_data_converter

        client = await Client.connect(address, data_converter=pydantic_data_converter)
        workers = [
            Worker(
                client,
                task_queue=f"{FLOOR_QUEUE}-{key}",
                workflows=[SleepFloorWorkflow],
                activities=[noop_activity, sleep_activity],
                workflow_runner=bench_runner(__name__),
                **limits,
            ),
            Worker(client, task_queue=f"{FLOOR_ACTIVITY_QUEUE}-{key}", activities=[sleep_activity], **limits),
        ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    print("polling", flush=True)
    await stop.wait()
    await asyncio.gather(*(w.shutdown() for w in workers))
    await asyncio.gather(*tasks, return_exceptions=True)


def wait_for_sigterm() -> None:
    done = False

    def handler(*_: object) -> None:
        nonlocal done
        done = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not done:
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=["model-server", "pai-worker", "floor-worker"])
    parser.add_argument("--latency", type=float, default=1.0, help="seconds the model takes per call (model-server)")
    parser.add_argument("--calls", type=int, default=3, help="model calls per run, >= 3 (model-server)")
    parser.add_argument("--address", help="the Temporal server (workers)")
    parser.add_argument("--model-url", default="", help="the model server's URL (pai-worker)")
    parser.add_argument("--pollers", type=int, default=0, help="pollers per queue (workers; 0: Temporal's)")
    parser.add_argument("--slots", type=int, default=0, help="task slots per queue (workers; 0: Temporal's)")
    parser.add_argument("--key", default="", help="the variant whose floor queues to poll (floor-worker)")
    args = parser.parse_args()
    if args.role == "model-server":
        serve_model(args.latency, args.calls - 2, args.calls - 1)
        return
    if not args.address:
        parser.error(f"{args.role} needs --address")
    asyncio.run(
        serve_workers(args.role.split("-")[0], args.address, args.model_url, args.pollers, args.slots, args.key)
    )
    os._exit(0)  # temporalio can crash at interpreter exit after client use (sdk-python#300)


if __name__ == "__main__":
    # Imported under its own name: the sandbox cannot pass through a workflow module named __main__.
    from bench import concurrency_roles

    concurrency_roles.main()
