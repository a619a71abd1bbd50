"""The CLI end to end, in subprocesses, as a user runs it: up, run, status, result, cancel, down.

`up` starts its own dev server (file db in STAKEFLOW_HOME), and a background worker; the open
model is the scripted OpenAI-compatible server, so no GPU or key is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer, Reply
from tests.support import EXAMPLE_WORKSPACE, free_port, open_endpoint_env

STAKEFLOW = [sys.executable, "-m", "stakeflow"]


def stakeflow(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*STAKEFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout)


def slow_then(body, seconds=60):
    return Reply.delayed(seconds, "too late")


@pytest.fixture
def open_fake():
    with FakeOpenAIServer(model="qwen-test") as server:
        yield server


@pytest.fixture
def cli_env(tmp_path, open_fake):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STAKEFLOW_", "ANTHROPIC_"))}
    env.update(
        STAKEFLOW_HOME=str(home),
        STAKEFLOW_TEMPORAL_PORT=str(free_port()),
        STAKEFLOW_UI_PORT=str(free_port()),
        **open_endpoint_env(open_fake.url),
    )
    yield env
    stakeflow(env, "down", timeout=60)


def pids(home: Path) -> dict[str, int]:
    return {p.stem: json.loads(p.read_text())["pid"] for p in (home / "run").glob("*.pid")}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_up_run_status_result_cancel_down(cli_env, open_fake, tmp_path):
    workspace = tmp_path / "ws"
    shutil.copytree(EXAMPLE_WORKSPACE, workspace)
    home = Path(cli_env["STAKEFLOW_HOME"])

    up = stakeflow(cli_env, "up")
    assert up.returncode == 0, up.stderr
    assert "temporal: started dev server" in up.stdout
    assert "worker: started" in up.stdout
    assert (home / "temporal.db").exists()
    started = pids(home)
    assert set(started) == {"temporal", "worker"}  # an open URL is set: no embedded model
    assert stakeflow(cli_env, "up").stdout.count("started") == 0  # idempotent

    open_fake.script(
        agent(
            plan(("Total units per region", "sql_query")),
            {
                1: call(
                    "sql_query",
                    query="SELECT region, sum(units) AS units FROM 'sales.csv' GROUP BY region ORDER BY region",
                )
            },
            answer="Nordic 26, South 15, West 36",
        )
    )
    ran = stakeflow(cli_env, "run", "--json", "--workspace", str(workspace), "Units per region in sales.csv?")
    assert ran.returncode == 0, ran.stderr
    out = json.loads(ran.stdout)
    wf_id = out["workflow_id"]
    assert out["status"] == "completed"
    assert out["answer"] == "Nordic 26, South 15, West 36"
    assert out["run_id"]
    ui_port = cli_env["STAKEFLOW_UI_PORT"]
    assert out["ui_url"] == f"http://127.0.0.1:{ui_port}/namespaces/default/workflows/{wf_id}"
    [step] = out["steps"]
    assert {k: step[k] for k in ("index", "route", "model", "stakes", "tools")} == {
        "index": 1,
        "route": "open",
        "model": "qwen-test",
        "stakes": "low",
        "tools": ["sql_query"],
    }
    assert step["reason"] == "tool sql_query is read-only; planner assessed low stakes"

    status = stakeflow(cli_env, "status", wf_id)
    assert status.returncode == 0, status.stderr
    assert f"{wf_id}: completed" in status.stdout
    assert "step 1/1 · ok · open · qwen-test · sql_query" in status.stdout

    result = stakeflow(cli_env, "result", wf_id, "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["answer"] == "Nordic 26, South 15, West 36"
    human = stakeflow(cli_env, "result", wf_id)
    assert human.stdout.rstrip().endswith("Nordic 26, South 15, West 36")

    # --no-wait returns at once; cancel ends the run while its model call hangs.
    open_fake.script(agent(plan(("Think", None)), {1: lambda body: Reply.delayed(60, {"result": "late"})}))
    t0 = time.monotonic()
    started_run = stakeflow(cli_env, "run", "--json", "--no-wait", "Think hard")
    assert started_run.returncode == 0, started_run.stderr
    assert time.monotonic() - t0 < 20
    pending = json.loads(started_run.stdout)
    assert pending["status"] == "running" and pending["workflow_id"].startswith("task-")
    not_done = stakeflow(cli_env, "result", pending["workflow_id"])
    assert not_done.returncode == 1 and "still running" in not_done.stderr
    assert stakeflow(cli_env, "cancel", pending["workflow_id"]).returncode == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        s = json.loads(stakeflow(cli_env, "status", pending["workflow_id"], "--json").stdout)
        if s["status"] != "running":
            break
        time.sleep(0.5)
    assert s["status"] == "canceled"

    down = stakeflow(cli_env, "down")
    assert down.returncode == 0
    assert "temporal" in down.stdout and "worker" in down.stdout
    for pid in started.values():
        assert not alive(pid)
    assert pids(home) == {}


def test_failed_run_reports_the_step_and_exits_1(cli_env, open_fake):
    open_fake.script(agent(plan(("Compute", "calculator")), {1: Reply.raw("not json at all")}))
    ran = stakeflow(cli_env, "run", "--sensitivity", "private", "What is 2+2?")
    assert ran.returncode == 1
    assert "Traceback" not in ran.stderr
    assert "step 1/1 'Compute' failed" in ran.stderr
    assert "not escalated: data is private" in ran.stderr


def test_run_prints_each_step_once_then_the_bill_and_the_answer(cli_env, open_fake, tmp_path):
    workspace = tmp_path / "ws"
    shutil.copytree(EXAMPLE_WORKSPACE, workspace)
    open_fake.script(
        agent(
            plan(("Read the notes", "read_file"), ("Add the growth figures", "calculator")),
            {1: call("read_file", path="notes.txt"), 2: call("calculator", expression="12 + 8")},
            answer="Revenue grew 12%.",
        )
    )
    ran = stakeflow(cli_env, "run", "--workspace", str(workspace), "Summarise notes.txt")
    assert ran.returncode == 0, ran.stderr
    both = ran.stderr + ran.stdout
    assert both.count("step 1/2 ·") == 1 and both.count("step 2/2 ·") == 1
    lines = ran.stdout.rstrip().splitlines()
    assert lines[-1] == "Revenue grew 12%."
    bill = next(line for line in lines if line.strip().startswith("cost "))
    assert lines.index(bill) < len(lines) - 1  # the bill comes before the answer


def test_a_worker_killed_mid_run_is_reported_restarted_and_the_run_completes(cli_env, open_fake):
    home = Path(cli_env["STAKEFLOW_HOME"])
    assert stakeflow(cli_env, "up").returncode == 0
    worker_pid = pids(home)["worker"]

    def slow_step(body):
        return Reply.delayed(6, {"tool_calls": [], "result": "thought it through"})

    open_fake.script(agent(plan(("Think", None)), {1: slow_step}, answer="done thinking"))
    proc = subprocess.Popen(
        [*STAKEFLOW, "run", "Think hard"], env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while not any(c.body and "Now step 1" in json.dumps(c.body) for c in open_fake.calls):
        assert time.monotonic() < deadline, "the step never reached the model"
        time.sleep(0.1)
    # The supervisor's child is the worker itself: kill that, as the OOM killer would.
    child = int(subprocess.run(["pgrep", "-P", str(worker_pid)], capture_output=True, text=True).stdout.split()[0])
    os.kill(child, 9)
    out, errs = proc.communicate(timeout=180)
    assert proc.returncode == 0, errs
    assert f"worker (pid {worker_pid}), started by stakeflow, crashed: killed by SIGKILL" in errs
    assert "fix: `stakeflow up` starts a new worker" in errs
    assert "worker: started" in errs
    assert out.rstrip().endswith("done thinking")


def test_an_unsupported_answer_is_flagged_and_strict_exits_3(cli_env, open_fake, tmp_path):
    workspace = tmp_path / "ws"
    shutil.copytree(EXAMPLE_WORKSPACE, workspace)
    query = "SELECT sum(units * unit_price) AS revenue FROM 'sales.csv'"
    open_fake.script(
        agent(plan(("Sum the revenue", "sql_query")), {1: call("sql_query", query=query)}, answer="It was 105,283.64.")
    )
    goal = "What was the total revenue in sales.csv?"
    ran = stakeflow(cli_env, "run", "--workspace", str(workspace), goal)
    assert ran.returncode == 0, ran.stderr  # completed: the answer is flagged, not failed
    lines = ran.stdout.rstrip().splitlines()
    assert lines[-1] == "It was 105,283.64."
    assert lines[-2].startswith("warning: not supported by what the run observed: 105,283.64")
    assert "ANTHROPIC_API_KEY" in lines[-2] and "STAKEFLOW_OPEN_BASE_URL" in lines[-2]

    strict = stakeflow(cli_env, "run", "--json", "--strict", "--workspace", str(workspace), goal)
    assert strict.returncode == 3, strict.stderr
    out = json.loads(strict.stdout)
    assert out["status"] == "completed"
    assert out["answer_supported"] is False and out["unsupported_claims"] == ["105,283.64"]
    assert "not supported by what the run observed: 105,283.64" in strict.stderr

    open_fake.script(
        agent(plan(("Sum the revenue", "sql_query")), {1: call("sql_query", query=query)}, answer="16,330")
    )
    fine = stakeflow(cli_env, "run", "--json", "--strict", "--workspace", str(workspace), goal)
    assert fine.returncode == 0, fine.stderr
    assert json.loads(fine.stdout)["answer_supported"] is True
