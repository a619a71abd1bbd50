"""A worker SIGKILLed while the answer streams (tests/test_run_events.py): real `stakeflow worker` processes."""

from __future__ import annotations

import asyncio
import signal
import uuid

from stakeflow.agents.types import RunEvent, TaskResult
from stakeflow.services import runs
from tests.fakes import FakeOpenAIServer, Reply, purpose_of
from tests.support import make_settings, open_endpoint_env, spawn_worker, worker_env


async def kill_mid_answer(client, tmp_path, answer: str, script) -> tuple[list[RunEvent], TaskResult, int]:
    """A run whose first answer call streams a word every 0.25 s; the worker dies once its first deltas have reached
    the reader, a new one finishes the run. The reader's events, the result, and how many answer calls the model server received."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text(answer + "\n")
    with FakeOpenAIServer(model="qwen-test") as fake:
        answers: list[str] = []

        def slow_first_answer(body):
            out = script(body)
            if purpose_of(body) == "answer":
                answers.append(out)
                return Reply(output=out, chunk_delay_s=0.25 if len(answers) == 1 else 0.0)
            return out

        fake.script(slow_first_answer)
        prefix = f"t{uuid.uuid4().hex[:8]}"
        settings = make_settings(tmp_path, queue_prefix=prefix, open_base_url=fake.url, open_model="qwen-test")
        req = runs.build_request(settings, "Summarise notes.txt", stakes="low", workspace=str(ws))
        req.heartbeat_timeout_s = 2
        env = worker_env(tmp_path / "home", client, prefix, **open_endpoint_env(fake.url))
        worker = spawn_worker(env)
        events: list[RunEvent] = []
        try:
            handle = await runs.start_run(client, settings, req)
            reading = asyncio.create_task(_read(client, handle.id, events))
            for _ in range(1200):  # until the first words have reached the reader
                if any(e.kind == "answer_delta" for e in events):
                    break
                await asyncio.sleep(0.05)
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            worker = spawn_worker(env)
            await asyncio.wait_for(reading, 90)
            result = await runs.wait_result(handle)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
    return events, result, len(answers)


async def _read(client, workflow_id: str, into: list[RunEvent]) -> None:
    async for event in runs.run_events(client, workflow_id):
        into.append(event)
