"""Background processes stakeflow starts: spawn under a supervisor, tell running from crashed, stop safely.

Each service has three files in ``$STAKEFLOW_HOME/run``: ``<name>.pid`` (JSON: the supervisor's pid and
its identity — boot id and start time — so a pid reused after a reboot is never signalled), and
``<name>.exit``, written by the supervisor when the service ends (see ``supervise.py``). Its output goes
to ``$STAKEFLOW_HOME/logs/<name>.log``.

A service whose pid file is still there but whose supervisor is gone *crashed* (`down` removes the pid
file before it stops anything), and its state says how: exit code or signal, when, and the last lines
of its log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from stakeflow.config import Settings

State = Literal["running", "crashed", "stopped"]
LOG_TAIL_LINES = 8
_MARK = "--- stakeflow "  # opens each start's part of a log


@dataclass(frozen=True)
class ExitInfo:
    """How a service ended, as its supervisor saw it."""

    returncode: int | None
    signal: str | None = None
    ended_at: float | None = None

    def describe(self) -> str:
        when = ""
        if self.ended_at:
            when = " at " + datetime.fromtimestamp(self.ended_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if self.signal:
            return f"killed by {self.signal}{when}"
        if self.returncode is None:
            return f"ended{when}; its exit status is unknown (its supervisor was killed too)"
        return f"exited with code {self.returncode}{when}"


@dataclass(frozen=True)
class ServiceState:
    """One local service: running, crashed (with how), or stopped."""

    name: str
    state: State
    pid: int | None = None
    exit: ExitInfo | None = None
    log_path: Path | None = None
    log_tail: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.state == "running"

    def describe(self) -> str:
        if self.state == "running":
            return f"{self.name}: running (pid {self.pid})"
        if self.state == "stopped":
            return f"{self.name}: not running"
        ended = self.exit.describe() if self.exit else "ended"
        return f"{self.name} (pid {self.pid}), started by stakeflow, crashed: {ended}"


@dataclass(frozen=True)
class _Record:
    pid: int
    boot_id: str | None
    start: str | None


def pid_file(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.pid"


def exit_file(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.exit"


def log_file(settings: Settings, name: str) -> Path:
    return settings.log_dir / f"{name}.log"


def spawn(settings: Settings, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    """Start ``argv`` in the background under the supervisor; returns the supervisor's pid."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    done = exit_file(settings, name)
    done.unlink(missing_ok=True)
    supervised = [sys.executable, "-m", "stakeflow.local.supervise", str(done), "--", *argv]
    with open(log_file(settings, name), "ab") as log:
        log.write(f"\n{_MARK}{datetime.now(UTC).isoformat(timespec='seconds')}: starting {name}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            supervised,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the CLI; `down` stops it
            env=env,
            close_fds=True,
        )
    record = {"pid": proc.pid, "boot_id": _boot_id(), "start": _start_time(proc.pid), "argv": argv}
    _write_atomic(pid_file(settings, name), json.dumps(record))
    return proc.pid


def state(settings: Settings, name: str) -> ServiceState:
    """Whether the service stakeflow started is running, crashed (and how), or stopped."""
    record = _read_record(settings, name)
    logs = log_file(settings, name)
    if record is None:
        return ServiceState(name, "stopped", log_path=logs)
    if _is_ours(record):
        return ServiceState(name, "running", record.pid, log_path=logs)
    return ServiceState(name, "crashed", record.pid, _exit_info(settings, name), logs, tail(logs))


def forget(settings: Settings, name: str) -> None:
    """Drop the records of a service that ended (before starting it again, or after `down`)."""
    pid_file(settings, name).unlink(missing_ok=True)
    exit_file(settings, name).unlink(missing_ok=True)


def alive(settings: Settings, name: str, pid: int) -> bool:
    """True while the supervisor ``pid`` started for ``name`` still runs."""
    record = _read_record(settings, name)
    return record is not None and record.pid == pid and _is_ours(record)


def stop(settings: Settings, name: str, timeout: float = 15.0) -> str | None:
    """Stop the service (SIGTERM, then SIGKILL after ``timeout``); returns what was done, None if nothing ran.

    The pid is signalled only if it is still the process stakeflow started (same boot, same start time):
    after a reboot the number may belong to something else.
    """
    record = _read_record(settings, name)
    forget(settings, name)
    if record is None:
        return None
    if not _is_ours(record):
        return (
            None
            if not _pid_exists(record.pid)
            else f"{name}: pid {record.pid} is no longer stakeflow's (not signalled)"
        )
    _signal(record.pid, signal.SIGTERM, group=False)  # the supervisor forwards it to the service
    deadline = time.monotonic() + timeout
    while _is_ours(record) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _is_ours(record):
        _signal(record.pid, signal.SIGKILL, group=True)
    exit_file(settings, name).unlink(missing_ok=True)
    return f"{name} (pid {record.pid})"


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last lines of a log (since the service's last start), without blank ones."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    if _MARK in text:
        text = text.rsplit(_MARK, 1)[-1].split("\n", 1)[-1]
    kept = [line.rstrip()[:300] for line in text.splitlines() if line.strip()]
    return kept[-lines:]


# --- identity --------------------------------------------------------------------------------


def _read_record(settings: Settings, name: str) -> _Record | None:
    try:
        text = pid_file(settings, name).read_text().strip()
    except OSError:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, int):  # written by an older stakeflow: no identity recorded
        return _Record(data, None, None)
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
        return None
    return _Record(data["pid"], data.get("boot_id"), data.get("start"))


def _is_ours(record: _Record) -> bool:
    if not _pid_exists(record.pid):
        return False
    if record.boot_id is not None and record.boot_id != _boot_id():
        return False
    return record.start is None or record.start == _start_time(record.pid)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (an exited child of this very process) counts as gone
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """The process's start time: clock ticks since boot on Linux, ``ps``'s lstart elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        pass
    try:
        out = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _exit_info(settings: Settings, name: str) -> ExitInfo:
    try:
        data = json.loads(exit_file(settings, name).read_text())
    except (OSError, ValueError):
        return ExitInfo(None)
    return ExitInfo(data.get("returncode"), data.get("signal"), data.get("ended_at"))


def _signal(pid: int, sig: signal.Signals, *, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _write_atomic(path: Path, text: str) -> None:
    temp = path.with_suffix(".tmp")
    temp.write_text(text)
    os.replace(temp, path)
