"""The threads a team's Python tools run in: a bounded set of their own, each call held to its ``timeout_s``.

A tool function is the team's code: it may block, loop or hang. Run on the worker's default executor (as
``asyncio.to_thread`` does), every hung call kept one of its few threads for good, and once they were all
taken the built-in tools (``read_file``, ``sql_query``), which need that executor too, stopped, and so did
the worker's shutdown. So each Python tool call runs in a daemon thread of its own, at most ``size`` at
once: a call that passes its ``timeout_s`` is abandoned (the model is told; a thread cannot be killed, so
it keeps its slot until it ends), later calls wait for a free slot within their own timeout, and a
stopping worker never waits for them. An ``async`` tool runs in its own event loop in that thread, so
even one that blocks cannot stall the worker's loop (its heartbeats, every other activity).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any

from stakeflow.core.errors import ToolError

DEFAULT_SIZE = 8


class ToolTimedOut(ToolError):
    """A Python tool call did not finish within its timeout_s (its thread may still be running)."""


class ToolThreads:
    """At most ``size`` Python tool calls running at once, each in its own daemon thread."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._slots: asyncio.Semaphore | None = None  # made on first use, on the worker's event loop
        self._running: dict[int, str] = {}  # call number -> tool name, while its thread runs
        self._calls = 0

    async def run(self, name: str, fn: Callable[..., Any], kwargs: dict[str, Any], timeout_s: float) -> Any:
        """``fn(**kwargs)``'s value; ToolTimedOut when it (or the wait for a free thread) passes ``timeout_s``."""
        slots = self._slots = self._slots or asyncio.Semaphore(self.size)
        started = time.monotonic()
        try:
            await asyncio.wait_for(slots.acquire(), timeout_s)
        except TimeoutError:
            hung = ", ".join(sorted(set(self._running.values())))
            raise ToolTimedOut(
                f"{name} could not start within its timeout ({timeout_s:g}s): all {self.size} Python tool threads "
                f"are taken by calls still running past their timeout ({hung}); fix those tools (or raise their "
                "timeout_s), raise [tools] python_threads, or restart the worker"
            ) from None
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        self._calls += 1
        call = self._calls
        self._running[call] = name

        def ended() -> None:  # on the loop, when the thread ends: only then is its slot free again
            self._running.pop(call, None)
            slots.release()

        def work() -> None:
            try:
                value = asyncio.run(fn(**kwargs)) if inspect.iscoroutinefunction(fn) else fn(**kwargs)
            except BaseException as e:  # the tool's own failure, reported to the model by the caller
                _post(loop, _settle, done, None, e)
            else:
                _post(loop, _settle, done, value, None)
            finally:
                _post(loop, ended)

        # In the caller's context, as asyncio.to_thread runs a function: the tool's own spans nest under its call.
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(work,), name=f"stakeflow-tool-{name}-{call}", daemon=True).start()
        left = max(0.0, timeout_s - (time.monotonic() - started))
        try:
            return await asyncio.wait_for(asyncio.shield(done), left)
        except TimeoutError:
            raise ToolTimedOut(
                f"{name} did not finish within its timeout_s ({timeout_s:g}s) and was abandoned; it may still be "
                "running (and acting): make it faster, or raise timeout_s in its @tool(...) declaration"
            ) from None

    @property
    def running(self) -> list[str]:
        """The tools whose calls are running now (including abandoned ones), one entry per call."""
        return sorted(self._running.values())


def _settle(done: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if done.done():  # abandoned at its timeout, or the activity was cancelled
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(value)


def _post(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    """Run ``fn`` on the loop; a call that ends after its worker stopped finds the loop closed, and nothing to tell."""
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        pass
