"""The webhook server behind `stakeflow serve`: signed deliveries start runs, once each.

``POST /hooks/<name>`` checks, in this order, answering with the first failure:

1. the hook exists (404) and its secret is in the server's environment (503 naming the variable);
2. the body fits ``max_body_bytes`` (413): Content-Length is checked before reading, and a chunked
   body is counted while it streams, so an oversized body is never read whole;
3. the signature (401, and nothing is started). Two schemes, both HMAC-SHA256 with the hook's
   secret, hex digest, compared in constant time:

   - ``X-Stakeflow-Signature-256: sha256=<hex>``. Without ``X-Stakeflow-Timestamp`` the MAC covers
     the raw body bytes. With ``X-Stakeflow-Timestamp: <unix seconds, decimal digits>`` it covers
     the ASCII timestamp, one ``.``, then the raw body (``b"1767225600." + body``), and the
     timestamp must be within ``timestamp_tolerance_s`` of the server's clock (default 300 s);
     ``require_timestamp = true`` refuses deliveries without one.
   - ``X-Hub-Signature-256: sha256=<hex>`` (GitHub): the MAC covers the raw body.

   ``signature = "stakeflow"`` or ``"github"`` in the hook's table accepts only that header;
4. the body is JSON (400) and every template field is in it (422 naming the field);
5. Temporal is reachable (503 with Retry-After).

The workflow id is ``hook-<name>-<delivery>``, where <delivery> is ``X-Stakeflow-Delivery`` or
``X-GitHub-Delivery`` when it is at most 80 characters of ``[A-Za-z0-9._-]``, else
``sha256-<first 40 hex of its SHA-256>``; a delivery without either header gets
``body-<first 40 hex of the body's SHA-256>``, so the same bytes sent twice are one delivery. The
start uses id conflict policy FAIL and reuse policy REJECT_DUPLICATE: Temporal itself refuses a
second start of the same id, running or closed, and that refusal is how ``duplicate: true`` is
known, with no local table and no race between two concurrent redeliveries. The delivery id is not
covered by the signature (GitHub's is not either); the timestamp window is what bounds replays of a
signed body under a fresh delivery id.

``GET /runs/<workflow_id>`` (status and result, the shape of `stakeflow status --json`) and
``POST /runs/<workflow_id>/approve`` (``{"step": 2, "decision": "approve"|"reject", "note": "...",
"by": "..."}``, the workflow's approve_step update) need ``Authorization: Bearer $STAKEFLOW_API_TOKEN``;
without that variable on the server they answer 401 saying so.

Hook secrets and STAKEFLOW_API_TOKEN are read once, when the app is created; they never enter a
workflow input, a log line or a response. Logs carry the request id and delivery id, never a body.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Awaitable, Callable, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from agents.types import Progress, TaskRequest, TaskResult
from stakeflow import tasks
from stakeflow.core.errors import InputError, ServiceError
from stakeflow.hooks_config import HookConfig, MissingField, render_goal
from stakeflow.render import run_dict
from stakeflow.settings import Settings
from stakeflow.webhook_openapi import OPENAPI
from stakeflow.core.contracts import AGENT_WORKFLOW, PROGRESS_QUERY, queue_name

log = logging.getLogger("stakeflow.webhooks")

STAKEFLOW_SIGNATURE = "x-stakeflow-signature-256"
GITHUB_SIGNATURE = "x-hub-signature-256"
STAKEFLOW_TIMESTAMP = "x-stakeflow-timestamp"
DELIVERY_HEADERS = ("x-stakeflow-delivery", "x-github-delivery")
API_TOKEN_ENV = "STAKEFLOW_API_TOKEN"
RETRY_AFTER_S = 5
CONNECT_TIMEOUT_S = 5.0
RPC_TIMEOUT = timedelta(seconds=10)
_SAFE_DELIVERY = re.compile(r"[A-Za-z0-9._-]{1,80}")
_SIGNATURE_VALUE = re.compile(r"sha256=([0-9a-fA-F]{64})")


class Refused(Exception):
    """An answer other than 202: status, message, extra headers."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def unavailable(message: str) -> Refused:
    return Refused(503, message, {"Retry-After": str(RETRY_AFTER_S)})


# --- pure parts: signature, delivery id ------------------------------------------------------


def sign(secret: bytes, body: bytes, timestamp: str | None = None) -> str:
    """The X-Stakeflow-Signature-256 value for a body (and timestamp); senders and tests use it."""
    message = f"{timestamp}.".encode() + body if timestamp is not None else body
    return "sha256=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


