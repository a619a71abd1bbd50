"""The webhook server's Starlette app: its routes, each behind one guard (request id, one log line,
JSON errors, never a traceback). What each route checks, in order, is in the package docstring,
``stakeflow.webhooks``.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.client import Client
from temporalio.service import RPCError

from stakeflow.agents.types import Progress, ToolCall
from stakeflow.config import MissingField, Settings, render_goal
from stakeflow.core.contracts import PROGRESS_QUERY
from stakeflow.core.errors import InputError, ServiceError
from stakeflow.services import runs
from stakeflow.services.render import run_dict
from stakeflow.webhooks import dashboard, gate
from stakeflow.webhooks.context import Context, read_body
from stakeflow.webhooks.filters import event_of, ignored_because, is_ping
from stakeflow.webhooks.openapi import OPENAPI
from stakeflow.webhooks.payload import parse_payload
from stakeflow.webhooks.refused import Refused, unavailable
from stakeflow.webhooks.signatures import delivery_id, seal_id_for, verify_signature, workflow_id_for
from stakeflow.webhooks.temporal import Seal, TemporalLink, is_unavailable, run_exists, start_delivery

log = logging.getLogger("stakeflow.webhooks")

API_TOKEN_ENV = "STAKEFLOW_API_TOKEN"


def create_app(
    settings: Settings, environ: Mapping[str, str] | None = None, temporal: TemporalLink | None = None
) -> Starlette:
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
        Route(dashboard.PATH, _guarded(ctx, dashboard.show), methods=["GET"]),
        Route(f"{dashboard.PATH}/login", _guarded(ctx, dashboard.login), methods=["POST"]),
        Route(f"{dashboard.PATH}/logout", _guarded(ctx, dashboard.logout), methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.ctx = ctx
    return app


Handler = Callable[[Context, Request, dict[str, Any]], Awaitable[Response]]


def _guarded(ctx: Context, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Request id, one log line, JSON errors; no exception ever escapes as a traceback."""

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        note: dict[str, Any] = {"request_id": uuid.uuid4().hex[:16], "delivery": delivery_id(request.headers)}
        try:
            response = await handler(ctx, request, note)
        except Refused as e:
            response = JSONResponse({"error": e.message, "request_id": note["request_id"]}, e.status, e.headers)
        except ClientDisconnect:
            response = Response(status_code=400)
        except Exception as e:  # the last guard: logged by type with the request id, answered as JSON
            log.error("request %s failed: %s", note["request_id"], type(e).__name__, exc_info=ctx.settings.debug)
            response = JSONResponse(
                {
                    "error": f"internal error ({type(e).__name__}): quote request id "
                    f"{note['request_id']} when reporting it",
                    "request_id": note["request_id"],
                },
                500,
            )
        response.headers["X-Request-Id"] = note["request_id"]
        extra = "".join(
            f" {k}={note[k]}" for k in ("workflow_id", "duplicate", "replay_of", "ping", "ignored") if k in note
        )
        log.info(
            "%s %s %d delivery=%s request=%s%s %.1fms",
            request.method,
            request.url.path,
            response.status_code,
            note["delivery"] or "-",
            note["request_id"],
            extra,
            (time.perf_counter() - started) * 1000,
        )
        return response

    return endpoint


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
        raise unavailable(
            f"hook '{name}' has no secret: {hook.secret_env} is not set in the server's "
            "environment; export it and restart `stakeflow serve`"
        )
    body = await read_body(request, hook.max_body_bytes)
    mac = verify_signature(hook, secret, request.headers, body, time.time())
    if is_ping(request.headers):
        note["ping"] = True
        return JSONResponse({"ping": "ok", "hook": name, "events": hook.events, "actions": hook.actions})
    payload = parse_payload(body)
    why = ignored_because(hook, event_of(request.headers), payload)
    if why is not None:
        note["ignored"] = True  # the reason quotes the payload's action: it stays out of the log
        return JSONResponse({"ignored": why}, 202)
    try:
        goal = render_goal(hook.goal, payload)
    except MissingField as e:
        raise Refused(
            422, f"payload field '{e.path}' is missing (the goal template of hook '{name}' uses it)"
        ) from None
    try:
        req = runs.build_request(
            ctx.settings,
            goal,
            stakes=hook.stakes,
            sensitivity=hook.sensitivity,
            tools=hook.tools,
            source=name,
            agent=hook.agent,
        )
    except InputError as e:
        raise Refused(422, str(e)) from None
    workflow_id = workflow_id_for(name, note["delivery"], body)
    note["workflow_id"] = workflow_id
    # A timestamp is accepted from tolerance before to tolerance after the server's clock: a body signed
    # ahead of it can be replayed for up to twice the tolerance after it first arrives.
    seal = Seal(
        seal_id_for(name, mac),
        timedelta(seconds=2 * hook.timestamp_tolerance_s),
        f"Replay seal of hook {name}: these signed bytes started {workflow_id}",
    )
    client = await ctx.temporal.client()
    try:
        await _admitted(ctx, client, name, workflow_id)  # before the seal: a refused delivery claims nothing
        started = await start_delivery(client, ctx.settings, req, workflow_id, seal)
    except RPCError as e:
        if is_unavailable(e):
            ctx.temporal.drop()
            raise unavailable(f"Temporal at {ctx.settings.address} did not answer: retry later") from None
        raise Refused(502, f"Temporal refused the start: {e.message}") from None
    note["duplicate"] = started.duplicate
    if started.workflow_id != workflow_id:
        note["replay_of"] = started.workflow_id
    return JSONResponse(
        {
            "workflow_id": started.workflow_id,
            "run_id": started.run_id,
            "ui_url": ctx.settings.ui_url(started.workflow_id),
            "duplicate": started.duplicate,
        },
        202,
    )


