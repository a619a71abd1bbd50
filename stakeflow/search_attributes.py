"""stakeflow's custom search attributes, in one place.

Registered when stakeflow starts the dev server; a workflow that upserts an unregistered
attribute would retry its task forever, so they must exist before the first run.
"""

from __future__ import annotations

# name -> Temporal type (as `temporal server start-dev --search-attribute Name=Type` spells it)
SEARCH_ATTRIBUTES: dict[str, str] = {
    "StakeflowStakes": "Keyword",
    "StakeflowSensitivity": "Keyword",
    "StakeflowSource": "Keyword",
    "StakeflowOpenSteps": "Int",
    "StakeflowFrontierSteps": "Int",
    "StakeflowEscalations": "Int",
    "StakeflowCostUsd": "Double",
    "StakeflowAwaitingApproval": "Bool",
}


def dev_server_flags() -> list[str]:
    flags: list[str] = []
    for name, kind in SEARCH_ATTRIBUTES.items():
        flags += ["--search-attribute", f"{name}={kind}"]
    return flags
