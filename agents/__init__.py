"""What an agent is: prompts, output types, the tool catalogue, the stakes policy."""

# This folder is installed as stakeflow.agents: imported as plain `agents` (from the repository's root) it would be a
# second copy of the same code, with its own classes and registries, under a name another package may own.
if __name__ != "stakeflow.agents":
    raise ImportError(
        f"import stakeflow.agents, not {__name__}: the repository's agents/ folder is the package stakeflow.agents"
    )
