"""The OpenAPI 3.1 document of the webhook server, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}


def _err(description: str, retry_after: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": _ERROR}}}
    if retry_after:
        out["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying",
                                          "schema": {"type": "integer"}}}
    return out


def _header(name: str, description: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "header", "required": False, "description": description, "schema": schema}


_RUN_PARAMETER = {"name": "workflow_id", "in": "path", "required": True, "schema": {"type": "string"},
                  "description": "The run's workflow id, or its Temporal run id"}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "stakeflow webhooks",
        "version": "1",
        "description": "Signed deliveries start durable agent runs, once per delivery id.",
    },
    "paths": {
        "/hooks/{name}": {
            "post": {
                "operationId": "deliver",
                "summary": "Start a run from a signed delivery",
                "description": (
                    "X-Stakeflow-Signature-256 is sha256=<hex HMAC-SHA256 of the raw body>, or of "
                    "'<X-Stakeflow-Timestamp>.' followed by the body when that header is sent. "
                    "X-Hub-Signature-256 (GitHub) covers the raw body. The workflow id is "
                    "hook-<name>-<delivery id>; a redelivery answers duplicate=true and starts nothing."
                ),
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    _header("X-Stakeflow-Signature-256", "sha256=<64 hex>"),
                    _header("X-Hub-Signature-256", "sha256=<64 hex> (GitHub)"),
                    _header("X-Stakeflow-Timestamp", "Unix seconds, covered by the signature", r"^[0-9]+$"),
                    _header("X-Stakeflow-Delivery", "Delivery id; the workflow id derives from it"),
                    _header("X-GitHub-Delivery", "Delivery id sent by GitHub"),
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {}}},
                },
                "responses": {
                    "202": {
                        "description": "Run started, or the delivery's run already existed (duplicate)",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}},
                    },
                    "400": _err("The body is not JSON"),
                    "401": _err("Missing, wrong or stale signature; nothing was started"),
                    "404": _err("No such hook"),
                    "413": _err("Body over the hook's max_body_bytes"),
                    "422": _err("A goal template field is missing from the payload, or the request is invalid"),
                    "502": _err("Temporal refused the start"),
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
                    "200": {"description": "Temporal reachable",
                            "content": {"application/json": {"schema": {"type": "object"}}}},
                    "503": _err("Temporal unreachable", retry_after=True),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI document",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}},
            }
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "description": "The value of STAKEFLOW_API_TOKEN"}},
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
                    "workflow_id": {"type": "string"},
                    "run_id": {"type": "string"},
                    "ui_url": {"type": "string"},
                    "duplicate": {"type": "boolean"},
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
                    "status": {"type": "string",
                               "enum": ["running", "completed", "failed", "canceled", "terminated", "timed_out"]},
                    "answer": {"type": ["string", "null"]},
                    "steps": {"type": "array", "items": {"type": "object"}},
                    "error": {"type": ["string", "null"]},
                },
            },
        },
    },
}
