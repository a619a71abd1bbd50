"""Activities: every call that touches the world (models, tools)."""

# This folder is installed as stakeflow.activities: imported as plain `activities` (from the repository's root) it would be a
# second copy of the same code, with its own classes and registries, under a name another package may own.
if __name__ != "stakeflow.activities":
    raise ImportError(
        f"import stakeflow.activities, not {__name__}: the repository's activities/ folder is the package stakeflow.activities"
    )