async def _admitted(ctx: Context, client: Client, name: str, workflow_id: str) -> None:
    """Refused(429, with Retry-After) when the hook's storm limits hold this delivery back; a redelivery of a
    run that exists is let through (Temporal then answers it as the duplicate it is)."""
    admission = await gate.admit(client, ctx.settings, name, ctx.settings.hooks[name], workflow_id)
    if admission.admitted or await run_exists(client, workflow_id):
        return
    wait = max(1, math.ceil(admission.retry_after_s))
    raise Refused(429, f"{admission.reason}: nothing started; deliver it again in {wait} s", {"Retry-After": str(wait)})


def _check_token(ctx: Context, request: Request) -> None:
    if ctx.api_token is None:
        raise Refused(
            401,
            f"run lookups and approvals are disabled: set {API_TOKEN_ENV} in the server's environment and send "
            f"Authorization: Bearer <that token>",
            {"WWW-Authenticate": "Bearer"},
        )
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), ctx.api_token.encode()):
        raise Refused(401, f"send Authorization: Bearer <{API_TOKEN_ENV}>", {"WWW-Authenticate": "Bearer"})


async def _existing_run(ctx: Context, client: Client, ident: str) -> runs.RunInfo:
    """The run a path names, by its workflow id or its Temporal run id (``runs.resolve_run``); 404 when none."""
    try:
        found = await runs.resolve_run(client, ident)
        return await runs.describe_run(client, found.workflow_id, with_progress=False)
    except ServiceError:
        ctx.temporal.drop()
        raise unavailable(f"Temporal at {ctx.settings.address} did not answer: retry later") from None
    except InputError as e:
        if not await ctx.temporal.healthy():
            raise unavailable(f"Temporal at {ctx.settings.address} did not answer: retry later") from None
        raise Refused(404, str(e)) from None


class Decision(BaseModel):
    """Body of POST /runs/<id>/approve."""

    model_config = ConfigDict(extra="forbid")

    step: int = Field(ge=1)
    decision: Literal["approve", "reject"] = "approve"
    note: str = Field(default="", max_length=2000)
    by: str = Field(default="api", min_length=1, max_length=200)
    tool_calls: list[ToolCall] | None = None  # approve these instead: the same tools, the approver's arguments


async def _approve(ctx: Context, request: Request, note: dict[str, Any]) -> Response:
    _check_token(ctx, request)
    body = await read_body(request, 64 * 1024)
    try:
        decision = Decision.model_validate_json(body)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise Refused(
            422,
            f'bad approval \'{where}\': {first["msg"]} (send {{"step": N, "decision": '
            f'"approve"|"reject", "note": "why"}})',
        ) from None
    if decision.decision == "reject" and not decision.note.strip():
        raise Refused(422, "a rejection needs a note saying why")
    client = await ctx.temporal.client()
    workflow_id = (await _existing_run(ctx, client, request.path_params["workflow_id"])).workflow_id
    try:
        record = await runs.decide_step(
            client,
            workflow_id,
            decision.step,
            decision.decision == "approve",
            decision.note,
            decision.by,
            decision.tool_calls,
        )
    except InputError as e:
        raise Refused(409, str(e)) from None
    return JSONResponse({"workflow_id": workflow_id, "step": decision.step, **record.model_dump()})


async def _get_run(ctx: Context, request: Request, note: dict[str, Any]) -> Response:
    _check_token(ctx, request)
    client = await ctx.temporal.client()
    info = await _existing_run(ctx, client, request.path_params["workflow_id"])
    progress = None
    if info.status == "running":
        try:
            progress = await client.get_workflow_handle(info.workflow_id).query(
                PROGRESS_QUERY, result_type=Progress, rpc_timeout=timedelta(seconds=2)
            )
        except Exception:  # no worker to answer: the status alone still says something
            progress = None
    body = run_dict(
        info.workflow_id,
        info.run_id,
        info.status,
        ctx.settings.ui_url(info.workflow_id),
        result=info.result,
        progress=progress,
        error=info.error,
    )
    return JSONResponse(json.loads(json.dumps(body, default=str)))


async def _healthz(ctx: Context, request: Request, note: dict[str, Any]) -> Response:
    if await ctx.temporal.healthy():
        return JSONResponse({"status": "ok", "temporal": ctx.settings.address})
    raise unavailable(f"Temporal at {ctx.settings.address} is unreachable")


async def _openapi(ctx: Context, request: Request, note: dict[str, Any]) -> Response:
    return JSONResponse(OPENAPI)
