"""`stakeflow doctor` as a user runs it (a subprocess), on a healthy stack and on broken ones.

The stack is real: `stakeflow up` starts a dev server and a worker; the embedded model is a real process
(tests/model_server_process.py, via ``embedded_command``) so that killing it is a real crash; the
frontier is the scripted Anthropic server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakes import FakeAnthropicServer, FakeOpenAIServer
from tests.support import free_port

STAKEFLOW = [sys.executable, "-m", "stakeflow"]
MODEL_SERVER = str(Path(__file__).with_name("model_server_process.py"))
SECRET = "sk-ant-doctor-SECRET-0042"
HOOK_SECRET = "hook-secret-doctor-77"


def stakeflow(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*STAKEFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def frontier():
    with FakeAnthropicServer() as server:
        yield server


@pytest.fixture
def doctor_env(tmp_path, frontier):
    home = tmp_path / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text(
        '[hooks.tickets]\nsecret_env = "TICKETS_HOOK_SECRET"\ngoal = "Triage: {payload.title}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STAKEFLOW_", "ANTHROPIC_"))}
    env.update(
        STAKEFLOW_HOME=str(home),
        STAKEFLOW_TEMPORAL_PORT=str(free_port()),
        STAKEFLOW_UI_PORT=str(free_port()),
        STAKEFLOW_EMBEDDED_PORT=str(free_port()),
        STAKEFLOW_EMBEDDED_COMMAND=json.dumps([sys.executable, MODEL_SERVER, "{port}", "ok"]),
        ANTHROPIC_API_KEY=SECRET,
        ANTHROPIC_BASE_URL=frontier.url,
        TICKETS_HOOK_SECRET=HOOK_SECRET,
    )
    yield env
    stakeflow(env, "down", timeout=60)


def checks(ran: subprocess.CompletedProcess) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in json.loads(ran.stdout)}


def test_a_healthy_stack_is_all_ok_and_exit_0(doctor_env):
    assert stakeflow(doctor_env, "up").returncode == 0
    ran = stakeflow(doctor_env, "doctor")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    lines = ran.stdout.strip().splitlines()
    assert lines and all(line.startswith("ok") for line in lines), ran.stdout
    for name in (
        "temporal",
        "search attributes",
        "worker workflows",
        "worker open",
        "worker frontier",
        "worker tools",
        "open model",
        "embedded build",
        "frontier",
        "trace store",
        "hook tickets",
        "service embedded-model",
        "service temporal",
        "service worker",
    ):
        assert any(line[6:].startswith(name) for line in lines), f"no {name!r} line in:\n{ran.stdout}"
    assert SECRET not in ran.stdout and HOOK_SECRET not in ran.stdout
    report = checks(stakeflow(doctor_env, "doctor", "--json"))
    assert (
        report["open model"]["status"] == "ok"
        and "structured output (llamacpp dialect)" in report["open model"]["detail"]
    )
    assert "stakeflow's local dev server" in report["temporal"]["detail"]


def test_a_killed_embedded_model_is_named_with_the_fix_and_exit_1(doctor_env):
    home = Path(doctor_env["STAKEFLOW_HOME"])
    assert stakeflow(doctor_env, "up").returncode == 0
    supervisor = json.loads((home / "run" / "embedded-model.pid").read_text())["pid"]
    child = int(subprocess.run(["pgrep", "-P", str(supervisor)], capture_output=True, text=True).stdout.split()[0])
    os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not (home / "run" / "embedded-model.exit").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ran = stakeflow(doctor_env, "doctor", "--json")
    assert ran.returncode == 1
    report = checks(ran)
    service = report["service embedded-model"]
    assert service["status"] == "fail" and "crashed: killed by SIGKILL" in service["detail"]
    assert "`stakeflow up` starts it again" in service["fix"]
    assert report["open model"]["status"] == "fail" and "crashed" in report["open model"]["fix"]
    human = stakeflow(doctor_env, "doctor")
    assert human.returncode == 1 and "FAIL  service embedded-model" in human.stdout
    assert "checks failed: service embedded-model, open model" in human.stderr


def test_a_wrong_open_base_url_is_named_with_the_fix_and_exit_1(doctor_env):
    assert stakeflow(doctor_env, "up").returncode == 0
    bad = {**doctor_env, "STAKEFLOW_OPEN_BASE_URL": f"http://127.0.0.1:{free_port()}/v1"}
    ran = stakeflow(bad, "doctor", "--json")
    assert ran.returncode == 1
    model = checks(ran)["open model"]
    assert model["status"] == "fail" and "did not complete a request (ConnectError)" in model["detail"]
    assert model["fix"] == "start your vLLM server (see deploy/) or fix STAKEFLOW_OPEN_BASE_URL"


def test_an_endpoint_that_answers_500_fails_every_probe_alike(doctor_env):
    """One verdict: `models`, `up` and `doctor` all call an HTTP 500 broken (they used to disagree)."""
    with FakeOpenAIServer(model="qwen-test") as vllm:
        vllm.script(lambda body: {"ok": True})
        vllm.fail_models_with = 500
        env = {**doctor_env, "STAKEFLOW_OPEN_BASE_URL": vllm.url, "STAKEFLOW_OPEN_MODEL": "qwen-test"}
        models = json.loads(stakeflow(env, "models", "--json").stdout)
        assert models[0]["reachable"] is False and "HTTP 500" in models[0]["detail"]
        up = stakeflow(env, "up")
        assert up.returncode == 1 and "answers /models with HTTP 500" in up.stderr
