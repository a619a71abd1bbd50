"""Children that die with the process that started them, even when it is SIGKILLed.

A worker's stdio MCP servers are its children; a worker killed with SIGKILL (the OOM killer, a node drain)
cannot stop them, and a server that ignores SIGTERM lived on, reparented to PID 1, holding its files and
memory. Linux's ``PR_SET_PDEATHSIG`` has the kernel send a signal to a child when its parent goes.

The MCP client library starts the server itself (no ``preexec_fn`` hook), so the server is started through
this file, run as a script: ``python -I -S .../parent_death.py PARENT_PID COMMAND ARGS...`` sets the signal,
checks that the parent has not already gone, and replaces itself with the command (the setting survives
``execve``). Run by path with the standard library only, it needs nothing of the server's environment (which
holds only the variables ``[mcp.<name>] env`` names): not even stakeflow on ``sys.path``. The kernel sends it when the *thread* that forked the child ends: workers start servers from
their event loop, which runs in the main thread (DESIGN.md). Elsewhere than Linux this is a plain exec.
"""

from __future__ import annotations

import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """In a child: be sent ``sig`` when the parent dies (Linux; a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)


def wrapped(command: str, args: list[str]) -> tuple[str, list[str]]:
    """``command args`` started through this module, so that it dies with this process (SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return command, args
    return sys.executable, ["-I", "-S", os.path.abspath(__file__), str(os.getpid()), command, *args]


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: parent_death.py PARENT_PID COMMAND [ARGS...]")
    parent, command = int(argv[0]), argv[1]
    die_with_parent()
    if os.getppid() != parent:  # the parent died before the signal was set: nobody would ever send it
        sys.exit(f"{command}: not started, its parent process {parent} has already exited")
    try:
        os.execvp(command, argv[1:])
    except OSError as e:
        sys.exit(f"cannot start {command}: {e.strerror}")


if __name__ == "__main__":
    main(sys.argv[1:])
