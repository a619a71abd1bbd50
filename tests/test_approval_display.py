"""Approvals seen from the command line: `run` (plain, and --json on stderr) says what waits, why, and the exact
commands while it waits; `status` and `result --json` carry the approval record and ``needs_approval``.

`run` is a real subprocess on the session's dev server; the workers run in-process on its queues.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import uuid

import pytest
from click.testing import CliRunner

from stakeflow.agents.types import ApprovalRequest, ToolCall
from stakeflow.cli import cli
from stakeflow.core.contracts import APPROVE_UPDATE
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer
from tests.support import make_settings, open_endpoint_env, running_workers, worker_env

GOAL = "Summarise notes.txt into summary.txt"


@pytest.fixture
def open_fake():
    with FakeOpenAIServer(model="qwen-test") as server:
        steps = {1: call("read_file", path="notes.txt"), 2: call("write_file", path="summary.txt", content="grew\n")}
        server.script(agent(plan(("Read the notes", "read_file"), ("Write the summary", "write_file")), steps))
        yield server


@pytest.fixture
def setup(tmp_path, open_fake, client, monkeypatch):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("Revenue grew 12%.\n")
    settings = make_settings(tmp_path, open_base_url=open_fake.url, open_model="qwen-test", open_dialect="vllm")
    env = worker_env(settings.home, client, settings.queue_prefix, **open_endpoint_env(open_fake.url))
    for key, value in env.items():
        if key.startswith("STAKEFLOW_"):
            monkeypatch.setenv(key, value)  # the in-process `status` / `result` see the same server and queues
    return settings, ws, env


class Run:
    """`stakeflow run` in a subprocess; its stderr read as it comes."""

    def __init__(self, env: dict[str, str], ws, *flags: str) -> None:
        self.workflow_id = f"task-{uuid.uuid4().hex[:10]}"
        argv = [sys.executable, "-m", "stakeflow", "run", *flags, "--workspace", str(ws), "--id", self.workflow_id]
        self.proc = subprocess.Popen([*argv, GOAL], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=lambda: self.stderr.extend(iter(self.proc.stderr.readline, "")))
        self._reader.start()

    async def said(self, text: str, seconds: float = 30) -> None:
        for _ in range(int(seconds * 10)):
            if text in "".join(self.stderr):
                return
            await asyncio.sleep(0.1)
        pytest.fail(f"`run` never printed {text!r} while it waited; stderr:\n{''.join(self.stderr)}")

    async def finished(self) -> tuple[int, str]:
        # Not communicate(): it would read stderr too, and what it took the reader thread would never see.
        out = await asyncio.to_thread(self.proc.stdout.read)
        code = await asyncio.to_thread(self.proc.wait, 60)
        self._reader.join(10)
        return code, out


@pytest.fixture
def started():
    """`Run`s a test started; any still running when it ends (a failed test) is killed."""
    runs: list[Run] = []
    yield runs
    for run in runs:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(10)


def cli_json(*args: str) -> dict:
    out = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


async def test_a_plain_run_shows_what_waits_and_how_to_decide(client, setup, started):
    settings, ws, env = setup
    async with running_workers(client, settings):
        run = Run(env, ws)
        started.append(run)
        wf = run.workflow_id
        await run.said(f"stakeflow approve {wf} 2")
        waiting = "".join(run.stderr)
        assert "step 2/2 waits for approval: write_file(path='summary.txt', content='grew\\n', append=False)" in waiting
        assert "why: tool write_file has side effects" in waiting
        assert f'reject:  stakeflow reject {wf} 2 --note "why"' in waiting
        shown = (await asyncio.to_thread(CliRunner().invoke, cli, ["status", wf], catch_exceptions=False)).stdout
        assert "waits for approval: write_file(path='summary.txt'" in shown and f"stakeflow approve {wf} 2" in shown
        handle = client.get_workflow_handle(wf)
        edited = [ToolCall(tool="write_file", args={"path": "summary.txt", "content": "grew 12%\n"})]
        request = ApprovalRequest(step=2, decision="approve", by="ana", note="with the figure", tool_calls=edited)
        await handle.execute_update(APPROVE_UPDATE, request)
        code, _ = await run.finished()
    assert code == 0, "".join(run.stderr)
    assert "approved by ana: with the figure" in "".join(run.stderr)
    for shown in (cli_json("status", wf), cli_json("result", wf)):
        step = shown["steps"][1]
        assert step["needs_approval"] is True and shown["steps"][0]["needs_approval"] is False
        approval = step["approval"]
        assert (approval["decision"], approval["by"], approval["note"]) == ("approved", "ana", "with the figure")
        assert approval["edited_calls"] == [
            {"tool": "write_file", "args": {"path": "summary.txt", "content": "grew 12%\n"}}
        ]
        assert approval["waiting_for"].startswith("write_file(path='summary.txt'")
    assert (ws / "summary.txt").read_text() == "grew 12%\n"


async def test_run_json_says_on_stderr_what_waits_and_carries_the_record(client, setup, started):
    settings, ws, env = setup
    async with running_workers(client, settings):
        run = Run(env, ws, "--json")
        started.append(run)
        await run.said(f"stakeflow approve {run.workflow_id} 2")
        request = ApprovalRequest(step=2, decision="reject", by="ana", note="not now")
        await client.get_workflow_handle(run.workflow_id).execute_update(APPROVE_UPDATE, request)
        code, out = await run.finished()
    assert code == 0
    step = json.loads(out)["steps"][1]
    assert (step["status"], step["needs_approval"]) == ("skipped", True)
    assert (step["approval"]["decision"], step["approval"]["note"]) == ("rejected", "not now")
