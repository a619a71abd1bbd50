"""Task-queue names, in one place.

Four queues, so the parts scale separately: open-model calls run near the GPU,
frontier calls wherever the API key lives, tools next to the data, workflows anywhere.
A prefix other than ``stakeflow`` gives an isolated set (tests, staging).
"""

from typing import Literal

DEFAULT_PREFIX = "stakeflow"

QueueRole = Literal["workflows", "open", "frontier", "tools"]
ROLES: tuple[QueueRole, ...] = ("workflows", "open", "frontier", "tools")

WORKFLOWS_QUEUE = f"{DEFAULT_PREFIX}-workflows"
OPEN_QUEUE = f"{DEFAULT_PREFIX}-open"
FRONTIER_QUEUE = f"{DEFAULT_PREFIX}-frontier"
TOOLS_QUEUE = f"{DEFAULT_PREFIX}-tools"


def queue_name(role: QueueRole, prefix: str = DEFAULT_PREFIX) -> str:
    """The task queue for one role under a prefix: ``queue_name("open") == "stakeflow-open"``."""
    return f"{prefix}-{role}"
