"""The idempotency ledger: what a side-effecting tool call did, by its key, kept with the data.

Temporal may deliver the same tool call twice (a retry after a lost completion, a worker killed
mid-call, an attempt that stalled past its timeout), and the second delivery may land on another
host. A tool with side effects records each call's outcome here under its idempotency key, so that
delivery finds the first one's outcome instead of acting again.

The ledger lives in the workspace, ``.stakeflow/ledger/``: every worker that can write a workspace's
files sees its records too, whichever host it runs on, and the records share the data's fate (a
restored or copied workspace carries them). It is hidden, so no workspace listing shows it, and the
file tools refuse to reach it (``workspace.confine``).

On disk, one JSON file per key, named by the key's SHA-256, written atomically. The release before
kept them in ``$STAKEFLOW_HOME/ledger`` of each host, under the same names: those are still read (never
written) so that a call of a run in flight across the upgrade is not done twice on the host that did it.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

from temporalio.exceptions import ApplicationError

from stakeflow.activities.tools.workspace import RECORDS_DIR
from stakeflow.core.errors import TOOL_FAILED

# A ledger folder that is not a writable folder is set-up, and no retry will change it.
_LEDGER_SETUP_ERRORS = (PermissionError, NotADirectoryError, FileExistsError)
_WRITABLE = "make it a folder the worker can write (it is in the workspace)"


def workspace_ledger(ws: Path) -> Path:
    """The ledger folder of the workspace whose real path is ``ws``."""
    return ws / RECORDS_DIR / "ledger"


class Ledger:
    """One JSON record per idempotency key, in the workspace; the previous release's folder read as a fallback."""

    def __init__(self, folder: Path, key: str, legacy_folder: Path | None = None) -> None:
        name = f"{hashlib.sha256(key.encode('utf-8')).hexdigest()}.json"
        self.path = folder / name
        self.legacy_path = legacy_folder / name if legacy_folder is not None else None

    def read(self) -> dict[str, Any] | None:
        """This key's record in the workspace, or None."""
        return self._read(self.path, _WRITABLE)

    def read_legacy(self) -> dict[str, Any] | None:
        """This key's record as the previous release left it in ``$STAKEFLOW_HOME/ledger``, or None."""
        if self.legacy_path is None:
            return None
        return self._read(self.legacy_path, "make it a folder the worker can read, or set STAKEFLOW_HOME to one")

    def record(self, entry: dict[str, Any]) -> None:
        try:
            write_atomically(self.path, json.dumps(entry, sort_keys=True).encode("utf-8"))
        except _LEDGER_SETUP_ERRORS as e:
            raise _unusable(self.path.parent, e, _WRITABLE) from None

    @staticmethod
    def _read(path: Path, fix: str) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except _LEDGER_SETUP_ERRORS as e:
            raise _unusable(path.parent, e, fix) from None


def _unusable(folder: Path, err: OSError, fix: str) -> ApplicationError:
    # Other OSErrors (a full disk) propagate as they are: a retry may succeed later.
    return ApplicationError(
        f"cannot use the tool ledger folder {folder}: {err.strerror}; {fix}",
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
