"""The spool's on-disk format, and how a segment row becomes a row of ``spans``.

A segment is one exported batch in ``<traces>.spool/``: the raw spans (``SEGMENT_COLUMNS``) with their
attributes as JSON, as Parquet (``*.parquet``) or, for the run and step spans a workflow task waits for, as
newline-delimited JSON (``*.ndjson``, a *journal* segment: a write and a rename, where Parquet costs a DuckDB
query; the exporter compacts its journal into Parquet when idle). Readers take both (``segments_relation``).
Promoting attributes to columns happens when the store reads segments (ingest, and the spool view of readers), in
SQL: ``json_transform`` parses each span's attributes once, the exporter's per-span Python work stays small, and a
later migration can re-derive columns from ``attributes``. Segments written by any earlier stakeflow keep these
columns: the format only ever gains columns (``union_by_name``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from stakeflow.core import semconv as sc
from stakeflow.stores.readonly_sql import quote_ident, quote_literal


def spool_dir_for(path: str | os.PathLike[str]) -> Path:
    """Where exporters leave segments for the trace store at ``path``."""
    return Path(str(Path(path).expanduser()) + ".spool")


# The columns of a segment file, as the exporter writes them.
SEGMENT_COLUMNS = {
    "span_id": "VARCHAR",
    "trace_id": "VARCHAR",
    "parent_span_id": "VARCHAR",
    "name": "VARCHAR",
    "kind": "VARCHAR",
    "start_ns": "BIGINT",
    "end_ns": "BIGINT",
    "status_code": "VARCHAR",
    "status_message": "VARCHAR",
    "service_name": "VARCHAR",
    "resource": "JSON",
    "attributes": "JSON",
}

SEGMENT_SUFFIXES = (".parquet", ".ndjson")
# read_ndjson's arguments for a journal segment: the segment columns, and objects up to 256 MiB (a span's attributes).
_NDJSON_OPTIONS = (
    "columns = {" + ", ".join(f"{k}: {quote_literal(v)}" for k, v in SEGMENT_COLUMNS.items()) + "}"
    ", maximum_object_size = 268435456"
)


def segment_files(spool_dir: Path) -> list[Path]:
    """The segments waiting in ``spool_dir``, Parquet and journal alike, oldest name first (hidden temporaries
    never match: their names start with a dot)."""
    try:
        return sorted(p for suffix in SEGMENT_SUFFIXES for p in spool_dir.glob(f"[!.]*{suffix}"))
    except OSError:
        return []


def segments_relation(files: list[str]) -> str:
    """SQL for the rows of segment ``files`` (at least one), Parquet and journal alike, by column name: segments of
    every earlier stakeflow keep their columns, the format only ever gains some (``union_by_name``)."""
    parquet = [f for f in files if f.endswith(".parquet")]
    journal = [f for f in files if not f.endswith(".parquet")]
    parts = []
    if parquet:
        parts.append(f"SELECT * FROM read_parquet({_listed(parquet)}, union_by_name = true)")
    if journal:
        parts.append(f"SELECT * FROM read_ndjson({_listed(journal)}, {_NDJSON_OPTIONS})")
    return "(" + " UNION ALL BY NAME ".join(parts) + ")"


def _listed(files: list[str]) -> str:
    return "[" + ", ".join(quote_literal(f) for f in files) + "]"


# Column of `spans`, attribute key, SQL type: what ingest promotes out of the attributes JSON.
PROMOTED: tuple[tuple[str, str, str], ...] = (
    ("run_id", sc.RUN_ID, "VARCHAR"),
    ("step", sc.STEP, "INTEGER"),
    ("purpose", sc.PURPOSE, "VARCHAR"),
    ("route", sc.ROUTE, "VARCHAR"),
    ("stakes", sc.STAKES, "VARCHAR"),
    ("reason", sc.REASON, "VARCHAR"),
    ("source", sc.SOURCE, "VARCHAR"),
    ("agent", sc.AGENT, "VARCHAR"),
    ("operation", sc.GEN_AI_OPERATION, "VARCHAR"),
    ("provider", sc.GEN_AI_PROVIDER, "VARCHAR"),
    ("request_model", sc.GEN_AI_REQUEST_MODEL, "VARCHAR"),
    ("response_model", sc.GEN_AI_RESPONSE_MODEL, "VARCHAR"),
    ("tool_name", sc.GEN_AI_TOOL_NAME, "VARCHAR"),
    ("input_tokens", sc.GEN_AI_INPUT_TOKENS, "BIGINT"),
    ("raw_input_tokens", sc.RAW_INPUT_TOKENS, "BIGINT"),
    ("output_tokens", sc.GEN_AI_OUTPUT_TOKENS, "BIGINT"),
    ("cache_read_tokens", sc.GEN_AI_CACHE_READ, "BIGINT"),
    ("cache_write_tokens", sc.GEN_AI_CACHE_WRITE, "BIGINT"),
    ("_cost_usd", sc.COST_USD, "DOUBLE"),
    ("frontier_equivalent_usd", sc.FRONTIER_EQUIVALENT_USD, "DOUBLE"),
    ("price_version", sc.PRICE_VERSION, "VARCHAR"),
    ("_unpriced", sc.UNPRICED, "BOOLEAN"),
    ("attempt", sc.ATTEMPT, "INTEGER"),
    ("escalated", sc.ESCALATED, "BOOLEAN"),
    ("status", sc.STATUS, "VARCHAR"),
    ("error_type", sc.ERROR_TYPE, "VARCHAR"),
    # Read at ingest only, not columns of their own (see spans_select); so are _cost_usd and _unpriced.
    ("_model", sc.MODEL, "VARCHAR"),
    ("_unpriced_calls", sc.UNPRICED_CALLS, "INTEGER"),
)
_PRIVATE = ", ".join(column for column, _, _ in PROMOTED if column.startswith("_"))


def spans_select(source: str) -> str:
    """SQL turning segment rows (``source``: a relation) into rows of ``spans``, by column name.

    Unpriced: a model call is priced only when it carries a cost and is not flagged unpriced; a chat
    span with no cost is unpriced even if the flag is missing, so it is counted, never taken as $0.
    A run span is unpriced when its ``stakeflow.unpriced_calls`` is above 0, and then an amount of $0
    on it (cost or frontier equivalent: what a run whose calls were all unpriced carries) is NULL:
    no price is not a price of $0.
    Frontier equivalent: the value the activity stored; a priced frontier call that lacks it (a span
    from another producer) is its own equivalent, as the activity would have stored it.
    Model: a step span names its routed model in ``stakeflow.model`` (``gen_ai.request.model`` is for
    model calls only, so OTLP backends count each LLM call once); it fills ``request_model``, as the
    attribute did on step spans written before, so the column reads the same for old and new steps.
    """
    struct = json.dumps({key: ("DOUBLE" if kind.startswith("DECIMAL") else kind) for _, key, kind in PROMOTED})
    promoted = ",\n        ".join(f"a.{quote_ident(key)} AS {column}" for column, key, _ in PROMOTED)
    run_unpriced = f"(name = {quote_literal(sc.SPAN_RUN)} AND unpriced)"
    return f"""
