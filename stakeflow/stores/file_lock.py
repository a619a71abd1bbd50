"""One writer at a time per file, across threads, processes and hosts: a workspace file (``write_file``), the
learn folder's ``promotions.json``.

``write_file`` decides whether a retried call already landed by looking at the file; that decision and
the write that follows it must not interleave with another writer's, or two attempts of one call (or
two runs appending to one log) could both decide "not there yet". The lock is a POSIX record lock
(``fcntl.lockf``) on a file in the workspace's ``.stakeflow/locks/``, so it holds between hosts too
wherever the shared file system honours POSIX locks (local disks; NFSv4 and most network file
systems do; some FUSE and SMB mounts do not, and there two hosts are not kept apart).

POSIX locks belong to a process, not a thread: two tool calls in one worker would both "hold" the
same one. A thread lock per lock file keeps them apart inside the process.

Waiting polls (a blocked ``lockf`` cannot be interrupted), so a call whose attempt was cancelled
stops waiting, and no attempt waits longer than ``LOCK_WAIT_S``: its start-to-close timeout (60 s)
has ended it by then anyway, and a retry starts over.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_WAIT_S = 50.0
_POLL_S = 0.05

_thread_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()


class LockWaitOver(TimeoutError):
    """Another writer held the file's lock for too long, or the call was cancelled while waiting.

    A TimeoutError (an OSError): Temporal retries the call, which starts over.
    """


@contextlib.contextmanager
def exclusive(path: Path, *, wait_s: float = LOCK_WAIT_S, cancelled: threading.Event | None = None) -> Iterator[None]:
    """Hold the lock file ``path`` exclusively for the block (blocking; call it from a thread)."""
    deadline = time.monotonic() + wait_s
    with _guard:
        in_process = _thread_locks.setdefault(str(path), threading.Lock())
    while not in_process.acquire(timeout=_POLL_S):
        _check_wait(deadline, wait_s, cancelled, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            while True:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):  # not "held elsewhere"
                        raise
                _check_wait(deadline, wait_s, cancelled, path)
                time.sleep(_POLL_S)
            try:
                yield
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        in_process.release()


def _check_wait(deadline: float, wait_s: float, cancelled: threading.Event | None, path: Path) -> None:
    if cancelled is not None and cancelled.is_set():
        raise LockWaitOver(f"the call was cancelled while waiting for {path}")
    if time.monotonic() > deadline:
        raise LockWaitOver(f"another write held {path} for over {wait_s:g}s; the call will be retried")
