"""Time to the first answer token against time to the whole answer, as a reader of the run's stream sees them.

Two models:

  scripted   tests/fakes' FakeOpenAIServer writing the answer a word every --word-delay seconds (a slow model:
             0.1 s is ~10 tokens/s), one dev server, stakeflow's real workers in this process;
  embedded   the default a user gets with no endpoint: SmolLM2-135M on llama.cpp, started by `stakeflow up` in an
             isolated STAKEFLOW_HOME with its own ports (as bench/tasks.py does), over examples/workspace.

Per run, from the moment it is started: when the answer step starts (``step_started`` of the answer), when its
first text reaches the reader (first ``answer_delta``), and when the reader has it whole (``done``). The reader is
``runs.run_events`` (what `stakeflow run`, ``RunHandle.stream`` and ``GET /runs/<id>/events`` use). Also, from the
run's history: the stream's signals (one per batch of deltas) and their bytes, against the history's events.

    python bench/stream.py                       # both, 3 runs each
    python bench/stream.py --only scripted --runs 5 --word-delay 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.harness import dev_server
from bench.tasks import isolated_env
from stakeflow.config import Settings, load_settings
from stakeflow.services import runs
from stakeflow.temporal.connection import connect
from stakeflow.workers.main import run_workers
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer

ANSWER_WORDS = 60
GOAL = "Summarise notes.txt"


async def one_run(client: Client, settings: Settings, workspace: Path) -> dict[str, float]:
    req = runs.build_request(settings, GOAL, workspace=str(workspace))
    started = time.monotonic()
    handle = await runs.start_run(client, settings, req, None)
    marks: dict[str, float] = {}
    async for event in runs.run_events(client, handle.id):
        at = time.monotonic() - started
        if event.kind == "step_started" and event.title == "answer":
            marks.setdefault("answer_step", at)
        elif event.kind == "answer_delta":
            marks.setdefault("first_token", at)
        elif event.kind == "done":
            marks["whole"] = at
            marks["chars"] = len(event.text)
            if event.status != "completed":
                print(f"  run {handle.id} {event.status}: {event.error}", file=sys.stderr)
    marks.update(await history_of(client, handle.id))
    print(f"  run {handle.id}: {marks}", file=sys.stderr)
    return marks


async def history_of(client: Client, workflow_id: str) -> dict[str, float]:
    """The run's history (every generation's last): events, and the stream's signals and their bytes."""
    events = signals = signal_bytes = 0
    async for e in client.get_workflow_handle(workflow_id).fetch_history_events():
        events += 1
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            signals += 1
            signal_bytes += e.workflow_execution_signaled_event_attributes.input.ByteSize()
    return {"history_events": events, "signals": signals, "signal_bytes": signal_bytes}


async def scripted(runs_n: int, word_delay: float) -> list[dict[str, float]]:
    words = " ".join(f"word{i}" for i in range(ANSWER_WORDS))
    workspace = Path(tempfile.mkdtemp())
    (workspace / "notes.txt").write_text(words + "\n")
    env = await dev_server()
    try:
        with FakeOpenAIServer(model="qwen-bench") as fake:
            fake.script(agent(plan(("Read the notes", "read_file")), {1: call("read_file", path="notes.txt")}, words))
            fake.chunk_delay_s = word_delay
            settings = Settings(
                home=Path(tempfile.mkdtemp()),
                queue_prefix=f"b{uuid.uuid4().hex[:8]}",
                open_base_url=fake.url,
                open_model="qwen-bench",
                open_dialect="vllm",
            )
            stop = asyncio.Event()
            workers = asyncio.create_task(run_workers(env.client, settings, stop=stop))
            try:
                return [await one_run(env.client, settings, workspace) for _ in range(runs_n)]
            finally:
                stop.set()
                await workers
    finally:
        await env.shutdown()


async def embedded(runs_n: int) -> list[dict[str, float]]:
    home = Path(tempfile.mkdtemp(prefix="stakeflow-bench-stream-"))
    env = isolated_env(home, frontier=False)
    for k in ("STAKEFLOW_OPEN_BASE_URL", "STAKEFLOW_OPEN_MODEL", "STAKEFLOW_OPEN_DIALECT"):
        env.pop(k, None)  # the embedded default
    stakeflow = [sys.executable, "-m", "stakeflow"]
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        up = subprocess.run([*stakeflow, "up"], capture_output=True, text=True, timeout=600, cwd=REPO)
        if up.returncode != 0:
            raise SystemExit(f"stakeflow up failed:\n{up.stdout}{up.stderr}")
        settings = load_settings()
        client = await connect(settings)
        return [await one_run(client, settings, REPO / "examples" / "workspace") for _ in range(runs_n)]
    finally:
        subprocess.run([*stakeflow, "down"], capture_output=True, timeout=120, cwd=REPO)
        os.environ.clear()
        os.environ.update(old)
        shutil.rmtree(home, ignore_errors=True)


def report(name: str, rows: list[dict[str, float]]) -> None:
    streamed = [r for r in rows if "first_token" in r]
    if len(streamed) < len(rows):
        print(f"\n{name}: {len(rows) - len(streamed)} of {len(rows)} runs had no answer text (see above)")
    rows = streamed
    if not rows:
        return

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    first = med("first_token") - med("answer_step")
    whole = med("whole") - med("answer_step")
    print(f"\n{name}: {len(rows)} runs, medians (seconds from the run's start)")
    print(f"  answer step starts     {med('answer_step'):7.2f}")
    print(f"  first answer text      {med('first_token'):7.2f}   ({first:.2f} s into the answer)")
    print(f"  whole answer (done)    {med('whole'):7.2f}   ({whole:.2f} s into the answer)")
    print(f"  answer length          {med('chars'):7.0f} chars")
    print(
        f"  history: {med('history_events'):.0f} events, of which {med('signals'):.0f} stream signals "
        f"({med('signal_bytes'):.0f} bytes)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["scripted", "embedded"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--word-delay", type=float, default=0.1, help="scripted model: seconds per word")
    args = parser.parse_args()
    if args.only in (None, "scripted"):
        report(f"scripted model, a word every {args.word_delay:g} s", asyncio.run(scripted(args.runs, args.word_delay)))
    if args.only in (None, "embedded"):
        report("embedded SmolLM2-135M (llama.cpp)", asyncio.run(embedded(args.runs)))
    sys.stdout.flush()
    os._exit(0)  # temporalio can crash at interpreter exit (DESIGN.md)


if __name__ == "__main__":
    main()
