"""The webhook server behind `stakeflow serve`: signed deliveries start runs, once each, for the events
their hook is meant for.

``POST /hooks/<name>`` checks, in this order, answering with the first failure:

1. the hook exists (404) and its secret is in the server's environment (503 naming the variable);
2. the body fits ``max_body_bytes`` (413): Content-Length is checked before reading, and a chunked
   body is counted while it streams, so an oversized body is never read whole;
3. the signature (401, and nothing is started). Two schemes, both HMAC-SHA256 with the hook's
   secret, hex digest, compared in constant time:

   - ``X-Stakeflow-Signature-256: sha256=<hex>`` with ``X-Stakeflow-Timestamp: <unix seconds, decimal
     digits>``: the MAC covers the ASCII timestamp, one ``.``, then the raw body
     (``b"1767225600." + body``), and the timestamp must be within ``timestamp_tolerance_s`` of the
     server's clock (default 300 s). ``require_timestamp`` (default true) refuses this header without a
     timestamp; a hook that sets it to false also accepts a MAC of the raw body alone.
   - ``X-Hub-Signature-256: sha256=<hex>`` (GitHub): the MAC covers the raw body. It has no timestamp,
     so require_timestamp does not apply to it.

   ``signature = "stakeflow"`` or ``"github"`` in the hook's table accepts only that header;
4. the event: ``X-Stakeflow-Event``, else ``X-GitHub-Event``. ``ping`` (GitHub sends it when a hook is
   created) answers 200 ``{"ping": "ok", "hook", "events", "actions"}`` and starts nothing;
5. the body is JSON nested at most 100 levels (400);
6. the hook's filters: the event must be in ``events`` and the payload's ``action`` in ``actions``
   (either unset = any). A delivery they do not match answers 202 ``{"ignored": "<why>"}`` and starts
   nothing: a 2xx, so the sender neither retries it nor marks the hook as failing;
7. every template field is in the payload (422 naming the field), and the request is valid (422: an
   unknown tool, or an ``agent`` `runs.build_request` does not know);
8. Temporal is reachable (503 with Retry-After);
9. the hook's storm limits, ``max_runs_per_minute`` and ``max_concurrent_runs``, admit the run (429 with
   Retry-After and the reason; nothing starts and no seal is claimed, so a redelivery later starts it once;
   a redelivery of a run that exists passes, and is answered as the duplicate it is). See ``gate``.

The workflow id is ``hook-<name>-<delivery>``, where <delivery> is ``X-Stakeflow-Delivery`` or
``X-GitHub-Delivery`` when it is at most 80 characters of ``[A-Za-z0-9._-]``, else
``sha256-<first 40 hex of its SHA-256>``; a delivery without either header gets
``body-<first 40 hex of the body's SHA-256>``, so the same bytes sent twice are one delivery. The
start uses id conflict policy FAIL and reuse policy REJECT_DUPLICATE: Temporal itself refuses a
second start of the same id, running or closed, and that refusal is how ``duplicate: true`` is
known, with no local table and no race between two concurrent redeliveries.

The delivery id is not covered by the signature (GitHub's is not either), so it cannot stop a replay:
whoever holds one signed body could send it again under a fresh id. Each delivery therefore first
claims a *seal*, ``hookseal-<name>-<first 40 hex of the SHA-256 of the verified MAC>``: a workflow
that never runs, whose memo names the run. The same signed bytes under another delivery id find the
seal taken and answer ``duplicate: true`` with the first run's ids. So two deliveries of the same signed
bytes are one delivery (GitHub's scheme: the same body; stakeflow's: the same body and timestamp): a
sender of identical bodies should put an id in them. How seals work and how long they hold:
``stakeflow.webhooks.temporal``.

``GET /runs/<id>`` (status and result, the shape of `stakeflow status --json`) and
``POST /runs/<id>/approve`` (``{"step": 2, "decision": "approve"|"reject", "note": "...",
"by": "..."}``, the workflow's approve_step update) need ``Authorization: Bearer $STAKEFLOW_API_TOKEN``;
without that variable on the server they answer 401 saying so. ``<id>`` is the run's workflow id or
its Temporal run id, found as the CLI finds it (``runs.resolve_run``); one that names no run is 404.

``GET /dashboard`` (``?since=30d&agent=NAME``) serves the page `stakeflow report` writes, behind the same
token: a sign-in form (``POST /dashboard/login``) sets an HttpOnly session cookie; the token never goes in
a URL. How: ``stakeflow.webhooks.dashboard``.

Hook secrets and STAKEFLOW_API_TOKEN are read once, when the app is created; they never enter a
workflow input, a log line or a response. Logs carry the request id and delivery id, never a body.

One module per job (the ``[hooks.<name>]`` table and its goal template are configuration, in
``stakeflow.config``): ``signatures`` (HMAC verification, timestamps, delivery ids, seal ids: pure functions), ``filters`` (ping, events and
actions: pure functions), ``payload`` (JSON parsing with a nesting limit), ``refused`` (error answers),
``temporal`` (the server's Temporal client, seals, the start of a delivery's run), ``gate`` (storm limits,
counted by a ``HookGateWorkflow`` per hook), ``app`` (the
Starlette app and its routes), ``dashboard`` (``/dashboard``: sign-in and the page), ``openapi`` (the
document at ``/openapi.json``).
"""

from stakeflow.webhooks.app import create_app
from stakeflow.webhooks.filters import event_of, ignored_because, is_ping
from stakeflow.webhooks.payload import parse_payload
from stakeflow.webhooks.refused import Refused
from stakeflow.webhooks.signatures import seal_id_for, sign, verify_signature, workflow_id_for
from stakeflow.webhooks.temporal import Seal, Started, TemporalLink, start_delivery

__all__ = [
    "Refused",
    "Seal",
    "Started",
    "TemporalLink",
    "create_app",
    "event_of",
    "ignored_because",
    "is_ping",
    "parse_payload",
    "seal_id_for",
    "sign",
    "start_delivery",
    "verify_signature",
    "workflow_id_for",
]
