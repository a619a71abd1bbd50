"""``python -m stakeflow.local.supervise EXIT_FILE -- ARGV...``: run one local service and record how it ended.

The CLI that starts a background service (`stakeflow up`) is gone long before the service dies, so
nobody would be left to collect its exit status: a llama.cpp server killed by SIGSEGV would simply
vanish, and the next command could only say "not running". This small parent waits for the
service, forwards the stop signals `stakeflow down` sends, and writes the exit code or signal to
``EXIT_FILE`` (JSON), which `up`, `run`, `status` and `doctor` read to say *crashed, how, and
what to do*.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m stakeflow.local.supervise EXIT_FILE -- ARGV...", file=sys.stderr)
        return 2
    exit_file, command = Path(argv[0]), argv[2:]
    exit_file.unlink(missing_ok=True)
    stop_requested = False
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL)

    def forward(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    returncode = child.wait()
    record = {
        "pid": child.pid,
        "returncode": returncode,
        "signal": signal.Signals(-returncode).name if returncode < 0 else None,
        "ended_at": time.time(),
        "stop_requested": stop_requested,
    }
    temp = exit_file.with_suffix(".tmp")
    temp.write_text(json.dumps(record))
    os.replace(temp, exit_file)
    return 0 if returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
