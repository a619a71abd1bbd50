"""Error answers (4xx, 5xx), raised wherever the check that refuses a request stands."""

from __future__ import annotations

from collections.abc import Mapping

RETRY_AFTER_S = 5


class Refused(Exception):
    """An error answer: status, message, extra headers."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def unavailable(message: str) -> Refused:
    """503 with Retry-After: Temporal (or a hook's secret) is missing, and a retry may succeed."""
    return Refused(503, message, {"Retry-After": str(RETRY_AFTER_S)})