def verify_signature(hook: HookConfig, secret: bytes, headers: Mapping[str, str], body: bytes, now: float) -> None:
    """Raise Refused(401) unless the delivery carries a valid, fresh signature."""
    ours, github = headers.get(STAKEFLOW_SIGNATURE), headers.get(GITHUB_SIGNATURE)
    if ours is not None and hook.signature in (None, "stakeflow"):
        timestamp = headers.get(STAKEFLOW_TIMESTAMP)
        _check_mac(secret, ours, f"{timestamp}.".encode() + body if timestamp is not None else body)
        if timestamp is None:
            if hook.require_timestamp:
                raise Refused(401, "this hook requires X-Stakeflow-Timestamp (unix seconds), signed with the body")
            return
        if not timestamp.isdigit() or len(timestamp) > 12:
            raise Refused(401, "X-Stakeflow-Timestamp must be unix seconds (decimal digits)")
        if abs(now - int(timestamp)) > hook.timestamp_tolerance_s:
            raise Refused(401, f"X-Stakeflow-Timestamp is more than {hook.timestamp_tolerance_s:g} s from the "
                               "server's clock: re-sign the delivery with the current time")
        return
    if github is not None and hook.signature in (None, "github"):
        if hook.require_timestamp:
            raise Refused(401, "this hook requires X-Stakeflow-Timestamp, which X-Hub-Signature-256 cannot carry")
        _check_mac(secret, github, body)
        return
    wanted = {"stakeflow": "X-Stakeflow-Signature-256", "github": "X-Hub-Signature-256"}.get(
        hook.signature or "", "X-Stakeflow-Signature-256 or X-Hub-Signature-256")
    raise Refused(401, f"missing signature: send {wanted}: sha256=<hex HMAC-SHA256 of the body with the hook's secret>")


def _check_mac(secret: bytes, value: str, message: bytes) -> None:
    m = _SIGNATURE_VALUE.fullmatch(value.strip())
    expected = hmac.new(secret, message, hashlib.sha256).hexdigest()
    # Compare even a malformed value, so timing says nothing about which check failed.
    given = m.group(1).lower() if m else "0" * 64
    if not hmac.compare_digest(expected, given) or m is None:
        raise Refused(401, "signature does not match: sign the raw body with HMAC-SHA256 and the hook's secret")


def workflow_id_for(hook_name: str, delivery: str | None, body: bytes) -> str:
    """``hook-<name>-<delivery>``: the same delivery always maps to the same workflow id."""
    if not delivery:
        key = "body-" + hashlib.sha256(body).hexdigest()[:40]
    elif _SAFE_DELIVERY.fullmatch(delivery):
        key = delivery
    else:
        key = "sha256-" + hashlib.sha256(delivery.encode("utf-8", "replace")).hexdigest()[:40]
    return f"hook-{hook_name}-{key}"


# --- Temporal ---------------------------------------------------------------------------------


class TemporalLink:
    """The server's one Temporal client: connected on first use, dropped after a failure."""

    def __init__(self, settings: Settings, connect: Callable[[Settings], Awaitable[Client]] | None = None) -> None:
        from stakeflow.connection import connect as default_connect

        self._settings = settings
        self._connect = connect or default_connect
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(self._connect(self._settings), CONNECT_TIMEOUT_S)
                except (ServiceError, asyncio.TimeoutError, OSError, RuntimeError):
                    raise unavailable(f"Temporal at {self._settings.address} is unreachable: retry later") from None
            return self._client

    def drop(self) -> None:
        self._client = None

    async def healthy(self) -> bool:
        try:
            client = await self.client()
            return await client.service_client.check_health(timeout=timedelta(seconds=2))
        except Refused:
            return False
        except (RPCError, RuntimeError, asyncio.TimeoutError):
            self.drop()
            return False


def _is_unavailable(e: RPCError) -> bool:
    return e.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED)


async def start_delivery(client: Client, settings: Settings, req: TaskRequest, workflow_id: str) -> tuple[str, bool]:
    """Start the run for a delivery; (run id, duplicate). Temporal's refusal marks a duplicate."""
    try:
        handle = await client.start_workflow(
            AGENT_WORKFLOW,
            req,
            id=workflow_id,
            task_queue=queue_name("workflows", settings.queue_prefix),
            result_type=TaskResult,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=tasks.run_summary(req.goal),
            static_details=tasks.run_details(settings, req),
            rpc_timeout=RPC_TIMEOUT,
        )
        return handle.result_run_id or "", False
    except WorkflowAlreadyStartedError as e:
        run_id = e.run_id
        if not run_id:
            run_id = (await client.get_workflow_handle(workflow_id).describe(rpc_timeout=RPC_TIMEOUT)).run_id
        return run_id, True


