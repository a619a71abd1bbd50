"""py-spy on a benchmark's process: record its stacks while a round runs, and the functions that took the most."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path


def record(pid: int, out: Path, log: Path) -> subprocess.Popen:
    """py-spy (installed beside this Python) sampling ``pid`` into ``out`` as raw (collapsed) stacks, its own output
    in ``log``: 200 samples/s, without pausing the process, only while it holds the GIL."""
    spy = Path(sys.executable).with_name("py-spy")
    proc = subprocess.Popen(
        [
            str(spy),
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--nonblocking",
            "--rate",
            "200",
            "--gil",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),  # noqa: SIM115
    )
    time.sleep(1.0)  # py-spy attaches
    return proc


def stop(proc: subprocess.Popen) -> None:
    """Stop ``record``: py-spy writes its file on SIGINT."""
    proc.send_signal(signal.SIGINT)
    proc.wait(60)


def top_of_profile(path: Path, k: int = 25) -> str:
    """The functions with the largest inclusive share of samples in a py-spy raw (collapsed) file."""
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        seen = set()
        for frame in stack.split(";"):
            name = (
                frame.rsplit(" (", 1)[0] + " (" + frame.rsplit(" (", 1)[1].split(":")[0] + ")"
                if " (" in frame
                else frame
            )
            if name not in seen:
                seen.add(name)
                inclusive[name] = inclusive.get(name, 0) + n
    rows = sorted(inclusive.items(), key=lambda kv: -kv[1])[:k]
    return "\n".join([f"py-spy: {total} samples (inclusive share)"] + [f"{v / total:6.1%}  {name}" for name, v in rows])
