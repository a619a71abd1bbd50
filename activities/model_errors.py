"""Turn what a model call raised into a Temporal ApplicationError the workflow and retry policy act on.

Retryable (``MODEL_UNAVAILABLE``): rate limits, overload, server errors, connection failures,
timeouts, with ``next_retry_delay`` from the provider's ``retry-after``. Non-retryable: invalid output
(``MODEL_OUTPUT_INVALID``: the workflow decides on another attempt or escalation), rejected credentials
(``MODEL_AUTH``), rejected requests (``MODEL_REQUEST_REJECTED``). Messages name the fix and never
contain an API key.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from pydantic import ValidationError
from pydantic_ai.exceptions import (
    ModelAPIError,
    ModelAuthenticationError,
    ModelConnectionError,
    ModelHTTPError,
    ModelNotFoundError,
    ModelQuotaExceededError,
    ModelRequestRejectedError,
    ModelRequestTimeout,
    ModelTimeoutError,
    UnexpectedModelBehavior,
)
from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart
from temporalio.exceptions import ApplicationError

from stakeflow.core.errors import MODEL_AUTH, MODEL_OUTPUT_INVALID, MODEL_REQUEST_REJECTED, MODEL_UNAVAILABLE

_RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}


@dataclass(frozen=True)
class CallContext:
    """What an error message may say about the call: never the key itself, only where it came from."""

    route: str  # "open" or "frontier"
    model: str
    url: str
    timeout_s: float
    embedded: bool = False
    secrets: tuple[str, ...] = ()  # redacted from every message
    # For the embedded model: how it ended, if the service stakeflow started has crashed (else None).
    crash_report: Callable[[], str | None] | None = None

    @property
    def who(self) -> str:
        return f"the open model endpoint at {self.url}" if self.route == "open" else "the Anthropic API"


def missing_frontier_key() -> ApplicationError:
    return ApplicationError(
        "ANTHROPIC_API_KEY is not set on this worker: export it, or run with --stakes low",
        type=MODEL_AUTH,
        non_retryable=True,
    )


def to_application_error(
    exc: BaseException,
    ctx: CallContext,
    details: Any = None,
    *,
    response: ModelResponse | None = None,
    max_output_tokens: int | None = None,
) -> ApplicationError | None:
    """The ApplicationError for ``exc``, or None when it is not a model-call failure (a bug: let it raise).

    ``details`` (e.g. the usage of a response that failed validation) becomes the error's details, so the
    workflow can still count what the attempt cost. ``response`` is the last one received, if any.
    """
    extra = [details] if details is not None else []
    if isinstance(exc, UnexpectedModelBehavior):
        reason = invalid_reason(exc, response, max_output_tokens)
        message = f"{ctx.route} model output failed validation: {reason}"
        return ApplicationError(_redact(message, ctx), *extra, type=MODEL_OUTPUT_INVALID, non_retryable=True)
    if not isinstance(exc, ModelAPIError):
        return None
    message, kind = _describe(exc, ctx)
    if kind != MODEL_UNAVAILABLE:
        return ApplicationError(_redact(message, ctx), *extra, type=kind, non_retryable=True)
    delay = retry_after_seconds(exc)
    return ApplicationError(
        _redact(message, ctx),
        *extra,
        type=MODEL_UNAVAILABLE,
        next_retry_delay=timedelta(seconds=delay) if delay is not None else None,
    )


def _describe(exc: ModelAPIError, ctx: CallContext) -> tuple[str, str]:
    """The message and ApplicationError type for a provider API failure."""
    status = exc.status_code if isinstance(exc, ModelHTTPError) else None
    said = provider_message(exc)
    if isinstance(exc, ModelQuotaExceededError):
        message = f"{ctx.who} refused: the account's quota or credits are exhausted ({status}: {said})"
        return message, MODEL_REQUEST_REJECTED
    if isinstance(exc, ModelAuthenticationError) or status in (401, 403):
        return _auth_message(status, said, ctx), MODEL_AUTH
    if isinstance(exc, ModelNotFoundError) or status == 404:
        fix = (
            "set STAKEFLOW_OPEN_MODEL to a model it serves (or check STAKEFLOW_OPEN_BASE_URL)"
            if ctx.route == "open"
            else "set STAKEFLOW_FRONTIER_MODEL to a model your key may use"
        )
        return f"{ctx.who} does not know model '{ctx.model}' ({status}: {said}): {fix}", MODEL_REQUEST_REJECTED
    client_error = status is not None and 400 <= status < 500 and status not in _RETRYABLE_STATUS
    if isinstance(exc, ModelRequestRejectedError) or client_error:
        return f"{ctx.who} rejected the request for model '{ctx.model}' ({status}: {said})", MODEL_REQUEST_REJECTED
    if isinstance(exc, ModelTimeoutError | ModelRequestTimeout):
        var = "STAKEFLOW_OPEN_TIMEOUT_S" if ctx.route == "open" else "STAKEFLOW_FRONTIER_TIMEOUT_S"
        message = f"{ctx.who} did not answer within {ctx.timeout_s:g}s: it may be overloaded; or raise {var}"
        return message, MODEL_UNAVAILABLE
    if isinstance(exc, ModelConnectionError):
        return _connection_message(exc, ctx), MODEL_UNAVAILABLE
    state = {429: "is rate limiting", 529: "is overloaded"}.get(status or 0, "is unavailable")
    code = f"{status}: " if status is not None else ""
    return f"{ctx.who} {state} ({code}{said}); Temporal will retry", MODEL_UNAVAILABLE


def _auth_message(status: int | None, said: str, ctx: CallContext) -> str:
    if ctx.route == "frontier":
        return f"ANTHROPIC_API_KEY was rejected ({status}: {said}): set a valid key, or run with --stakes low"
    return f"{ctx.who} rejected the API key ({status}: {said}): set STAKEFLOW_OPEN_API_KEY to the key it expects"


def _connection_message(exc: ModelConnectionError, ctx: CallContext) -> str:
    if any(isinstance(e, ConnectionRefusedError) for e in _chain(exc)):
        what = "connection refused"
    else:
        what = "cannot connect" if exc.phase == "connect" else _short(str(exc))
    if ctx.route == "frontier":
        return f"cannot reach the Anthropic API ({what}): check the network, or ANTHROPIC_BASE_URL if set"
    if ctx.embedded:
        crashed = ctx.crash_report() if ctx.crash_report else None
        if crashed:
            return f"the embedded open model at {ctx.url} is down ({what}): {crashed}"
        return (
            f"the embedded open model is not running at {ctx.url} ({what}): `stakeflow up` starts it, "
            "or set STAKEFLOW_OPEN_BASE_URL to your vLLM server"
        )
    return (
        f"cannot reach the open model at {ctx.url} ({what}): check STAKEFLOW_OPEN_BASE_URL and that the "
        "server is up, or unset it and run `stakeflow up` for the embedded model"
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def retry_after_seconds(exc: BaseException) -> float | None:
    """Seconds the provider asked to wait (``retry-after``: seconds or an HTTP-date), if it said."""
    if isinstance(exc, ModelAPIError) and exc.retry_after is not None:
        return exc.retry_after
    for link in _chain(exc):
        headers = getattr(getattr(link, "response", None), "headers", None)
        if headers is not None and (value := headers.get("retry-after")) is not None:
            return parse_retry_after(value)
    return None


def parse_retry_after(value: str) -> float | None:
    """A ``retry-after`` value (seconds, or an HTTP-date) as seconds from now."""
    try:
        seconds = float(value)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def provider_message(exc: ModelAPIError) -> str:
    """The provider's own error message, short."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return _short(str(inner["message"]))
        if isinstance(inner, str):
            return _short(inner)
    if isinstance(body, str) and body:
        return _short(body)
    return _short(exc.message)


