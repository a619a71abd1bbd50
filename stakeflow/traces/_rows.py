"""The one row of a query that always returns one (an aggregate, ``current_database()``)."""

from __future__ import annotations

from typing import Any

import duckdb


def one_row(con: duckdb.DuckDBPyConnection, sql: str, parameters: object = None) -> tuple[Any, ...]:
    """``con.execute(sql, parameters).fetchone()``, which DuckDB types as maybe None: here it never is."""
    row = con.execute(sql, parameters).fetchone()
    if row is None:
        raise RuntimeError(f"DuckDB returned no row for a query that always returns one: {sql}")
    return row
