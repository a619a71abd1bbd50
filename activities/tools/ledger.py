"""The idempotency ledger: what a side-effecting tool call did, or is about to do, by its key.

Temporal may deliver the same tool call twice (a retry after a lost completion, a worker killed
mid-call). A tool with side effects records each call here under its idempotency key, so the
second delivery finds the first one's outcome instead of acting again.

On disk, one JSON file per key, named by the key's SHA-256, written atomically. Runs in flight
look their entries up by that name: changing the naming or the format strands them.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

from temporalio.exceptions import ApplicationError

from stakeflow.core.errors import TOOL_FAILED

# A ledger folder that is not a writable folder is set-up, and no retry will change it.
_LEDGER_SETUP_ERRORS = (PermissionError, NotADirectoryError, FileExistsError)


class Ledger:
    """One JSON record per idempotency key: what a side-effecting call did, or is about to do."""

    def __init__(self, folder: Path, key: str) -> None:
        self.path = folder / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()}.json"

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except _LEDGER_SETUP_ERRORS as e:
            raise self._unusable(e) from None

    def record(self, entry: dict[str, Any]) -> None:
        try:
            write_atomically(self.path, json.dumps(entry, sort_keys=True).encode("utf-8"))
        except _LEDGER_SETUP_ERRORS as e:
            raise self._unusable(e) from None

    def _unusable(self, err: OSError) -> ApplicationError:
        # Other OSErrors (a full disk) propagate as they are: a retry may succeed later.
        return ApplicationError(
            f"cannot use the tool ledger folder {self.path.parent}: {err.strerror}; make it a folder the "
            "worker can write, or set STAKEFLOW_HOME to one",
            type=TOOL_FAILED,
            non_retryable=True,
        )


def write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file and os.replace, so readers see the old or the new file, never half.

    The ledger's entries are written this way, and so is what ``write_file`` replaces: a crash
    leaves either whole.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
