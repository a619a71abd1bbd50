"""Signatures, timestamps, delivery ids and seals: pure functions of a delivery's headers and body.

The rules (which header, what the MAC covers, the timestamp window, how a delivery id becomes a
workflow id and signed bytes a seal) are in the package docstring, ``stakeflow.webhooks``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

from stakeflow.config import HookConfig
from stakeflow.webhooks.refused import Refused

STAKEFLOW_SIGNATURE = "x-stakeflow-signature-256"
GITHUB_SIGNATURE = "x-hub-signature-256"
STAKEFLOW_TIMESTAMP = "x-stakeflow-timestamp"
DELIVERY_HEADERS = ("x-stakeflow-delivery", "x-github-delivery")
_SAFE_DELIVERY = re.compile(r"[A-Za-z0-9._-]{1,80}")
_SIGNATURE_VALUE = re.compile(r"sha256=([0-9a-fA-F]{64})")


def sign(secret: bytes, body: bytes, timestamp: str | None = None) -> str:
    """The X-Stakeflow-Signature-256 value for a body (and timestamp); senders and tests use it."""
    message = f"{timestamp}.".encode() + body if timestamp is not None else body
    return "sha256=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


def verify_signature(hook: HookConfig, secret: bytes, headers: Mapping[str, str], body: bytes, now: float) -> str:
    """The verified MAC (hex) of a delivery carrying a valid, fresh signature; Refused(401) otherwise.

    The MAC stands for exactly the bytes the signature covers, so ``seal_id_for`` derives from it the
    key a replay of those bytes is recognised by, whatever delivery id it comes with.
    """
    ours, github = headers.get(STAKEFLOW_SIGNATURE), headers.get(GITHUB_SIGNATURE)
    if ours is not None and hook.signature in (None, "stakeflow"):
        timestamp = headers.get(STAKEFLOW_TIMESTAMP)
        mac = _check_mac(secret, ours, f"{timestamp}.".encode() + body if timestamp is not None else body)
        if timestamp is None:
            if hook.require_timestamp:
                raise Refused(
                    401,
                    "this hook requires X-Stakeflow-Timestamp (unix seconds), signed with the body as "
                    "'<timestamp>.<body>': send it, or set require_timestamp = false in the hook's table",
                )
            return mac
        if not timestamp.isdigit() or len(timestamp) > 12:
            raise Refused(401, "X-Stakeflow-Timestamp must be unix seconds (decimal digits)")
        if abs(now - int(timestamp)) > hook.timestamp_tolerance_s:
            raise Refused(
                401,
                f"X-Stakeflow-Timestamp is more than {hook.timestamp_tolerance_s:g} s from the "
                "server's clock: re-sign the delivery with the current time",
            )
        return mac
    if github is not None and hook.signature in (None, "github"):
        # GitHub's scheme has no timestamp, so require_timestamp cannot apply; replays of its bodies are
        # recognised by their seal (seal_id_for). signature = "stakeflow" refuses this header.
        return _check_mac(secret, github, body)
    wanted = {"stakeflow": "X-Stakeflow-Signature-256", "github": "X-Hub-Signature-256"}.get(
        hook.signature or "", "X-Stakeflow-Signature-256 or X-Hub-Signature-256"
    )
    raise Refused(401, f"missing signature: send {wanted}: sha256=<hex HMAC-SHA256 of the body with the hook's secret>")


def _check_mac(secret: bytes, value: str, message: bytes) -> str:
    m = _SIGNATURE_VALUE.fullmatch(value.strip())
    expected = hmac.new(secret, message, hashlib.sha256).hexdigest()
    # Compare even a malformed value, so timing says nothing about which check failed.
    given = m.group(1).lower() if m else "0" * 64
    if not hmac.compare_digest(expected, given) or m is None:
        raise Refused(401, "signature does not match: sign the raw body with HMAC-SHA256 and the hook's secret")
    return expected


def workflow_id_for(hook_name: str, delivery: str | None, body: bytes) -> str:
    """``hook-<name>-<delivery>``: the same delivery always maps to the same workflow id."""
    if not delivery:
        key = "body-" + hashlib.sha256(body).hexdigest()[:40]
    elif _SAFE_DELIVERY.fullmatch(delivery):
        key = delivery
    else:
        key = "sha256-" + hashlib.sha256(delivery.encode("utf-8", "replace")).hexdigest()[:40]
    return f"hook-{hook_name}-{key}"


def delivery_id(headers: Mapping[str, str]) -> str | None:
    """The sender's delivery id: X-Stakeflow-Delivery, else X-GitHub-Delivery, else None."""
    for h in DELIVERY_HEADERS:
        if value := headers.get(h):
            return value
    return None


def seal_id_for(hook_name: str, mac: str) -> str:
    """``hookseal-<name>-<hex>``: the same signed bytes always map to the same seal, whatever the delivery id.

    A hash of the verified MAC, not of the body: the MAC is keyed with the hook's secret, so the id says
    nothing about a guessable body, and it is never the MAC itself (which would let anyone reading
    workflow ids sign that body). Run ids start ``hook-``, so no delivery id can name a seal.
    """
    return f"hookseal-{hook_name}-" + hashlib.sha256(mac.encode()).hexdigest()[:40]
