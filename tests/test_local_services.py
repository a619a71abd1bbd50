"""Local services under their supervisor: a real process that dies is reported as crashed, how, and the fix.

No fakes of the process machinery: real children, real signals, real pid files. The "model server" that
faults is tests/model_server_process.py, started through the ``embedded_command`` setting.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stakeflow.activities.model_errors import CallContext, _connection_message
from stakeflow.core.errors import ServiceError
from stakeflow.local import processes, services
from tests.support import REPO, free_port, make_settings

MODEL_SERVER = str(Path(__file__).with_name("model_server_process.py"))


def embedded_settings(tmp_path, mode: str = "segv"):
    return make_settings(
        tmp_path,
        embedded_port=free_port(),
        embedded_command=[sys.executable, MODEL_SERVER, "{port}", mode],
    )


def wait_until(check, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def test_a_model_server_that_faults_on_its_first_completion_is_reported_as_crashed(tmp_path):
    settings = embedded_settings(tmp_path)
    with pytest.raises(ServiceError) as caught:
        services.ensure_embedded_model(settings)
    text = str(caught.value)
    assert "embedded-model crashed on its first completion" in text
    assert "started by stakeflow, crashed: killed by SIGSEGV" in text
    assert "ggml_backend_amx_mul_mat: about to fault" in text  # the last lines of its log
    assert "fix: a llama.cpp build compiled for another CPU" in text and "-DGGML_NATIVE=OFF" in text
    assert "stakeflow up`" in text and "start it with" not in text
    state = processes.state(settings, services.EMBEDDED)
    assert state.state == "crashed" and state.exit is not None and state.exit.signal == "SIGSEGV"


def test_a_restart_reports_the_last_crash_and_starts_it_again(tmp_path):
    settings = embedded_settings(tmp_path, mode="exit3")
    with pytest.raises(ServiceError) as first:
        services.ensure_embedded_model(settings)
    assert "crashed: exited with code 3" in str(first.value)
    pid_before = json.loads(processes.pid_file(settings, services.EMBEDDED).read_text())["pid"]
    with pytest.raises(ServiceError) as second:
        services.ensure_embedded_model(settings)
    pid_after = json.loads(processes.pid_file(settings, services.EMBEDDED).read_text())["pid"]
    assert pid_after != pid_before, "the crashed service was started again"
    assert "exited with code 3" in str(second.value)


def test_a_service_that_dies_later_is_crashed_not_stopped_and_down_forgets_it(tmp_path):
    settings = make_settings(tmp_path)
    code = "import os, signal, time; print('worker is up', flush=True); time.sleep(0.3); os.kill(os.getpid(), signal.SIGKILL)"
    pid = processes.spawn(settings, services.WORKER, [sys.executable, "-c", code])
    wait_until(lambda: not processes.alive(settings, services.WORKER, pid))
    wait_until(lambda: processes.exit_file(settings, services.WORKER).exists())
    [crashed] = services.crashed_services(settings)
    assert crashed.name == "worker" and crashed.exit.signal == "SIGKILL"
    report = services.crash_report(crashed)
    assert f"worker (pid {pid}), started by stakeflow, crashed: killed by SIGKILL" in report
    assert "worker is up" in report and "runs in flight resume" in report
    services.stop_all(settings)
    assert services.crashed_services(settings) == []
    assert processes.state(settings, services.WORKER).state == "stopped"


def test_down_stops_the_service_through_its_supervisor(tmp_path):
    settings = make_settings(tmp_path)
    pid = processes.spawn(settings, services.WORKER, [sys.executable, "-c", "import time; time.sleep(60)"])
    wait_until(lambda: processes.state(settings, services.WORKER).running)
    [done] = services.stop_all(settings, timeout=5)
    assert done == f"worker (pid {pid})"
    wait_until(lambda: not processes.alive(settings, services.WORKER, pid))
    assert processes.state(settings, services.WORKER).state == "stopped"


def test_down_never_signals_a_pid_that_is_no_longer_stakeflows(tmp_path):
    settings = make_settings(tmp_path)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        settings.run_dir.mkdir(parents=True)
        # What a pid file looks like after a reboot: the number now belongs to another process.
        record = {"pid": bystander.pid, "boot_id": "an-earlier-boot", "start": "123", "argv": ["stakeflow"]}
        processes.pid_file(settings, services.TEMPORAL).write_text(json.dumps(record))
        assert processes.state(settings, services.TEMPORAL).state == "crashed"
        lines = services.stop_all(settings, timeout=1)
        assert lines == [f"temporal: pid {bystander.pid} is no longer stakeflow's (not signalled)"]
        time.sleep(0.2)
        assert bystander.poll() is None, "an unrelated process was signalled"
    finally:
        bystander.kill()
        bystander.wait()


def test_a_call_to_a_crashed_embedded_model_says_crashed_and_the_fix(tmp_path):
    settings = embedded_settings(tmp_path)
    with pytest.raises(ServiceError):
        services.ensure_embedded_model(settings)
    from pydantic_ai.exceptions import ModelConnectionError

    from stakeflow.activities.parameters import ModelParameters

    ctx = CallContext(
        "open",
        "smollm2-135m-instruct",
        settings.open_url,
        30.0,
        embedded=True,
        crash_report=ModelParameters.from_settings(settings).embedded_crash,  # what call_model is given
    )
    error = ModelConnectionError("smollm2-135m-instruct", "connection refused", phase="connect")
    error.__cause__ = ConnectionRefusedError(111, "Connection refused")
    message = _connection_message(error, ctx)
    assert message.startswith(f"the embedded open model at {settings.open_url} is down (connection refused): ")
    assert "crashed: killed by SIGSEGV" in message and "-DGGML_NATIVE=OFF" in message
    assert "`stakeflow up`" in message and "start it with" not in message


def test_the_supervisor_forwards_a_stop_and_records_it(tmp_path):
    exit_file = tmp_path / "svc.exit"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stakeflow.local.supervise",
            str(exit_file),
            "--",
            sys.executable,
            "-c",
            "import time; print('up', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "up"
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=10) == 1
    record = json.loads(exit_file.read_text())
    assert record["signal"] == "SIGTERM" and record["stop_requested"] is True


def test_the_dev_server_command_is_built_in_one_place():
    """`up`, the tests' dev servers and the benchmarks' take `temporal server start-dev`'s flags from
    stakeflow/local/services.py: a tuning flag or search attribute written again elsewhere drifts from it."""
    spelled = re.compile(r"\"start-dev\"|DEV_SERVER_TUNING|dev_server_flags\(\)|\"--sqlite-pragma\"")
    places = sorted(
        str(path.relative_to(REPO))
        for root in ("stakeflow", "agents", "activities", "workflows", "workers", "tests", "bench")
        for path in (REPO / root).rglob("*.py")
        if spelled.search(path.read_text()) and path.name != Path(__file__).name
    )
    assert places == ["stakeflow/local/services.py"]
