"""Several worker processes on one host: ``stakeflow worker --processes N`` (or ``[workers] processes``).

One Python process runs its workflow code, payload conversion and model-call client under one GIL, so on
one core: with 100 calls in flight the worker is CPU-bound long before the GPU's batch is full. N processes
use N cores. Each child is a whole ``stakeflow worker --processes 1`` for the same queues: its own Temporal
workers (pollers, slots, workflow cache), its own trace segments (their names carry the pid). Sticky
workflow caches keep a run on the child that started it while it stays cached; any child can take it over.

The parent only supervises. SIGTERM or SIGINT reaches every child, and each shuts down gracefully (in-flight
activities get their time, spans are flushed). A child that ends on its own stops the others and the
parent exits with its code, so a service manager (systemd's ``Restart=on-failure``, Kubernetes) restarts
the set rather than leaving it short of a process. On Linux a child also gets SIGTERM when the parent dies,
even by SIGKILL (``PR_SET_PDEATHSIG``), so no poller outlives its parent.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

log = logging.getLogger("stakeflow.worker")

_PR_SET_PDEATHSIG = 1


def child_argv(roles: Sequence[str]) -> list[str]:
    """One worker process for ``roles``, as the parent starts it."""
    return [sys.executable, "-m", "stakeflow", "worker", "--queues", ",".join(roles), "--processes", "1"]


def _die_with_parent(parent: int):
    def preexec() -> None:
        if sys.platform.startswith("linux"):
            try:
                ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
            except (OSError, AttributeError):
                pass
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def run_processes(roles: Sequence[str], count: int, env: dict[str, str] | None = None) -> int:
    """Run ``count`` worker processes until SIGTERM/SIGINT (0 when they all stop cleanly) or one ends on its own."""
    parent = os.getpid()
    children: list[subprocess.Popen] = []
    stopping: list[int] = []  # the signal we were asked to stop with, once

    def stop(signum: int, _frame: object = None) -> None:
        if not stopping:
            stopping.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        for _ in range(count):
            children.append(subprocess.Popen(child_argv(roles), env=env, preexec_fn=_die_with_parent(parent)))
        if stopping:  # asked to stop while starting them: the later ones have not heard it
            stop(stopping[0])
        log.info("worker processes %s", ", ".join(str(c.pid) for c in children))
        while any(c.poll() is None for c in children):
            for child in children:
                ended = child.poll()
                if ended is not None and not stopping:
                    log.error("worker process %d ended on its own (exit %d): stopping the others", child.pid, ended)
                    code = ended or 1
                    stop(signal.SIGTERM)
            time.sleep(0.1)
        if stopping and not code:
            code = next((c.returncode for c in children if c.returncode not in (0, -stopping[0])), 0)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
