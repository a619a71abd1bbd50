"""The sql_query tool: one read-only DuckDB query over the workspace's data files.

Each call gets its own in-memory DuckDB, shut off (by ``stakeflow.stores.readonly_sql``, the project's
one lock-down) from every file but the workspace's data files, from extensions and from the
network, and capped in memory, threads and spill space (``[tools.sql_query] memory_limit``,
``threads``, ``temp_directory``, ``max_temp_size``): one query must not take the worker's memory
or disk. What it returns is capped inside the query too: each cell at 2,000 characters (with a
marker saying how long it was), at most 100 columns, and rows fetched one by one up to 20,000
characters. A query that hits a cap is told which one, and how to raise it. The query runs in a thread
and is interrupted at ``[tools.sql_query] timeout_s``: a model's runaway join must not hold the worker.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb

from stakeflow.activities.tools.context import ToolContext
from stakeflow.activities.tools.workspace import is_records, real_path, resolve_workspace
from stakeflow.agents.tools import SqlQueryArgs
from stakeflow.agents.types import ToolResult
from stakeflow.config import SqlQueryConfig
from stakeflow.core.errors import ToolError
from stakeflow.stores.readonly_sql import (
    SQLLimits,
    SQLRefused,
    first_paragraph,
    is_resource_error,
    lock_down,
    quote_ident,
    quote_literal,
    read_statement,
)

_SQL_READERS = {
    ".csv": "read_csv",
    ".tsv": "read_csv",
    ".parquet": "read_parquet",
    ".json": "read_json",
    ".jsonl": "read_json",
    ".ndjson": "read_json",
}
MAX_SQL_FILES = 200
MAX_CELL_CHARS = 2_000  # one cell as the model sees it
MAX_RESULT_CHARS = 20_000  # the rows fetched (what run_tool keeps of any output)
MAX_COLUMNS = 100
# Column types whose values have a small fixed size: every other type (text, blobs, lists, structs, maps, JSON,
# unions, bit strings) is cut to MAX_CELL_CHARS inside the query.
_FIXED_SIZE = {
    "boolean", "tinyint", "smallint", "integer", "bigint", "hugeint", "utinyint", "usmallint", "uinteger",
    "ubigint", "uhugeint", "float", "double", "decimal", "date", "time", "timestamp", "timestamp with time zone",
    "timestamp_s", "timestamp_ms", "timestamp_ns", "time with time zone", "interval", "uuid", "enum", "null",
    "varint", "bignum", "time_ns",
}  # fmt: skip
_GLOB_CHARS = set("*?[]{}")


async def execute(args: SqlQueryArgs, ctx: ToolContext) -> ToolResult:
    """Run ``sql_query``, stopping the query at the configured timeout."""
    cfg = ctx.config.sql_query
    ws = await asyncio.to_thread(resolve_workspace, ctx.workspace)
    # Its own spill folder: concurrent queries never share one, and what a killed query left is
    # easy to tell apart (and remove).
    spill = cfg.temp_directory / f"sql-{uuid.uuid4().hex}" if cfg.temp_directory is not None else None
    con = duckdb.connect(":memory:")
    task = asyncio.ensure_future(asyncio.to_thread(_run_sql, con, ws, args.query, cfg, spill))
    try:
        return await asyncio.wait_for(asyncio.shield(task), cfg.timeout_s)
    except TimeoutError:
        raise ToolError(
            f"the query ran longer than {cfg.timeout_s:g}s and was stopped: narrow it "
            "(WHERE, GROUP BY, LIMIT) or raise [tools.sql_query] timeout_s in stakeflow.toml"
        ) from None
    finally:
        # The query thread outlives a timeout or a cancellation until DuckDB sees an
        # interrupt; one sent between two statements is lost, so keep sending.
        while not task.done():
            con.interrupt()
            await asyncio.wait({task}, timeout=0.05)
        if not task.cancelled():
            task.exception()  # reported above already; read it so asyncio does not log it
        con.close()
        if spill is not None:
            shutil.rmtree(spill, ignore_errors=True)


def _run_sql(
    con: duckdb.DuckDBPyConnection, ws: Path, query: str, cfg: SqlQueryConfig, spill: Path | None
) -> ToolResult:
    """Check, sandbox and run one query on ``con`` (blocking; runs in a thread)."""
    max_rows = cfg.max_rows
    try:
        statement = read_statement(query)
    except SQLRefused as e:
        raise ToolError(str(e)) from None
    if spill is not None:
        spill.mkdir(parents=True, exist_ok=True)
    limits = SQLLimits(
        memory_limit=cfg.memory_limit,
        threads=cfg.threads,
        temp_directory=str(spill) if spill is not None else None,
        max_temp_directory_size=cfg.max_temp_size,
    )
    tables, skipped = _expose_workspace(con, ws, limits)
    try:
        relation = con.sql(_quoted_files(statement, tables))
        rows, over = _fetch(con, relation, max_rows)
        total = relation.aggregate("count(*)").fetchall()[0][0] if len(rows) > max_rows or over else len(rows)
    except duckdb.InterruptException:
        raise
    except duckdb.Error as e:
        if is_resource_error(e):
            raise ToolError(_cap_error(e, cfg)) from None
        raise ToolError(_sql_error(e, tables, skipped)) from None
    shown = rows[: max_rows if not over else max(1, len(rows) - 1)]
    text = _format_table(relation.columns[:MAX_COLUMNS], shown)
    hidden = len(relation.columns) - MAX_COLUMNS
    wide = f" ({hidden} more columns not shown)" if hidden > 0 else ""
    if total <= len(shown):
        return ToolResult(output=f"{text}\n({total} row{'' if total == 1 else 's'}){wide}", truncated=bool(wide))
    why = (
        f": the result is over {MAX_RESULT_CHARS} characters; select fewer or narrower columns, or fewer rows"
        if over
        else f", {total - max_rows} cut: add WHERE, GROUP BY or LIMIT, or raise [tools.sql_query] max_rows in stakeflow.toml"
    )
    return ToolResult(output=f"{text}\n({len(shown)} of {total} rows shown{why}){wide}", truncated=True)


def _fetch(
    con: duckdb.DuckDBPyConnection, relation: duckdb.DuckDBPyRelation, max_rows: int
) -> tuple[list[tuple[Any, ...]], bool]:
    """Up to ``max_rows`` + 1 rows, their cells cut inside the query, fetched one by one until they pass
    ``MAX_RESULT_CHARS`` (and whether they did). ``memory_limit`` caps DuckDB, not what a fetch copies out of it:
    five rows of 200 MB strings took a worker to 3.3 GB."""
    rows: list[tuple[Any, ...]] = []
    size = 0
    con.execute(relation.project(_capped_cells(relation)).limit(max_rows + 1).sql_query())
    while len(rows) <= max_rows and size <= MAX_RESULT_CHARS and (row := con.fetchone()) is not None:
        rows.append(row)
        size += sum(len(_cell(v)) + 3 for v in row)
    con.abort()  # the rest of the result is not wanted (and the count needs the connection)
    return rows, size > MAX_RESULT_CHARS


def _capped_cells(relation: duckdb.DuckDBPyRelation) -> str:
    """The projection that cuts each text, binary or nested cell to ``MAX_CELL_CHARS`` inside the query, with a marker
    saying how long it was; other columns pass as they are. Columns by position (names may repeat)."""
    exprs = []
    for i, (name, kind) in enumerate(zip(relation.columns[:MAX_COLUMNS], relation.types, strict=False), start=1):
        if kind.id in _FIXED_SIZE:
            exprs.append(f"#{i} AS {quote_ident(name)}")
            continue
        text = f"#{i}" if kind.id == "varchar" else f"CAST(#{i} AS VARCHAR)"
        exprs.append(
            f"CASE WHEN length({text}) > {MAX_CELL_CHARS} THEN left({text}, {MAX_CELL_CHARS}) || "
            f"'[... cut: ' || length({text}) || ' characters in all]' ELSE {text} END AS {quote_ident(name)}"
        )
    return ", ".join(exprs)


def _expose_workspace(con: duckdb.DuckDBPyConnection, ws: Path, limits: SQLLimits) -> tuple[list[str], list[str]]:
    """Shut DuckDB off from everything but the workspace's data files, then make each file a view.

    Locked down first, so the caps and the ban on loading extensions hold while DuckDB reads the
    files to create the views. A view is named after the file's workspace path ("sales.csv", which
    is also what ``FROM 'sales.csv'`` looks up) and, when unambiguous, its stem ("sales"). Views
    read the files' real paths, and ``allowed_paths`` lists those and nothing else.
    """
    files = _data_files(ws)
    lock_down(con, allowed_paths=[str(real) for _, real in files], limits=limits)
    stems = Counter(Path(name).stem for name, _ in files)
    names = {name for name, _ in files}
    tables: list[str] = []
    skipped: list[str] = []
    for name, real in files:
        reader = _SQL_READERS[real.suffix.lower()]
        try:
            con.execute(f"CREATE VIEW {quote_ident(name)} AS SELECT * FROM {reader}({quote_literal(str(real))})")
        except duckdb.InterruptException:
            raise
        except duckdb.Error as e:
            skipped.append(f"{name} ({first_paragraph(e)})")
            continue
        tables.append(name)
        stem = Path(name).stem
        if stems[stem] == 1 and stem not in names:
            con.execute(f"CREATE VIEW {quote_ident(stem)} AS SELECT * FROM {quote_ident(name)}")
            tables.append(stem)
    return tables, skipped


def _data_files(ws: Path) -> list[tuple[str, Path]]:
    """(workspace-relative name, real path) of each data file whose real path stays inside.

    Hidden files and folders are skipped (stakeflow's own records in ``.stakeflow/`` among them), and so
    is a symbolic link that loops: one bad link must not fail every query.
    """
    found: list[tuple[str, Path]] = []
    for root, dirs, names in os.walk(ws):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root) / name
            if path.suffix.lower() not in _SQL_READERS or name.startswith("."):
                continue
            real = real_path(path)
            # DuckDB would expand glob characters in a path, reaching other files.
            if real is None or not real.is_relative_to(ws) or is_records(ws, real):
                continue
            if not real.is_file() or _GLOB_CHARS & set(str(real)):
                continue
            found.append((path.relative_to(ws).as_posix(), real))
            if len(found) >= MAX_SQL_FILES:
                return found
    return found


def _cap_error(err: duckdb.Error, cfg: SqlQueryConfig) -> str:
    """Which cap the query hit, and how to raise it; DuckDB's own first line after that."""
    detail = first_paragraph(err).splitlines()[0]
    if "max_temp_directory_size" in str(err):
        return (
            f"the query spilled more than [tools.sql_query] max_temp_size ({cfg.max_temp_size}) to disk: narrow it "
            "(WHERE, fewer columns, GROUP BY, LIMIT), or raise max_temp_size in [tools.sql_query] in stakeflow.toml "
            f"({detail})"
        )
    spill = "" if cfg.temp_directory is not None else "; setting temp_directory there lets DuckDB spill to disk instead"
    return (
        f"the query needs more memory than [tools.sql_query] memory_limit ({cfg.memory_limit}) allows: narrow it "
        "(WHERE, fewer columns, GROUP BY, LIMIT), or raise memory_limit in [tools.sql_query] in stakeflow.toml"
        f"{spill} ({detail})"
    )


def _quoted_files(statement: str, tables: list[str]) -> str:
    """``FROM sales.csv`` as ``FROM "sales.csv"``: a file name written bare reads as catalog ``sales``, table
    ``csv``, which no model means. Names already quoted, and text inside string literals, stay as written."""
    named = sorted((t for t in tables if "." in t), key=len, reverse=True)
    if not named:
        return statement
    bare = re.compile(r"(?<![\w.'\"/-])(" + "|".join(re.escape(t) for t in named) + r")(?![\w'\"/-])")
    # Split on single-quoted literals: only the text between them is SQL to rewrite.
    parts = re.split(r"('(?:[^']|'')*')", statement)
    return "".join(part if i % 2 else bare.sub(lambda m: f'"{m.group(1)}"', part) for i, part in enumerate(parts))


def _sql_error(err: duckdb.Error, tables: list[str], skipped: list[str]) -> str:
    message = f"the query failed: {first_paragraph(err)}"
    if isinstance(err, duckdb.CatalogException | duckdb.PermissionException):
        listed = ", ".join(tables[:40]) or "none"
        message += (
            f". Only the workspace's data files can be queried, by name (FROM sales or FROM 'sales.csv'); "
            f"file functions such as read_csv cannot reach anything else. Tables: {listed}"
        )
    if skipped:
        message += f". Files DuckDB could not read: {'; '.join(skipped[:10])}"
    return message


def _format_table(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    lines = [" | ".join(columns)]
    lines += [" | ".join(_cell(value) for value in row) for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    text = repr(value) if isinstance(value, float) else str(value)
    return text.replace("\n", "\\n")  # one row, one line
