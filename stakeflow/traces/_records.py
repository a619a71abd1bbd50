"""Rows that are not spans: shadow evaluations (``evals``) and captured model calls (``captures``).

They travel like spans — a worker writes Parquet files into the spool and never opens the DuckDB file;
readers ingest them — but into their own tables, keyed by a deterministic id, so a worker that dies
after writing and retries writes a row that is ignored: each evaluation or capture is stored once.
Captured prompts and outputs go only here, never into a span (spans may also go to an OTLP backend).

On disk: ``<traces>.spool/records/<table>/<name>.parquet``; the span spool's own files stay at its top.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb

from stakeflow.stores.readonly_sql import quote_ident, quote_literal
from stakeflow.traces._rows import one_row

INTEGER_T = "INTEGER"
# table -> (key column, {column: SQL type}); the format only ever gains columns.
RECORD_TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "evals": (
        "eval_id",
        {
            "eval_id": "VARCHAR",
            "recorded_at": "TIMESTAMP",
            "run_id": "VARCHAR",
            "shadow_run_id": "VARCHAR",
            "step": "INTEGER",
            "kind": "VARCHAR",
            "tool": "VARCHAR",
            "agent": "VARCHAR",
            "open_model": "VARCHAR",
            "frontier_model": "VARCHAR",
            "verdict": "VARCHAR",
            "method": "VARCHAR",
            "reason": "VARCHAR",
            "open_cost_usd": "DOUBLE",
            "frontier_cost_usd": "DOUBLE",
            "judge_cost_usd": "DOUBLE",
            "open_latency_ms": "DOUBLE",
            "frontier_latency_ms": "DOUBLE",
            "judge_prompt_version": "VARCHAR",
            "source": "VARCHAR",
            "prompt": "VARCHAR",
            "open_output": "VARCHAR",
            "frontier_output": "VARCHAR",
        },
    ),
    "labels": (
        "label_id",
        {
            "label_id": "VARCHAR",
            "recorded_at": "TIMESTAMP",
            "run_id": "VARCHAR",
            "step": INTEGER_T,
            "decision": "VARCHAR",
            "by": "VARCHAR",
            "note": "VARCHAR",
            "edited_calls": "JSON",
        },
    ),
    "captures": (
        "capture_id",
        {
            "capture_id": "VARCHAR",
            "recorded_at": "TIMESTAMP",
            "run_id": "VARCHAR",
            "step": "INTEGER",
            "purpose": "VARCHAR",
            "tool": "VARCHAR",
            "agent": "VARCHAR",
            "route": "VARCHAR",
            "model": "VARCHAR",
            "source": "VARCHAR",
            "sensitivity": "VARCHAR",
            "include_private": "BOOLEAN",
            "price_version": "VARCHAR",
            "ok": "BOOLEAN",
            "request": "JSON",
            "response": "JSON",
            "approval": "VARCHAR",
            "approved_action": "JSON",
        },
    ),
}


def records_dir(spool_dir: Path, table: str) -> Path:
    return spool_dir / "records" / table


def create_sql(table: str) -> str:
    key, columns = RECORD_TABLES[table]
    cols = ",\n    ".join(f"{quote_ident(c)} {t}{' PRIMARY KEY' if c == key else ''}" for c, t in columns.items())
    return f"CREATE TABLE IF NOT EXISTS {quote_ident(table)} (\n    {cols}\n)"


class RecordWriter:
    """Writes rows for one table as Parquet files in the spool (atomically: a hidden temporary, then rename)."""

    def __init__(self, spool_dir: Path, table: str) -> None:
        if table not in RECORD_TABLES:
            raise ValueError(f"unknown record table {table!r}")
        self.table = table
        self.folder = records_dir(spool_dir, table)
        self._prefix = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._seq = itertools.count()

    def write(self, rows: Sequence[Mapping[str, Any]]) -> Path:
        _, columns = RECORD_TABLES[self.table]
        unknown = {k for row in rows for k in row} - set(columns)
        if unknown:
            raise ValueError(f"{self.table} has no column(s) {', '.join(sorted(unknown))}")
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = f"{self._prefix}-{next(self._seq):08d}"
        json_tmp = self.folder / f".{stem}.ndjson.tmp"
        parquet_tmp = self.folder / f".{stem}.parquet.tmp"
        spec = "{" + ", ".join(f"{quote_literal(c)}: {quote_literal(t)}" for c, t in columns.items()) + "}"
        try:
            json_tmp.write_text("".join(json.dumps(dict(r), default=str) + "\n" for r in rows), encoding="utf-8")
            con = duckdb.connect(":memory:", config={"threads": 1})
            try:
                con.execute(
                    f"COPY (SELECT * FROM read_ndjson({quote_literal(str(json_tmp))}, columns={spec},"
                    f" maximum_object_size=268435456)) TO {quote_literal(str(parquet_tmp))} (FORMAT parquet)"
                )
            finally:
                con.close()
            target = self.folder / f"{stem}.parquet"
            os.replace(parquet_tmp, target)
            return target
        finally:
            json_tmp.unlink(missing_ok=True)
            parquet_tmp.unlink(missing_ok=True)


def pending(spool_dir: Path, table: str) -> list[Path]:
    with contextlib.suppress(OSError):
        return sorted(records_dir(spool_dir, table).glob("*.parquet"))
    return []


def ingest(con: duckdb.DuckDBPyConnection, spool_dir: Path) -> int:
    """Move every pending record file into its table (rows already there by key are ignored); rows read."""
    read = 0
    for table in RECORD_TABLES:
        files = pending(spool_dir, table)
        if not files:
            continue
        names = [str(p) for p in files]
        con.execute("BEGIN")
        try:
            read += one_row(con, "SELECT count(*) FROM read_parquet(?, union_by_name = true)", [names])[0]
            con.execute(
                f"INSERT INTO {quote_ident(table)} BY NAME SELECT * FROM read_parquet(?, union_by_name = true) "
                "ON CONFLICT DO NOTHING",
                [names],
            )
            con.execute("COMMIT")
        except duckdb.Error:
            con.execute("ROLLBACK")
            raise
        for path in files:
            path.unlink(missing_ok=True)
    return read


def attach(con: duckdb.DuckDBPyConnection, spool_dir: Path, database: str) -> None:
    """Temporary views that add pending record files to each table, as readers see spans."""
    for table, (key, _) in RECORD_TABLES.items():
        files = pending(spool_dir, table)
        if not files:
            continue
        listed = "[" + ", ".join(quote_literal(str(f)) for f in files) + "]"
        t, k = quote_ident(table), quote_ident(key)
        con.execute(f"""
            CREATE TEMP VIEW {t} AS
            SELECT * FROM {database}.main.{t}
            UNION ALL BY NAME
            SELECT * FROM (SELECT DISTINCT ON ({k}) * FROM read_parquet({listed}, union_by_name = true)) s
            WHERE NOT EXISTS (SELECT 1 FROM {database}.main.{t} m WHERE m.{k} = s.{k})
        """)