# --- the app ---------------------------------------------------------------------------------


@dataclass
class Context:
    settings: Settings
    secrets: dict[str, bytes]  # hook name -> secret, for hooks whose variable is set
    api_token: str | None
    temporal: TemporalLink


def create_app(settings: Settings, environ: Mapping[str, str] | None = None,
               temporal: TemporalLink | None = None) -> Starlette:
    """The ASGI app. Secrets are read from ``environ`` (default os.environ) once, here."""
    environ = os.environ if environ is None else environ
    secrets: dict[str, bytes] = {}
    for name, hook in settings.hooks.items():
        value = environ.get(hook.secret_env, "")
        if value:
            secrets[name] = value.encode()
        else:
            log.warning("hook %s: %s is not set; its deliveries are refused until it is", name, hook.secret_env)
    ctx = Context(settings, secrets, environ.get(API_TOKEN_ENV) or None, temporal or TemporalLink(settings))

    routes = [
        Route("/hooks/{name}", _guarded(ctx, _deliver), methods=["POST"]),
        Route("/runs/{workflow_id:path}/approve", _guarded(ctx, _approve), methods=["POST"]),
        Route("/runs/{workflow_id:path}", _guarded(ctx, _get_run), methods=["GET"]),
        Route("/healthz", _guarded(ctx, _healthz), methods=["GET"]),
        Route("/openapi.json", _guarded(ctx, _openapi), methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.ctx = ctx
    return app


Handler = Callable[[Context, Request, dict[str, Any]], Awaitable[Response]]


def _guarded(ctx: Context, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Request id, one log line, JSON errors; no exception ever escapes as a traceback."""

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        note: dict[str, Any] = {"request_id": uuid.uuid4().hex[:16], "delivery": _delivery(request)}
        try:
            response = await handler(ctx, request, note)
        except Refused as e:
            response = JSONResponse({"error": e.message, "request_id": note["request_id"]}, e.status, e.headers)
        except ClientDisconnect:
            response = Response(status_code=400)
        except Exception as e:  # the last guard: logged by type with the request id, answered as JSON
            log.error("request %s failed: %s", note["request_id"], type(e).__name__,
                      exc_info=ctx.settings.debug)
            response = JSONResponse({"error": f"internal error ({type(e).__name__}): quote request id "
                                              f"{note['request_id']} when reporting it",
                                     "request_id": note["request_id"]}, 500)
        response.headers["X-Request-Id"] = note["request_id"]
        extra = "".join(f" {k}={note[k]}" for k in ("workflow_id", "duplicate") if k in note)
        log.info("%s %s %d delivery=%s request=%s%s %.1fms", request.method, request.url.path,
                 response.status_code, note["delivery"] or "-", note["request_id"], extra,
                 (time.perf_counter() - started) * 1000)
        return response

    return endpoint


def _delivery(request: Request) -> str | None:
    for h in DELIVERY_HEADERS:
        if value := request.headers.get(h):
            return value
    return None


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 400)
    return JSONResponse({"error": getattr(exc, "detail", "bad request")}, status, getattr(exc, "headers", None))


async def _deliver(ctx: Context, request: Request, note: dict[str, Any]) -> Response:
    name = request.path_params["name"]
    hook = ctx.settings.hooks.get(name)
    if hook is None:
        raise Refused(404, f"no hook '{name}': add [hooks.{name}] to {ctx.settings.config_path}")
    secret = ctx.secrets.get(name)
    if secret is None:
        raise unavailable(f"hook '{name}' has no secret: {hook.secret_env} is not set in the server's "
                          "environment; export it and restart `stakeflow serve`")
    body = await _read_body(request, hook.max_body_bytes)
    verify_signature(hook, secret, request.headers, body, time.time())
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "the body is not valid JSON") from None
    try:
        goal = render_goal(hook.goal, payload)
    except MissingField as e:
        raise Refused(422, f"payload field '{e.path}' is missing (the goal template of hook '{name}' uses it)") from None
    try:
        req = tasks.build_request(ctx.settings, goal, stakes=hook.stakes, sensitivity=hook.sensitivity,
                                  tools=hook.tools, source=name)
    except InputError as e:
        raise Refused(422, str(e)) from None
    workflow_id = workflow_id_for(name, note["delivery"], body)
    note["workflow_id"] = workflow_id
    client = await ctx.temporal.client()
    try:
        run_id, duplicate = await start_delivery(client, ctx.settings, req, workflow_id)
    except RPCError as e:
        if _is_unavailable(e):
            ctx.temporal.drop()
            raise unavailable(f"Temporal at {ctx.settings.address} did not answer: retry later") from None
        raise Refused(502, f"Temporal refused the start: {e.message}") from None
    note["duplicate"] = duplicate
    return JSONResponse({"workflow_id": workflow_id, "run_id": run_id, "ui_url": ctx.settings.ui_url(workflow_id),
                         "duplicate": duplicate}, 202)


async def _read_body(request: Request, limit: int) -> bytes:
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


def _check_token(ctx: Context, request: Request) -> None:
    if ctx.api_token is None:
        raise Refused(401, f"run lookups and approvals are disabled: set {API_TOKEN_ENV} in the server's environment and send "
                           f"Authorization: Bearer <that token>", {"WWW-Authenticate": "Bearer"})
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), ctx.api_token.encode()):
        raise Refused(401, f"send Authorization: Bearer <{API_TOKEN_ENV}>", {"WWW-Authenticate": "Bearer"})


async def _existing_run(ctx: Context, client: Client, workflow_id: str, with_progress: bool = False) -> tasks.RunInfo:
    try:
        return await tasks.describe_run(client, workflow_id, with_progress=with_progress)
    except InputError as e:
        if not await ctx.temporal.healthy():
            raise unavailable(f"Temporal at {ctx.settings.address} did not answer: retry later") from None
        raise Refused(404, str(e)) from None


class Decision(BaseModel):
    """Body of POST /runs/<workflow_id>/approve."""

    model_config = ConfigDict(extra="forbid")

    step: int = Field(ge=1)
    decision: Literal["approve", "reject"] = "approve"
    note: str = Field(default="", max_length=2000)
    by: str = Field(default="api", min_length=1, max_length=200)


async def _approve(ctx: Context, request: Request, note: dict[str, Any]) -> Response:
    _check_token(ctx, request)
    workflow_id = request.path_params["workflow_id"]
    body = await _read_body(request, 64 * 1024)
    try:
        decision = Decision.model_validate_json(body)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise Refused(422, f"bad approval '{where}': {first['msg']} (send {{\"step\": N, \"decision\": "
                           f"\"approve\"|\"reject\", \"note\": \"why\"}})") from None
    if decision.decision == "reject" and not decision.note.strip():
        raise Refused(422, "a rejection needs a note saying why")
    client = await ctx.temporal.client()
    await _existing_run(ctx, client, workflow_id)
    try:
        record = await tasks.decide_step(client, workflow_id, decision.step, decision.decision == "approve",
                                         decision.note, decision.by)
    except InputError as e:
        raise Refused(409, str(e)) from None
    return JSONResponse({"workflow_id": workflow_id, "step": decision.step, **record.model_dump()})


async def _get_run(ctx: Context, request: Request, note: dict[str, Any]) -> Response:
    _check_token(ctx, request)
    workflow_id = request.path_params["workflow_id"]
    client = await ctx.temporal.client()
    info = await _existing_run(ctx, client, workflow_id)
    progress = None
    if info.status == "running":
        try:
            progress = await client.get_workflow_handle(workflow_id).query(
                PROGRESS_QUERY, result_type=Progress, rpc_timeout=timedelta(seconds=2))
        except Exception:  # no worker to answer: the status alone still says something
            progress = None
    body = run_dict(info.workflow_id, info.run_id, info.status, ctx.settings.ui_url(info.workflow_id),
                    result=info.result, progress=progress, error=info.error)
    return JSONResponse(json.loads(json.dumps(body, default=str)))


async def _healthz(ctx: Context, request: Request, note: dict[str, Any]) -> Response:
    if await ctx.temporal.healthy():
        return JSONResponse({"status": "ok", "temporal": ctx.settings.address})
    raise unavailable(f"Temporal at {ctx.settings.address} is unreachable")


async def _openapi(ctx: Context, request: Request, note: dict[str, Any]) -> Response:
    return JSONResponse(OPENAPI)
