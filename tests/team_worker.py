"""A team's own workflow, activity and worker process, with StakeflowPlugin passed to its client (tests/test_plugin.py).

    python -m tests.team_worker ADDRESS HOME

Run as its own process because tracing needs the process's tracer provider set once, for good: it installs a
replay-safe one, starts a run inside a span, and prints as JSON the trace id of that span and the answer, which
carries the trace id the activity ran under.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from opentelemetry import trace


@activity.defn(name="team_echo")
async def team_echo(text: str) -> str:
    """The text, and the trace id the activity runs under: the client's, when the trace context travelled."""
    return f"{text} {trace.get_current_span().get_span_context().trace_id:032x}"


@workflow.defn(name="TeamWorkflow")
class TeamWorkflow:
    @workflow.run
    async def run(self, text: str) -> str:
        return await workflow.execute_activity(team_echo, text, start_to_close_timeout=timedelta(seconds=30))


# Longer than Temporal's deadlock timeout (2 s): the worker reports the workflow thread stuck, with its stack.
STUCK_S = 3.0


@workflow.defn(name="TeamStuckWorkflow")
class TeamStuckWorkflow:
    """A team's workflow that blocks its workflow thread (tests/test_sandbox.py: the deadlock report still shows where)."""

    @workflow.run
    async def run(self) -> str:
        with workflow.unsafe.sandbox_unrestricted():
            import time

            time.sleep(STUCK_S)
        return "unstuck"


async def main(address: str, home: Path) -> None:
    from temporalio.client import Client
    from temporalio.contrib.opentelemetry import create_tracer_provider
    from temporalio.worker import Worker

    from stakeflow.config import Settings
    from stakeflow.temporal.plugin import StakeflowPlugin

    trace.set_tracer_provider(create_tracer_provider())
    client = await Client.connect(address, plugins=[StakeflowPlugin(Settings(home=home))])
    queue = f"team-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[TeamWorkflow], activities=[team_echo]):
        with trace.get_tracer("team").start_as_current_span("team request") as span:
            answer = await client.execute_workflow(TeamWorkflow.run, "hello", id=queue, task_queue=queue)
    print(json.dumps({"trace_id": f"{span.get_span_context().trace_id:032x}", "answer": answer}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
    os._exit(0)  # temporalio can crash at interpreter exit after client use (sdk-python#300)
