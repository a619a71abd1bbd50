"""What every route of the webhook server is given (settings, the hooks' secrets, the API token, the Temporal
link), and a request's body read within a limit: shared by the hook and run routes (app.py) and the dashboard."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from stakeflow.config import Settings
from stakeflow.webhooks.refused import Refused
from stakeflow.webhooks.temporal import TemporalLink


@dataclass
class Context:
    """The server's state, built once when the app is created (secrets read from the environment there)."""

    settings: Settings
    secrets: dict[str, bytes]  # hook name -> secret, for hooks whose variable is set
    api_token: str | None
    temporal: TemporalLink


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read no further than ``limit`` bytes: 413 when Content-Length says more, or once more has arrived."""
    too_big = Refused(413, f"the body is over this hook's limit of {limit} bytes (max_body_bytes)")
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise Refused(400, "Content-Length is not a number")
        if int(length) > limit:
            raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)
