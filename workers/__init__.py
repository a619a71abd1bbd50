"""Worker processes that poll stakeflow's task queues."""

# This folder is installed as stakeflow.workers: imported as plain `workers` (from the repository's root) it would be a
# second copy of the same code, with its own classes and registries, under a name another package may own.
if __name__ != "stakeflow.workers":
    raise ImportError(
        f"import stakeflow.workers, not {__name__}: the repository's workers/ folder is the package stakeflow.workers"
    )
