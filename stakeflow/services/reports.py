"""The service functions behind `stakeflow trace` and `stakeflow costs --run`: which run an id names in
the trace store.

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
"""

from __future__ import annotations

import asyncio

from stakeflow.config import Settings
from stakeflow.core.errors import InputError, ServiceError
from stakeflow.services import runs

TEMPORAL_LOOKUP_S = 10.0


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


async def traced_workflow_id(settings: Settings, store, ident: str) -> str:
    """The workflow id under which the store holds the spans of the run ``ident`` names (see the module)."""
    if has_spans(store, ident):
        return ident
    try:
        found = await asyncio.wait_for(_find(settings, ident), TEMPORAL_LOOKUP_S)
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


async def _find(settings: Settings, ident: str) -> runs.ResolvedRun | None:
    from stakeflow.temporal.connection import connect

    return await runs.find_run(await connect(settings), ident)
