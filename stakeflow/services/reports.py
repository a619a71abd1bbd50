"""The service functions behind `stakeflow trace` and `stakeflow costs` (and the Python client's ``trace`` and
``costs``): which run an id names in the trace store, the cost review, the ``--since`` window.

The store keys a run's spans by its workflow id (``stakeflow.run_id``); people also hold Temporal's
run id (`run --json` prints both). An id is looked up in this order, the first match wins:

1. a workflow id with spans in the store: answered by the store alone, Temporal is not asked;
2. else Temporal resolves it (``runs.find_run``: a workflow id, or a Temporal run id through
   visibility) and the store is read under the workflow id it names. A run Temporal knows whose
   spans are not in the store is an error saying so, never an empty tree or a $0 bill;
3. else an InputError naming what was searched.

When Temporal is unreachable (or does not answer within ``TEMPORAL_LOOKUP_S``), step 2 is skipped:
a workflow id still works from the store alone; any other id is an error saying that it could not be
looked up as a run id, and why.

A run that just ended has its run and step spans in the store (exported before its workflow task completed), but
its model-call spans come in the worker's next batch, up to half a second later (``OTEL_BSP_SCHEDULE_DELAY``): a
trace or a bill read at once would miss the last calls. ``settle`` waits, at most ``SETTLE_S``, until the store
holds as many model-call spans as the run span counts (``stakeflow.model_calls``); a run still going is not waited
for, nor one whose worker died before exporting (after ``SETTLE_S`` it is read as it is).
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from stakeflow.config import Settings
from stakeflow.core import semconv as sc
from stakeflow.core.errors import InputError, ServiceError
from stakeflow.services import runs

if TYPE_CHECKING:
    from temporalio.client import Client

TEMPORAL_LOOKUP_S = 10.0
SETTLE_S = 5.0
SINCE_RE = re.compile(r"^(\d+)\s*([mhdw])$")
SINCE_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_SINCE = timedelta(days=100 * 365)


def parse_since(text: str | timedelta | None) -> timedelta | None:
    """'7d' -> 7 days; '36h', '30m', '2w'; a timedelta as it is. None or 'all' -> no limit. A window longer than
    ``MAX_SINCE`` is an InputError: the date arithmetic of every query would overflow."""
    if text is None or text == "all":
        return None
    too_long = InputError(f"--since '{text}' reaches back more than {MAX_SINCE.days // 365} years: use --since all")
    if isinstance(text, timedelta):
        window = text
    else:
        m = SINCE_RE.match(text.strip())
        if not m:
            raise InputError(f"--since '{text}' is not a duration: use e.g. 30m, 24h, 7d, 2w, or all")
        try:
            window = timedelta(**{SINCE_UNITS[m.group(2)]: int(m.group(1))})
        except OverflowError:  # past timedelta's own range
            raise too_long from None
    if window > MAX_SINCE:
        raise too_long
    if window < timedelta(0):
        raise InputError(f"--since '{text}' is not a window back in time: give a positive duration, or all")
    return window


def cost_review(
    settings: Settings, store, since: timedelta | None, by: str, run_id: str | None, agent: str | None
) -> dict[str, Any]:
    """`stakeflow costs --json`: the cost report (``stakeflow.traces.cost_report``) with the open path's measured
    agreement. ``run_id`` is a workflow id the store knows (``traced_workflow_id``)."""
    from stakeflow.agents.evals import agreement_text
    from stakeflow.traces import agreement_table, cost_report

    report = cost_report(store, since, by, run_id, settings.frontier_model, agent=agent)
    table = agreement_table(settings.traces_path)
    report["agreement"] = agreement_text(table.overall, table.since_days)
    return report


def open_store(settings: Settings):
    """The trace store, with the spool's pending segments ingested."""
    from stakeflow.traces import TraceStore

    store = TraceStore(settings.traces_path)
    store.sync()
    return store


def has_spans(store, workflow_id: str) -> bool:
    """True when some span in the store belongs to the run with this workflow id."""
    with store.reader() as con:
        return con.execute("SELECT 1 FROM spans WHERE run_id = ? LIMIT 1", [workflow_id]).fetchone() is not None


def missing_calls(store, workflow_id: str) -> int:
    """How many model-call spans of an ended run the store lacks, by its run span's count (0 for a run still going:
    it has no run span yet)."""
    with store.reader() as con:
        counted, stored = con.execute(
            f"""SELECT max(TRY_CAST(json_extract_string(attributes, '$."{sc.MODEL_CALLS}"') AS INTEGER)),
                (SELECT count(*) FROM spans WHERE run_id = ? AND operation = ?)
            FROM spans WHERE run_id = ? AND name = ?""",
            [workflow_id, sc.SPAN_CHAT, workflow_id, sc.SPAN_RUN],
        ).fetchone() or (None, 0)
    return max(0, (counted or 0) - stored)


async def settle(store, workflow_id: str, wait_s: float = SETTLE_S) -> None:
    """Until the store holds every model-call span of the ended run ``workflow_id`` (see the module), ``wait_s`` at
    most."""
    deadline = time.monotonic() + wait_s
    while await asyncio.to_thread(missing_calls, store, workflow_id) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


async def traced_workflow_id(settings: Settings, store, ident: str, client: Client | None = None) -> str:
    """The workflow id under which the store holds the spans of the run ``ident`` names (see the module); Temporal
    is asked through ``client`` when given, else a connection of its own."""
    if has_spans(store, ident):
        return ident
    try:
        found = await asyncio.wait_for(_find(settings, ident, client), TEMPORAL_LOOKUP_S)
    except (TimeoutError, ServiceError) as e:
        reason = str(e) or f"no answer within {TEMPORAL_LOOKUP_S:g} s"
        raise InputError(
            f"no spans under workflow id '{ident}' in the trace store {store.path}, and it could not be looked up "
            f"as a Temporal run id either: {reason}"
        ) from None
    if found is None:
        raise InputError(
            f"no run '{ident}': searched workflow ids in the trace store {store.path}, and workflow ids and run ids "
            f"in namespace {settings.temporal_namespace} (stakeflow list shows recent runs)"
        )
    if found.workflow_id != ident and has_spans(store, found.workflow_id):
        return found.workflow_id
    named = f"run '{ident}'" + (f" (workflow id {found.workflow_id})" if found.workflow_id != ident else "")
    raise InputError(
        f"{named} has no spans in the trace store {store.path} yet: its worker exports them within seconds of "
        "each step; if it never does, check that the worker writes to this file (STAKEFLOW_TRACES)"
    )


async def _find(settings: Settings, ident: str, client: Client | None) -> runs.ResolvedRun | None:
    from stakeflow.temporal.connection import connect

    return await runs.find_run(client or await connect(settings), ident)
