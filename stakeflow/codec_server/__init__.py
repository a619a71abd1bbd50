"""`stakeflow codec-server`: Temporal's remote codec endpoint, so people allowed to can read encrypted payloads.

With payload encryption on (stakeflow/temporal/codec.py), the Temporal Web UI and `temporal workflow show`
see only ciphertext. Both can send payloads to a *codec server* to be decoded (Temporal's remote codec
protocol): ``POST .../decode`` and ``POST .../encode`` with a ``Payloads`` message as protobuf JSON
(``{"payloads": [{"metadata": {...}, "data": "<base64>"}]}``), answered in the same form. Only the
last path segment counts, so the server can be mounted under any prefix.

Who may call it:

- **Bearer tokens** (``STAKEFLOW_CODEC_AUTH_TOKENS``, comma-separated, environment only): every
  ``/encode`` and ``/decode`` needs ``Authorization: Bearer <one of them>`` (compared in constant time).
  The Web UI sends the signed-in user's access token this way when its codec setting "pass access
  token" is on (it does so only to an https endpoint); `temporal workflow show --codec-endpoint URL
  --codec-auth "Bearer <token>"` and ``TEMPORAL_CODEC_AUTH`` do the same from a terminal.
- **Browsers**: CORS answers only the configured Web UI origins (``codec_cors_origins``, default the
  local dev server's UI), so a page elsewhere cannot use a visitor's credentials to decode.

A server without tokens refuses to start: an open decode endpoint would hand every payload to anyone
who can reach it. Payloads are never logged; each request is logged with its path, status, origin
and payload count.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payloads

from stakeflow.config import Settings
from stakeflow.core.errors import ConfigError
from stakeflow.temporal.codec import CodecKeyError, EncryptionCodec, load_keyring

log = logging.getLogger("stakeflow.codec_server")
MAX_BODY = 8 * 1024 * 1024  # a history's payloads come in pages; 8 MB is ample and bounds memory
ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"


def cors_origins(settings: Settings) -> list[str]:
    """The Web UI origins allowed to call from a browser: configured, or the local dev server's UI."""
    if settings.codec_cors_origins is not None:
        return [o.rstrip("/") for o in settings.codec_cors_origins]
    return [f"http://127.0.0.1:{settings.ui_port}", f"http://localhost:{settings.ui_port}"]


def tokens(settings: Settings) -> list[bytes]:
    raw = settings.codec_auth_tokens.get_secret_value() if settings.codec_auth_tokens else ""
    return [t.strip().encode() for t in raw.split(",") if t.strip()]


def create_app(settings: Settings) -> Starlette:
    """The codec server's ASGI app; ConfigError naming the fix when keys or tokens are missing."""
    keyring = load_keyring(settings)
    if keyring is None:
        raise ConfigError(
            "the codec server has no keys: set STAKEFLOW_CODEC_KEYS_FILE (or STAKEFLOW_CODEC_KEYS), "
            "the same keys as the workers"
        )
    allowed = tokens(settings)
    if not allowed:
        raise ConfigError(
            "the codec server needs bearer tokens: set STAKEFLOW_CODEC_AUTH_TOKENS "
            "(comma-separated) in its environment; it will not decode for anyone who asks"
        )
    codec = EncryptionCodec(keyring)
    origins = cors_origins(settings)

    def cors(request: Request) -> dict[str, str]:
        origin = request.headers.get("origin", "").rstrip("/")
        if origin and origin in origins:
            return {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            }
        return {"Vary": "Origin"}

    def authorized(request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return False
        token = given.strip().encode()
        return any(hmac.compare_digest(token, t) for t in allowed)  # no early exit: each compared in full

    async def convert(request: Request) -> Response:
        op = request.path_params["path"].rstrip("/").rsplit("/", 1)[-1]
        headers = cors(request)
        if request.method == "OPTIONS":
            status = 204 if "Access-Control-Allow-Origin" in headers else 403
            _log(request, status, 0)
            return Response(status_code=status, headers=headers)
        if op not in ("encode", "decode"):
            return _answer(request, 404, {"error": "POST .../encode or .../decode"}, headers)
        if not authorized(request):
            return _answer(
                request,
                401,
                {"error": "send Authorization: Bearer <token> (STAKEFLOW_CODEC_AUTH_TOKENS)"},
                {**headers, "WWW-Authenticate": 'Bearer realm="stakeflow codec"'},
            )
        body = await _read_body(request)
        if body is None:
            return _answer(request, 413, {"error": f"at most {MAX_BODY} bytes per request"}, headers)
        try:
            payloads = json_format.Parse(body or b"{}", Payloads())
        except json_format.ParseError as e:
            return _answer(request, 400, {"error": f"not Payloads as protobuf JSON: {str(e)[:200]}"}, headers)
        try:
            out = await (codec.encode if op == "encode" else codec.decode)(payloads.payloads)
        except CodecKeyError as e:
            return _answer(request, 400, {"error": str(e)}, headers)
        text = json_format.MessageToJson(Payloads(payloads=out), indent=None)
        _log(request, 200, len(out))
        return Response(text, media_type="application/json", headers=headers)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "keys": keyring.ids, "encrypts_with": keyring.current[0]})

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/{path:path}", convert, methods=["POST", "OPTIONS"]),
        ]
    )


async def _read_body(request: Request) -> bytes | None:
    """The body, or None once it is over ``MAX_BODY``: its Content-Length says so, or the bytes read do (a chunked
    body has no Content-Length, so the bytes are counted as they arrive and the rest is never read)."""
    if int(request.headers.get("content-length") or 0) > MAX_BODY:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(request: Request, status: int, body: dict, headers: dict[str, str]) -> Response:
    _log(request, status, 0)
    return JSONResponse(body, status_code=status, headers=headers)


def _log(request: Request, status: int, count: int) -> None:
    log.info(
        "%s %s %d origin=%s namespace=%s payloads=%d",
        request.method,
        request.url.path,
        status,
        request.headers.get("origin", "-"),
        request.headers.get("x-namespace", "-"),
        count,
    )


def describe(settings: Settings, host: str, port: int) -> Sequence[str]:
    """What `stakeflow codec-server` prints when it starts (no keys, no tokens)."""
    keyring = load_keyring(settings)
    ids = ", ".join(keyring.ids) if keyring else "none"
    return [
        f"codec server on http://{host}:{port} (POST /encode, /decode; keys {ids}; "
        f"{len(tokens(settings))} bearer token(s); browser origins {', '.join(cors_origins(settings))})"
    ]
