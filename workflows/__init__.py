"""Workflows: deterministic orchestration only."""

# This folder is installed as stakeflow.workflows: imported as plain `workflows` (from the repository's root) it would be a
# second copy of the same code, with its own classes and registries, under a name another package may own.
if __name__ != "stakeflow.workflows":
    raise ImportError(
        f"import stakeflow.workflows, not {__name__}: the repository's workflows/ folder is the package stakeflow.workflows"
    )
