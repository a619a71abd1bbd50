"""The workspace: the one folder a run's file tools may touch.

Every tool that names a file goes through here, so "inside the workspace" means the same thing for
reading, writing and querying: real paths, with every symbolic link followed, under the
workspace's real path, and never inside ``.stakeflow/`` (where ``write_file`` keeps its idempotency
records next to the data, see ``ledger.py``: a model that could read or forge them could make a
write replay or repeat).
"""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

from stakeflow.core.errors import ToolError

# stakeflow's own records inside a workspace. Hidden, so the workspace listings (the edge's file
# list, sql_query's tables, read_file's folder listing) already skip it.
RECORDS_DIR = ".stakeflow"


def resolve_workspace(workspace: str) -> Path:
    """The real path of the run's workspace folder; refuses a run that has none or a folder that is missing."""
    if not workspace.strip():
        raise ToolError("this run has no workspace folder, so file tools cannot run: start the run with a workspace")
    ws = real_path(Path(workspace))
    if ws is None:
        raise ToolError(f"the workspace {workspace} is a symbolic link that loops: point it at a real folder")
    if not ws.is_dir():
        raise ToolError(f"the workspace {ws} is not a folder: create it (mkdir -p {ws}) or use another workspace")
    return ws


def confine(ws: Path, path: str) -> Path:
    """The real path of ``path`` inside the workspace; refuses '..', absolute paths, symlinks out and loops."""
    if not path.strip():
        raise ToolError("the path is empty: give a path relative to the workspace, e.g. notes.txt")
    if Path(path).is_absolute():
        raise ToolError(f"'{path}' is an absolute path: give a path relative to the workspace, e.g. notes.txt")
    try:
        # resolve() follows every symlink that exists, including those in parent folders.
        target = real_path(ws / path)
    except (OSError, ValueError) as e:
        raise ToolError(f"'{path}' is not a usable path: {e}") from None
    if target is None:
        raise ToolError(
            f"'{path}' goes through a symbolic link that loops (a link that leads back to itself): "
            "remove or fix the link, or give another path"
        )
    if not target.is_relative_to(ws):
        raise ToolError(
            f"'{path}' leads outside the workspace (through '..' or a symbolic link): give a path inside the workspace"
        )
    if is_records(ws, target):
        raise ToolError(
            f"'{path}' is inside {RECORDS_DIR}/, where stakeflow keeps its own records: "
            "tools cannot read or write there; give another path"
        )
    return target


def existing_file(ws: Path, path: str) -> Path:
    """The real path of an existing file ``path`` inside the workspace whose real path is ``ws``.

    ``confine``, then a file that exists: what read_file reads and what a Python tool's ``WorkspaceFile`` argument
    may name, enum offered or not. A refusal lists the folder, so the model's next try can name a file that exists.
    """
    target = confine(ws, path)
    if target.is_dir():
        raise ToolError(f"'{path}' is a folder, not a file{_listing(target)}")
    if not target.is_file():
        raise ToolError(f"there is no file '{path}' in the workspace{_listing(target.parent)}")
    return target


def _listing(folder: Path, limit: int = 20) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        return ""
    if not names:
        return " (that folder is empty)"
    more = f", and {len(names) - limit} more" if len(names) > limit else ""
    return f" (that folder holds: {', '.join(names[:limit])}{more})"


def real_path(path: Path) -> Path | None:
    """``path.resolve()``, or None when a symbolic link on the way loops.

    Python 3.11 raises RuntimeError for a loop, later versions OSError(ELOOP); uncaught, either
    fails the activity, Temporal retries it five times and the whole run fails over one bad link.
    """
    try:
        return path.resolve()
    except RuntimeError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            return None
        raise


def is_records(ws: Path, real: Path) -> bool:
    """True when the real path ``real`` is stakeflow's records folder or inside it."""
    return real.is_relative_to(ws / RECORDS_DIR)


def lock_path(ws: Path, relative: str) -> Path:
    """The lock file (``stakeflow.stores.file_lock.exclusive``) for the workspace file at ``relative`` (its real
    path, relative to the workspace)."""
    digest = hashlib.sha256(relative.encode("utf-8")).hexdigest()
    return ws / RECORDS_DIR / "locks" / f"{digest}.lock"
