"""What a tool's executor is given besides its arguments, and the shape every executor has.

The dispatcher builds one ``ToolContext`` per call from the request and the worker's set-up, so an
executor never reads the ``ToolRequest`` or the worker itself: a new tool (an MCP server's, a user's
own function) is written against this and its validated argument model, nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stakeflow.agents.types import ToolResult
from stakeflow.config import ToolsConfig


@dataclass(frozen=True)
class ToolContext:
    """One call's surroundings: whose workspace, which limits, where side effects are recorded."""

    workspace: str  # the run's workspace folder as the request names it; "" = the run has none
    config: ToolsConfig  # the worker's [tools] settings; each tool reads its own section
    # The previous release's per-host ledger ($STAKEFLOW_HOME/ledger), read for calls of runs in flight
    # across the upgrade; records are now written with the data (see activities/tools/ledger.py).
    legacy_ledger_dir: Path
    idempotency_key: str = ""  # "<workflow id>/<run id>/<step>/<call>": the same for every retry of this call


# An executor takes the validated arguments (the tool's args_model from the catalogue) and the
# context. It refuses with ToolError (the model sees why); any other exception is the worker's
# trouble and goes to Temporal. Blocking work belongs in a thread (asyncio.to_thread): the
# worker's event loop runs every other activity too.
ToolExecutor = Callable[[Any, ToolContext], Awaitable[ToolResult]]
