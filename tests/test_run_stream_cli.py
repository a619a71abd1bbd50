"""`stakeflow run --stream` in a subprocess, as a user runs it (a real `stakeflow worker` process, the suite's dev
server, the scripted open model writing its answer a word every 0.15 s): the answer grows on stdout while the run
goes on, once, and the bill follows it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid

from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer
from tests.support import open_endpoint_env, spawn_worker, worker_env

ANSWER = "Revenue grew 12% over Q2, driven by the Nordic region, where two new stores opened in May and June."


def read_as_it_comes(proc: subprocess.Popen) -> list[tuple[float, bytes]]:
    """Every read of the process's stdout, with when it came, until it closes."""
    assert proc.stdout is not None
    reads: list[tuple[float, bytes]] = []
    while chunk := os.read(proc.stdout.fileno(), 4096):
        reads.append((time.monotonic(), chunk))
    return reads


async def test_stakeflow_run_shows_the_answer_growing(client, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text(ANSWER + "\n")
    with FakeOpenAIServer(model="qwen-test") as fake:
        fake.script(
            agent(plan(("Read the notes", "read_file")), {1: call("read_file", path="notes.txt")}, answer=ANSWER)
        )
        fake.chunk_delay_s = 0.15  # ~20 words: ~3 s of writing
        env = worker_env(tmp_path / "home", client, f"t{uuid.uuid4().hex[:8]}", **open_endpoint_env(fake.url))
        worker = spawn_worker(env)
        try:
            argv = [sys.executable, "-m", "stakeflow", "run", "--stream", "--workspace", str(ws), "Summarise notes.txt"]
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            reads = await asyncio.wait_for(asyncio.to_thread(read_as_it_comes, proc), 120)
            stderr = proc.stderr.read().decode() if proc.stderr else ""
            proc.wait(30)
        finally:
            worker.terminate()
            worker.wait(30)

    out = b"".join(chunk for _, chunk in reads).decode()
    assert proc.returncode == 0, stderr
    assert out.count(ANSWER) == 1 and "step 1/1 ·" in stderr
    # Growing: reads that held part of the answer came well before its last words.
    seen, partial_at, whole_at = "", [], None
    for at, chunk in reads:
        seen += chunk.decode()
        if ANSWER in seen:
            whole_at = at
            break
        if ANSWER.split()[0] in seen:
            partial_at.append(at)
    assert whole_at is not None and len(partial_at) >= 3 and whole_at - partial_at[0] > 1.0
    lines = out.rstrip().splitlines()
    answer_line = lines.index(ANSWER)
    assert any(line.strip().startswith("cost ") for line in lines[answer_line + 1 :])  # the bill after it
