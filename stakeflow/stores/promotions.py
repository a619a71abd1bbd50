"""Promotions: the learn loop's decisions (stakeflow learn), read by every run.

``promotions.json`` in the learn folder (``[learn] workdir``, default ``$STAKEFLOW_HOME/learn``) maps an agent
("" = runs without a named agent) to the open model that replaced its configured one, with the evidence. The
workflows worker writes it (the promote step); whatever starts runs (the CLI, the webhook server) reads it:
on a cluster they mount the same learn volume, as the train worker and vLLM do for datasets and adapters.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from stakeflow.agents.evals import Promotion
from stakeflow.config import Settings
from stakeflow.core.errors import InputError


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
    records = promotions(folder)
    removed = records.pop(agent or "", None)
    if removed is not None:
        _write(folder, records)
    return removed


def _write(folder: Path, records: dict[str, Promotion]) -> None:
    path = promotions_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(f".{os.getpid()}.tmp")
    temp.write_text(json.dumps({k: v.model_dump() for k, v in records.items()}, indent=2) + "\n")
    os.replace(temp, path)
