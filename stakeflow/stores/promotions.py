"""Promotions: the learn loop's decisions (stakeflow learn), read by every run.

``promotions.json`` in the learn folder (``[learn] workdir``, default ``$STAKEFLOW_HOME/learn``) maps an agent
("" = runs without a named agent) to the open model that replaced its configured one, with the evidence. The
workflows worker writes it (the promote step); whatever starts runs (the CLI, the webhook server) reads it:
on a cluster they mount the same learn volume, as the train worker and vLLM do for datasets and adapters.

Writers change the file read-modify-write under an exclusive lock (``promotions.json.lock``, a POSIX lock:
it holds between processes and hosts where the volume honours POSIX locks, and between threads), and
replace it atomically from a temporary file of their own: readers need no lock and never see half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from stakeflow.agents.evals import Promotion
from stakeflow.config import Settings
from stakeflow.core.errors import InputError
from stakeflow.stores.file_lock import exclusive


def learn_dir(settings: Settings) -> Path:
    """The learn folder: each learn run's dataset and adapter, and the promotions (the functions below take it)."""
    return settings.learn.workdir or settings.home / "learn"


def promotions_path(folder: Path) -> Path:
    return folder / "promotions.json"


def promotions(folder: Path) -> dict[str, Promotion]:
    """Every promotion in the learn folder, by agent ("" = runs without a named agent); InputError when the file is
    damaged."""
    path = promotions_path(folder)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        records = json.loads(text)
        return {agent: Promotion.model_validate(found) for agent, found in records.items()}
    except (ValueError, AttributeError) as e:
        raise InputError(
            f"{path} is not a promotions file ({type(e).__name__}: {str(e)[:200]}): fix it, or "
            "delete it to use the configured open models again"
        ) from None


def promote(folder: Path, promotion: Promotion) -> None:
    """Record (atomically) that the agent's open model is now ``promotion.open_model``."""
    with _writing(folder):
        records = promotions(folder)
        records[promotion.agent or ""] = promotion
        _write(folder, records)


def promoted_model(folder: Path, agent: str | None, configured: str) -> Promotion | None:
    """The promotion in force for the agent, if any.

    A promotion stands in for the open model that was configured when it was made (``configured``); once the
    configuration names another one, the configuration wins: a person changed it after the learn loop decided.
    """
    found = promotions(folder).get(agent or "")
    return found if found is not None and found.configured == configured else None


def revoke(folder: Path, agent: str | None) -> Promotion | None:
    """Forget the agent's promotion (its configured open model is used again); the one removed, if any."""
    with _writing(folder):
        records = promotions(folder)
        removed = records.pop(agent or "", None)
        if removed is not None:
            _write(folder, records)
    return removed


@contextlib.contextmanager
def _writing(folder: Path) -> Iterator[None]:
    """One writer at a time: without it, two promotions read the same file and the second write drops the first."""
    path = promotions_path(folder)
    with exclusive(path.with_name(path.name + ".lock")):
        yield


def _write(folder: Path, records: dict[str, Promotion]) -> None:
    path = promotions_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")  # a name of its own
    try:
        os.fchmod(fd, 0o644)  # as readable as before: the webhook server and CLI read it, maybe as another user
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps({k: v.model_dump() for k, v in records.items()}, indent=2) + "\n")
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
