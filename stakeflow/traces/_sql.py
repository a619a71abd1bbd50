"""``stakeflow sql``: one read statement of a person's over the trace store, in the shared sandbox.

The statement check and the DuckDB lock-down are ``stakeflow.stores.readonly_sql``'s, the same as the
``sql_query`` tool's: one statement, read-only, no extension installed or loaded on demand, no file
or URL but the spool's segments (which the ``spans`` view of a reader reads), no ``SET`` to undo it.
"""

from __future__ import annotations

from typing import Any

import duckdb

from stakeflow.core.errors import InputError
from stakeflow.stores.readonly_sql import SQLRefused, first_paragraph, lock_down, read_statement
from stakeflow.traces._store import TraceStore


def run_sql(store: TraceStore, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ONE read statement (SELECT, WITH, FROM, DESCRIBE, SHOW, ...) on a locked-down reader.

    Anything else (INSERT, COPY, ATTACH, SET, PRAGMA, several statements) is an InputError saying
    why; so is a statement that reaches for a file outside the spool.
    """
    try:
        statement = read_statement(sql)
    except SQLRefused as e:
        raise InputError(str(e)) from None
    with store.reader() as con:
        lock_down(con, allowed_directories=[str(store.spool_dir) + "/"])
        try:
            result = con.execute(statement)
            columns = [d[0] for d in result.description or []]
            return columns, result.fetchall()
        except duckdb.Error as e:
            raise InputError(f"SQL failed: {first_paragraph(e)}") from None
