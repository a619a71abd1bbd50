"""The OpenAPI 3.1 document of the webhook server, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}


def _err(description: str, retry_after: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": _ERROR}}}
    if retry_after:
        out["headers"] = {
            "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
        }
    return out


def _header(name: str, description: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "header", "required": False, "description": description, "schema": schema}


_RUN_PARAMETER = {
    "name": "workflow_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The run's workflow id, or its Temporal run id",
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "stakeflow webhooks",
        "version": "1",
        "description": "Signed deliveries start durable agent runs, once per delivery id and per signed body.",
    },
    "paths": {
        "/hooks/{name}": {
            "post": {
                "operationId": "deliver",
                "summary": "Start a run from a signed delivery",
                "description": (
                    "X-Stakeflow-Signature-256 is sha256=<hex HMAC-SHA256 of '<X-Stakeflow-Timestamp>.' followed "
                    "by the raw body>; without that header (allowed only where the hook sets require_timestamp = "
                    "false) it covers the raw body alone. X-Hub-Signature-256 (GitHub) covers the raw body. The "
                    "signature is checked first. Then an event 'ping' (X-Stakeflow-Event, else X-GitHub-Event) "
                    "answers 200 and starts nothing; a delivery the hook's events/actions filters do not match "
                    "answers 202 with 'ignored' and starts nothing. The workflow id is hook-<name>-<delivery id>; "
                    "a redelivery, or the same signed bytes under another delivery id (a replay), answers "
                    "duplicate=true with the first run's ids and starts nothing."
                ),
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    _header("X-Stakeflow-Signature-256", "sha256=<64 hex>"),
                    _header("X-Hub-Signature-256", "sha256=<64 hex> (GitHub)"),
                    _header(
                        "X-Stakeflow-Timestamp",
                        "Unix seconds, covered by the signature; required unless the "
                        "hook sets require_timestamp = false",
                        r"^[0-9]+$",
                    ),
                    _header("X-Stakeflow-Delivery", "Delivery id; the workflow id derives from it"),
                    _header("X-GitHub-Delivery", "Delivery id sent by GitHub"),
                    _header(
                        "X-Stakeflow-Event",
                        "Event name, matched against the hook's events; 'ping' tests the hook and starts nothing",
                    ),
                    _header(
                        "X-GitHub-Event",
                        "Event name sent by GitHub (issues, issue_comment, ping, ...); "
                        "X-Stakeflow-Event wins when both are sent",
                    ),
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {}}},
                },
                "responses": {
                    "200": {
                        "description": "A ping (X-Stakeflow-Event or X-GitHub-Event: ping): the hook exists and the "
                        "signature is valid; nothing was started",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pong"}}},
                    },
                    "202": {
                        "description": "Run started, or the delivery's run already existed (duplicate); or the "
                        "hook's filters ignored the delivery and nothing was started",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Accepted"},
                                        {"$ref": "#/components/schemas/Ignored"},
                                    ]
                                }
                            }
                        },
                    },
                    "400": _err("The body is not JSON, or nests deeper than 100 levels"),
                    "401": _err(
                        "Missing, wrong or stale signature, or a required timestamp is missing; nothing was started"
                    ),
                    "404": _err("No such hook"),
                    "413": _err("Body over the hook's max_body_bytes"),
                    "422": _err(
                        "A goal template field is missing from the payload, or the request is invalid "
                        "(an unknown tool or agent)"
                    ),
                    "502": _err("Temporal refused the start"),
                    "429": _err(
                        "Over the hook's max_runs_per_minute or max_concurrent_runs: nothing started", retry_after=True
                    ),
                    "503": _err("Temporal unreachable, or the hook's secret is not configured", retry_after=True),
                },
            }
        },
        "/runs/{workflow_id}": {
            "get": {
                "operationId": "getRun",
                "summary": "Status and result of a run",
                "security": [{"bearer": []}],
                "parameters": [_RUN_PARAMETER],
                "responses": {
                    "200": {
                        "description": "The run, in the shape of `stakeflow status --json`",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Run"}}},
                    },
                    "401": _err("No valid bearer token, or STAKEFLOW_API_TOKEN is not set on the server"),
                    "404": _err("No such run"),
                    "503": _err("Temporal unreachable", retry_after=True),
                },
            }
        },
        "/runs/{workflow_id}/approve": {
            "post": {
                "operationId": "decideStep",
                "summary": "Approve or reject a step that waits for approval",
                "security": [{"bearer": []}],
                "parameters": [_RUN_PARAMETER],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Decision"}}},
                },
                "responses": {
                    "200": {
                        "description": "The decision as the run recorded it",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Approval"}}},
                    },
                    "401": _err("No valid bearer token, or STAKEFLOW_API_TOKEN is not set on the server"),
                    "404": _err("No such run"),
                    "409": _err("That step is not waiting for approval, or was already decided"),
                    "413": _err("Body over 64 KiB"),
                    "422": _err("Invalid decision body; a rejection needs a note"),
                    "503": _err("Temporal unreachable", retry_after=True),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Whether Temporal is reachable",
                "responses": {
                    "200": {
                        "description": "Temporal reachable",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "503": _err("Temporal unreachable", retry_after=True),
                },
            }
        },
        "/dashboard": {
            "get": {
                "operationId": "dashboard",
                "summary": "The cost-and-quality dashboard (HTML), as `stakeflow report` writes it",
                "description": "Signed in by the session cookie POST /dashboard/login sets, or by the bearer token."
                " A token in the query string is refused.",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "since", "in": "query", "schema": {"type": "string", "default": "30d"}},
                    {"name": "agent", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}},
                    "400": {"description": "A bad window, or a token in the URL (HTML)"},
                    "401": {"description": "The sign-in form, or STAKEFLOW_API_TOKEN is not set (HTML)"},
                },
            }
        },
        "/dashboard/login": {
            "post": {
                "operationId": "dashboardLogin",
                "summary": "Sign in: a form with `token`; sets an HttpOnly session cookie",
                "requestBody": {
                    "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "303": {"description": "Signed in: to /dashboard, with the cookie"},
                    "401": {"description": "Wrong token: the form again (HTML)"},
                    "413": _err("Body over 4 KiB"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "The value of STAKEFLOW_API_TOKEN"}
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}, "request_id": {"type": "string"}},
            },
            "Accepted": {
                "type": "object",
                "required": ["workflow_id", "run_id", "ui_url", "duplicate"],
                "properties": {
                    "workflow_id": {
                        "type": "string",
                        "description": "The delivery's run; for a replay, the run its first delivery started",
                    },
                    "run_id": {
                        "type": "string",
                        "description": "Empty when a replay names a run its first delivery has not started yet",
                    },
                    "ui_url": {"type": "string"},
                    "duplicate": {"type": "boolean"},
                },
            },
            "Ignored": {
                "type": "object",
                "required": ["ignored"],
                "additionalProperties": False,
                "properties": {
                    "ignored": {
                        "type": "string",
                        "description": "Why the hook's filters start no run, e.g. \"action 'labeled' is not in "
                        'actions [opened, reopened]"',
                    }
                },
            },
            "Pong": {
                "type": "object",
                "required": ["ping", "hook"],
                "properties": {
                    "ping": {"type": "string", "const": "ok"},
                    "hook": {"type": "string"},
                    "events": {
                        "type": ["array", "null"],
                        "items": {"type": "string"},
                        "description": "The hook's events filter; null = every event",
                    },
                    "actions": {
                        "type": ["array", "null"],
                        "items": {"type": "string"},
                        "description": "The hook's actions filter; null = every action",
                    },
                },
            },
            "Decision": {
                "type": "object",
                "required": ["step"],
                "additionalProperties": False,
                "properties": {
                    "step": {"type": "integer", "minimum": 1},
                    "decision": {"type": "string", "enum": ["approve", "reject"], "default": "approve"},
                    "note": {"type": "string", "maxLength": 2000},
                    "by": {"type": "string", "minLength": 1, "maxLength": 200, "default": "api"},
                },
            },
            "Approval": {
                "type": "object",
                "required": ["workflow_id", "step", "decision"],
                "properties": {
                    "workflow_id": {"type": "string"},
                    "step": {"type": "integer"},
                    "decision": {"type": "string", "enum": ["approved", "rejected", "timed_out", "auto_approved"]},
                    "note": {"type": "string"},
                    "by": {"type": "string"},
                    "at": {"type": "string"},
                    "waiting_for": {"type": "string"},
                },
            },
            "Run": {
                "type": "object",
                "required": ["workflow_id", "run_id", "status"],
                "properties": {
                    "workflow_id": {"type": "string"},
                    "run_id": {"type": "string"},
                    "status": {
                        "type": "string",
                        "enum": ["running", "completed", "failed", "canceled", "terminated", "timed_out"],
                    },
                    "answer": {"type": ["string", "null"]},
                    "steps": {"type": "array", "items": {"type": "object"}},
                    "error": {"type": ["string", "null"]},
                },
            },
        },
    },
}
