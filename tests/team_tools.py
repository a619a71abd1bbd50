"""A team's own Python tools, as a user would write them (used by tests/test_python_tools.py)."""

from __future__ import annotations

import asyncio
import threading
import time

from pydantic import BaseModel

from stakeflow.tool import Workspace, WorkspaceFile, tool


@tool(risk="read_only")
def word_count(path: WorkspaceFile, workspace: Workspace, min_length: int = 1) -> str:
    """Count the words of a text file in the workspace (words of at least min_length characters)."""
    words = (workspace / path).read_text(encoding="utf-8").split()
    return str(sum(1 for w in words if len(w) >= min_length))


@tool(risk="side_effect", open_world=True, idempotent=False)
async def post_update(message: str) -> dict:
    """Post a status update to the team's chat."""
    return {"posted": message}


def undeclared(text: str) -> str:
    """A function nobody marked as a tool."""
    return text


@tool(risk="read_only")
def untyped(text) -> str:
    """A tool whose argument has no type hint."""
    return str(text)


@tool(risk="read_only")
def explode(size: int, workspace: Workspace) -> str:
    """Fail with an error message of `size` characters (each call is logged in the workspace's calls.log)."""
    with open(workspace / "calls.log", "a", encoding="utf-8") as log:
        log.write("explode\n")
    raise RuntimeError("x" * size)


class Order(BaseModel):
    item: str
    quantity: int


@tool(risk="read_only")
def order_total(order: Order, unit_price: float = 2.5) -> str:
    """Price an order."""
    return f"{order.quantity} x {order.item} = {order.quantity * unit_price:g}"


def _log_start(workspace, name: str) -> None:
    with open(workspace / "starts.log", "a", encoding="utf-8") as log:
        log.write(f"{name}\n")


@tool(risk="side_effect")
def slow_post(message: str, seconds: float, workspace: Workspace) -> str:
    """Post a message to a slow service (each start is logged in the workspace's starts.log)."""
    _log_start(workspace, "slow_post")
    time.sleep(seconds)
    return f"posted {message}"


@tool(risk="side_effect", idempotent=False)
async def slow_charge(amount: int, seconds: float, workspace: Workspace) -> str:
    """Charge a card, slowly; never twice (each start is logged in the workspace's starts.log)."""
    _log_start(workspace, "slow_charge")
    await asyncio.sleep(seconds)
    return f"charged {amount}"


RELEASE = threading.Event()  # set by a test to let every hung call end
HUNG: list[str] = []  # one entry per call of hang that started


@tool(risk="read_only", timeout_s=1.0)
def hang(label: str) -> str:
    """Never answer (until the test releases it)."""
    HUNG.append(label)
    RELEASE.wait()
    return label
