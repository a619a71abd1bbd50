"""bench/concurrency.py's processes: the dev server, the model server, each variant's worker (a ``stakeflow worker``
with its ``[workers]`` settings, another checkout's for (sf0), or a role of bench/concurrency_roles.py), started
with logs in the round's temporary directory and stopped together."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.concurrency_roles import MODEL_NAME
from tests.support import free_port

REPO = Path(__file__).resolve().parent.parent
ROLES = str(REPO / "bench" / "concurrency_roles.py")  # the child processes' roles
LOCAL_CALLS = {"sfl", "sfl2"}  # the stakeflow variants with [workers] local_model_calls (the starter's too)
TWO_PROCESSES = {"sf2", "sfl2"}  # the ones run as `stakeflow worker --processes 2`


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.procs: list[subprocess.Popen] = []
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("STAKEFLOW_", "ANTHROPIC_", "OPENAI_", "OTEL_"))
        }
        self.env["PYTHONPATH"] = str(REPO)

    # -- processes --

    def spawn(
        self, argv: list[str], name: str, env: dict[str, str] | None = None, ready: str = "", cwd: Path = REPO
    ) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 (the child writes it for as long as it runs)
        proc = subprocess.Popen(
            argv, env=env or self.env, stdout=subprocess.PIPE if ready else log, stderr=log, cwd=cwd
        )
        self.procs.append(proc)
        return proc

    def read_line(self, proc: subprocess.Popen, timeout: float = 60) -> str:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = proc.stdout.readline().decode().strip()
            if line:
                return line
            if proc.poll() is not None:
                raise RuntimeError(f"child process ended with {proc.returncode}: see {self.tmp}")
        raise RuntimeError("child process did not report ready")

    def start_server(self) -> tuple[str, int]:
        from stakeflow.local.services import dev_server_command

        port = free_port()
        proc = self.spawn(dev_server_command(port, log_level="error"), "temporal")
        deadline = time.monotonic() + 30
        while not _port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dev server did not start: {(self.tmp / 'temporal.log').read_text()[-2000:]}")
            time.sleep(0.05)
        return f"127.0.0.1:{port}", proc.pid

    def start_model_server(self) -> tuple[str, int]:
        a = self.args
        proc = self.spawn(
            [sys.executable, ROLES, "model-server", "--latency", str(a.latency), "--calls", str(a.calls)],
            "model",
            ready="url",
        )
        return self.read_line(proc), proc.pid

    def start_worker(self, key: str, address: str, model_url: str, prefix: str) -> subprocess.Popen:
        if key in ("pai", "floor", "floorl"):
            role = "pai" if key == "pai" else "floor"
            proc = self.spawn(
                [
                    sys.executable,
                    ROLES,
                    f"{role}-worker",
                    "--address",
                    address,
                    "--model-url",
                    model_url,
                    "--pollers",
                    str(self.args.pollers),
                    "--slots",
                    str(self.args.slots),
                    "--key",
                    key,
                ],
                f"worker-{key}",
                ready="polling",
            )
            self.read_line(proc)
            return proc
        env = {
            **self.env,
            "STAKEFLOW_HOME": str(self.tmp / f"home-{key}"),
            "STAKEFLOW_TEMPORAL_ADDRESS": address,
            "STAKEFLOW_QUEUE_PREFIX": prefix,
            "STAKEFLOW_OPEN_BASE_URL": model_url,
            "STAKEFLOW_OPEN_MODEL": MODEL_NAME,
            "STAKEFLOW_OPEN_DIALECT": "vllm",
        }
        argv = [sys.executable, "-m", "stakeflow", "worker"]
        if key == "sf0":
            # Another checkout's code (PYTHONPATH comes before the editable install's finder).
            env["PYTHONPATH"] = str(Path(self.args.baseline).resolve())
        if key in TWO_PROCESSES:
            argv += ["--processes", "2"]
        if key != "sf0":  # the baseline's settings have no [workers] section: it runs as it was
            home = self.tmp / f"home-{key}"
            home.mkdir(parents=True, exist_ok=True)
            (home / "stakeflow.toml").write_text(worker_toml(self.args, key))
        return self.spawn(argv, f"worker-{key}", env=env, cwd=Path(self.args.baseline) if key == "sf0" else REPO)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def worker_toml(args: argparse.Namespace, key: str) -> str:
    """The stakeflow worker's ``[workers]`` for variant ``key``: ``--slots`` and ``--pollers`` on every queue."""
    lines = [
        "[workers]",
        f"local_model_calls = {'true' if key in LOCAL_CALLS else 'false'}",
        f"workflow_sandbox = {'false' if key == 'sfu' else 'true'}",
    ]
    for role in ("workflows", "open"):
        lines.append(f"[workers.{role}]")
        if args.slots:
            lines += [
                f"max_concurrent_activities = {args.slots}",
                f"max_concurrent_workflow_tasks = {args.slots}",
                f"max_concurrent_local_activities = {args.slots}",
            ]
        if args.pollers:
            lines += [f"workflow_pollers = {args.pollers}", f"activity_pollers = {args.pollers}"]
    return "\n".join(lines) + "\n"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