SELECT * EXCLUDE ({_PRIVATE}) REPLACE (
        CASE WHEN unpriced AND (NOT {run_unpriced} OR _cost_usd = 0) THEN NULL
            ELSE TRY_CAST(_cost_usd AS DECIMAL(18, 9)) END AS cost_usd,
        CASE WHEN {run_unpriced} AND frontier_equivalent_usd = 0 THEN NULL
            ELSE TRY_CAST(coalesce(frontier_equivalent_usd,
                                   CASE WHEN route = 'frontier' AND NOT unpriced THEN _cost_usd END)
                          AS DECIMAL(18, 9)) END AS frontier_equivalent_usd,
        coalesce(request_model, CASE WHEN name = {quote_literal(sc.SPAN_STEP)} THEN _model END) AS request_model)
FROM (
    SELECT span_id, trace_id, parent_span_id, name, kind,
        make_timestamp(start_ns // 1000) AS start_time,
        make_timestamp(coalesce(end_ns, start_ns) // 1000) AS end_time,
        (coalesce(end_ns, start_ns) - start_ns) / 1e6 AS duration_ms,
        status_code, nullif(status_message, '') AS status_message, service_name, attributes, resource,
        {promoted},
        coalesce(a.{quote_ident(sc.UNPRICED)}, false)
            OR coalesce(a.{quote_ident(sc.GEN_AI_OPERATION)} = 'chat' AND a.{quote_ident(sc.COST_USD)} IS NULL, false)
            OR coalesce(name = {quote_literal(sc.SPAN_RUN)} AND a.{quote_ident(sc.UNPRICED_CALLS)} > 0, false)
            AS unpriced,
        NULL AS cost_usd
    FROM (SELECT *, json_transform(attributes, {quote_literal(struct)}) AS a FROM {source})
)"""
