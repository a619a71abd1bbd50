"""How the workflow reads an activity's failure: which kind it was, what to tell the user, whether it was a cancel."""

from __future__ import annotations

import asyncio

from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutType
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

from stakeflow.agents.types import CallFailure
from stakeflow.core import errors


class StepFailure(Exception):
    """Raised inside the workflow when a step cannot complete; becomes the run's failure (never retried)."""


def unavailable(e: ActivityError, kind: str | None) -> bool:
    """The endpoint could not answer through all retries (or no worker took the call)."""
    if kind == errors.MODEL_UNAVAILABLE:
        return True
    return isinstance(e.cause, TemporalTimeoutError)


def is_cancellation(e: BaseException) -> bool:
    if isinstance(e, (asyncio.CancelledError, CancelledError)):
        return True
    return isinstance(e, ActivityError) and isinstance(e.cause, CancelledError)


def error_type(e: ActivityError) -> str | None:
    c = e.cause
    return c.type if isinstance(c, ApplicationError) else None


def call_failure(e: ActivityError) -> CallFailure | None:
    """What a failed model call spent (usage, latency, cost: its last attempt), when its error carries it."""
    c = e.cause
    return CallFailure.from_details(c.details) if isinstance(c, ApplicationError) else None


def spent_usd(e: ActivityError) -> float:
    """The dollars a failed model call was billed (0 when unpriced or not carried)."""
    failure = call_failure(e)
    return (failure.cost.usd or 0.0) if failure is not None and failure.cost is not None else 0.0


def cause_text(e: ActivityError) -> str:
    """What went wrong, for the user: a timeout says which one, and what it means."""
    c = e.cause
    if isinstance(c, TemporalTimeoutError):
        if c.type == TimeoutType.HEARTBEAT:
            return "the worker running it stopped heartbeating (it died or stalled): timed out (heartbeat)"
        if c.type == TimeoutType.SCHEDULE_TO_START:
            return "no worker took it: timed out (schedule_to_start): is a worker polling the queue? run `stakeflow worker`"
        kind = c.type.name.lower() if c.type else "timeout"
        return f"it ran past its time limit: timed out ({kind})"
    return str(c.message if hasattr(c, "message") else c) if c else str(e)