def invalid_reason(
    exc: UnexpectedModelBehavior, response: ModelResponse | None = None, max_output_tokens: int | None = None
) -> str:
    """A short reason for invalid output: the first validation errors, or what the response did instead."""
    reason = next(
        (
            "; ".join(_describe_validation_error(e) for e in link.errors()[:3])
            for link in _chain(exc)
            if isinstance(link, ValidationError)
        ),
        None,
    )
    if response is not None and response.finish_reason == "length":
        return f"cut off at max_output_tokens={max_output_tokens} ({reason or _short(exc.message)})"
    if reason is not None or response is None:
        return reason or _short(exc.message)
    if calls := [p.tool_name for p in response.parts if isinstance(p, ToolCallPart)]:
        return f"called {', '.join(calls)} instead of answering"
    if not any(isinstance(p, TextPart) and p.content.strip() for p in response.parts):
        return "empty response"
    return _short(exc.message)


def _describe_validation_error(err: Any) -> str:
    if err["type"] == "json_invalid":
        return f"not valid JSON ({err['msg'].removeprefix('Invalid JSON: ')})"
    where = ".".join(str(p) for p in err["loc"]) or "output"
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) else f" (got {_short(repr(got), 60)})"
    return f"{where}: {err['msg']}{shown}"


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _redact(message: str, ctx: CallContext) -> str:
    """``message`` with every secret of ``ctx`` masked: a provider may echo the key it rejected."""
    for secret in ctx.secrets:
        if len(secret) >= 4:
            message = message.replace(secret, "***")
    return message
