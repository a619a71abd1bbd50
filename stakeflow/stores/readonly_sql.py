"""Read-only DuckDB SQL: the one statement check and the one lock-down every SQL entry point uses.

Two places run SQL someone else wrote: the ``sql_query`` tool (a model's query over workspace
files) and ``stakeflow sql`` (a person's query over the trace store). Both must refuse anything but
one read statement, and both must shut DuckDB off from files, extensions and the network beyond
what they expose. Written once here, so the two cannot drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb


class SQLRefused(ValueError):
    """The SQL is not one read-only statement; the message says why, for the person or model who wrote it."""


@dataclass(frozen=True)
class SQLLimits:
    """Resource caps for one connection (DuckDB settings); None leaves DuckDB's default."""

    memory_limit: str | None = "512MB"
    threads: int | None = 1
    temp_directory: str | None = None  # spill here; None = no spilling to disk at all
    max_temp_directory_size: str | None = "1GB"


# DuckDB classifies WITH, FROM-first, DESCRIBE, SUMMARIZE and SHOW as SELECT too.
READ_KINDS = "SELECT, WITH, FROM, DESCRIBE, SUMMARIZE, SHOW"


def read_statement(sql: str) -> str:
    """The text of the single read-only statement in ``sql``; SQLRefused otherwise."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise SQLRefused(f"the query does not parse: {first_paragraph(e)}") from None
    if len(statements) != 1:
        raise SQLRefused(f"send exactly one SQL statement (this has {len(statements)})")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise SQLRefused(f"only read-only queries are allowed ({READ_KINDS}); this one is {kind.name}")
    return statements[0].query


def lock_down(
    con: duckdb.DuckDBPyConnection,
    *,
    allowed_paths: Sequence[str] = (),
    allowed_directories: Sequence[str] = (),
    limits: SQLLimits | None = None,
) -> None:
    """Shut ``con`` off from everything but the listed files and folders, then lock its configuration.

    No extension is installed or loaded on demand, no other file or URL can be read, and the query
    cannot ``SET`` any of this back. Resource caps apply when ``limits`` is given.
    """
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    if limits is not None:
        apply_limits(con, limits)
    if allowed_paths:
        con.execute("SET allowed_paths = ?", [list(allowed_paths)])
    if allowed_directories:
        con.execute("SET allowed_directories = ?", [list(allowed_directories)])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def apply_limits(con: duckdb.DuckDBPyConnection, limits: SQLLimits) -> None:
    """Memory, thread and temporary-storage caps for ``con``."""
    if limits.memory_limit is not None:
        con.execute("SET memory_limit = ?", [limits.memory_limit])
    if limits.threads is not None:
        con.execute(f"SET threads = {int(limits.threads)}")
    if limits.temp_directory is None:
        con.execute("SET temp_directory = ''")  # nothing spills to disk
    else:
        con.execute("SET temp_directory = ?", [limits.temp_directory])
        if limits.max_temp_directory_size is not None:
            con.execute("SET max_temp_directory_size = ?", [limits.max_temp_directory_size])


def is_resource_error(err: duckdb.Error) -> bool:
    """True when DuckDB stopped a query for hitting a cap (memory, temporary storage)."""
    return isinstance(err, duckdb.OutOfMemoryException) or "max_temp_directory_size" in str(err)


def quote_literal(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def quote_ident(text: str) -> str:
    """``text`` as a quoted SQL identifier."""
    return '"' + text.replace('"', '""') + '"'


def first_paragraph(err: Exception) -> str:
    """DuckDB's message without the hints and context it appends after a blank line."""
    return str(err).split("\n\n")[0].strip()
