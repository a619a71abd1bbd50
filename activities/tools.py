"""The run_tool activity: runs one tool call from the catalogue, inside its limits.

A tool that refuses (bad arguments, a path outside the workspace, a host that is not
allowed, a write statement, a division by zero) returns ``ToolResult(ok=False, error=...)``:
the model chose that input, so it must see why it failed and try something else.
Exceptions are left for the worker's own trouble: an OSError in the ledger propagates so
Temporal retries it, and what no retry can fix raises a non-retryable ``ApplicationError``
of type ``TOOL_FAILED``.

Every output is cut to ``MAX_OUTPUT_CHARS`` so a big page or table never lands in
workflow history whole.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import ipaddress
import json
import math
import operator
import os
import socket
import time
import uuid
from collections import Counter
from decimal import Decimal, localcontext
from fractions import Fraction
from pathlib import Path
from typing import Any

import duckdb
import httpx
from pydantic import BaseModel, ValidationError
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from temporalio import activity
from temporalio.exceptions import ApplicationError

from agents.tools import CATALOGUE, CalculatorArgs, HttpGetArgs, ReadFileArgs, SqlQueryArgs, WriteFileArgs
from agents.types import ToolRequest, ToolResult
from stakeflow.errors import TOOL_FAILED, ToolError
from stakeflow import semconv as sc
from stakeflow.settings import HttpGetConfig, ToolsConfig

_tracer = trace.get_tracer("stakeflow.activities")

MAX_OUTPUT_CHARS = 20_000


class ToolActivities:
    """The ``run_tool`` activity, bound to the worker's tool limits and ledger folder."""

    def __init__(self, tools: ToolsConfig, ledger_dir: Path) -> None:
        self._tools = tools
        self._ledger_dir = ledger_dir

    @activity.defn(name="run_tool")
    async def run_tool(self, req: ToolRequest) -> ToolResult:
        """Validate the arguments, run the tool, and report what happened (traced as ``execute_tool``)."""
        started = time.monotonic()
        with _tracer.start_as_current_span(
            f"{sc.SPAN_TOOL} {req.tool}", kind=SpanKind.INTERNAL,
            attributes={
                sc.GEN_AI_OPERATION: sc.SPAN_TOOL, sc.GEN_AI_TOOL_NAME: req.tool, sc.RUN_ID: req.run_id,
                sc.STEP: req.step, sc.ATTEMPT: activity.info().attempt if activity.in_activity() else 1,
            },
        ) as span:
            try:
                result = await self._dispatch(req, self._validate(req))
            except ToolError as e:
                result = ToolResult(ok=False, error=_cut(str(e)))
            span.set_attributes({sc.STATUS: "ok" if result.ok else "tool_error", "stakeflow.replayed": result.replayed})
            if not result.ok:
                span.set_attribute(sc.ERROR_TYPE, "ToolRefused")
        return _capped(result).model_copy(
            update={"tool": req.tool, "duration_ms": round((time.monotonic() - started) * 1000, 3)}
        )

    def _validate(self, req: ToolRequest) -> BaseModel:
        spec = CATALOGUE.get(req.tool)
        if spec is None:
            raise ToolError(f"unknown tool '{req.tool}': the tools are {', '.join(sorted(CATALOGUE))}")
        enabled = self._tools.enabled
        if enabled is not None and req.tool not in enabled:
            raise ToolError(
                f"tool '{req.tool}' is not enabled on this worker: add it to [tools] enabled in stakeflow.toml"
            )
        try:
            return spec.args_model.model_validate(req.args)
        except ValidationError as e:
            raise ToolError(_describe_invalid(req.tool, spec.args_model, e)) from None

    async def _dispatch(self, req: ToolRequest, args: BaseModel) -> ToolResult:
        # File and DuckDB work blocks, so it runs in a thread: the worker's event loop stays free.
        if isinstance(args, CalculatorArgs):
            return ToolResult(output=calculate(args.expression))
        if isinstance(args, ReadFileArgs):
            return await asyncio.to_thread(self._read_file, req.workspace, args)
        if isinstance(args, WriteFileArgs):
            return await asyncio.to_thread(self._write_file, req.workspace, args, req.idempotency_key)
        if isinstance(args, SqlQueryArgs):
            return await self._sql_query(req.workspace, args)
        if isinstance(args, HttpGetArgs):
            return await _http_get(args.url, self._tools.http_get)
        raise ApplicationError(
            f"tool '{req.tool}' is in the catalogue but activities/tools.py does not implement it",
            type=TOOL_FAILED,
            non_retryable=True,
        )

    # --- read_file / write_file ------------------------------------------------------------

    def _read_file(self, workspace: str, args: ReadFileArgs) -> ToolResult:
        target = _confine(_workspace(workspace), args.path)
        if target.is_dir():
            raise ToolError(f"'{args.path}' is a folder, not a file{_listing(target)}")
        if not target.is_file():
            raise ToolError(f"there is no file '{args.path}' in the workspace{_listing(target.parent)}")
        limit = self._tools.read_file.max_bytes
        try:
            with target.open("rb") as f:
                data = f.read(limit + 1)
        except OSError as e:
            raise ToolError(f"cannot read '{args.path}': {e.strerror}") from None
        text = data[:limit].decode("utf-8", errors="replace")
        if len(data) <= limit:
            return ToolResult(output=text)
        note = (
            f"\n[truncated: showing the first {limit} of {target.stat().st_size} bytes; "
            "raise [tools.read_file] max_bytes in stakeflow.toml to read more]"
        )
        return ToolResult(output=text + note, truncated=True)

    def _write_file(self, workspace: str, args: WriteFileArgs, key: str) -> ToolResult:
        if not key:
            raise ToolError(
                "write_file needs an idempotency key so a retry cannot write twice: "
                "the workflow must set ToolRequest.idempotency_key"
            )
        data = args.content.encode("utf-8")
        limit = self._tools.write_file.max_bytes
        if len(data) > limit:
            raise ToolError(
                f"content is {len(data)} bytes, over the {limit}-byte limit: write less, "
                "or raise [tools.write_file] max_bytes in stakeflow.toml"
            )
        target = _confine(_workspace(workspace), args.path)
        if target.is_dir():
            raise ToolError(f"'{args.path}' is a folder: give a file path")
        ledger = _Ledger(self._ledger_dir, key)
        facts = {
            "key": key,
            "tool": "write_file",
            "path": str(target),
            "append": args.append,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        entry = ledger.read()
        if entry is not None and any(entry.get(k) != v for k, v in facts.items()):
            raise ToolError(
                f"idempotency key '{key}' was already used for a different write "
                f"({entry.get('path')}): every write needs its own key"
            )
        if entry is not None and entry.get("status") == "done":
            return ToolResult.model_validate(entry["result"]).model_copy(update={"replayed": True})
        if args.append and entry is None:
            # Recorded before the append: see _append_from for why.
            original = target.stat().st_size if target.exists() else 0
            ledger.record({**facts, "status": "pending", "original_size": original})
        elif args.append:
            original = int(entry["original_size"])
        try:
            if args.append:
                size = _append_from(target, data, original)
                output = f"appended {len(data)} bytes to {args.path} (now {size} bytes)"
            else:
                # Replacing is idempotent in itself: a crash before the ledger says "done" only
                # means the retry writes the same bytes again.
                _write_atomically(target, data)
                output = f"wrote {len(data)} bytes to {args.path}"
        except OSError as e:
            raise ToolError(f"cannot write '{args.path}': {e.strerror}") from None
        result = ToolResult(output=output)
        ledger.record({**facts, "status": "done", "result": result.model_dump()})
        return result

    # --- sql_query -------------------------------------------------------------------------

    async def _sql_query(self, workspace: str, args: SqlQueryArgs) -> ToolResult:
        cfg = self._tools.sql_query
        ws = await asyncio.to_thread(_workspace, workspace)
        con = duckdb.connect(":memory:")
        task = asyncio.ensure_future(asyncio.to_thread(_run_sql, con, ws, args.query, cfg.max_rows))
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


# --- results and arguments ------------------------------------------------------------------


def _capped(result: ToolResult) -> ToolResult:
    if len(result.output) <= MAX_OUTPUT_CHARS:
        return result
    note = f"\n[output truncated: showing the first {MAX_OUTPUT_CHARS} of {len(result.output)} characters]"
    return result.model_copy(update={"output": result.output[:MAX_OUTPUT_CHARS] + note, "truncated": True})


def _cut(text: str) -> str:
    return text if len(text) <= MAX_OUTPUT_CHARS else text[:MAX_OUTPUT_CHARS] + " [...]"


def _describe_invalid(tool: str, model: type[BaseModel], err: ValidationError) -> str:
    problems = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "arguments"
        if e["type"] == "missing":
            problems.append(f"'{where}' is missing")
        elif e["type"] == "extra_forbidden":
            problems.append(f"'{where}' is not an argument of {tool}")
        else:
            problems.append(f"'{where}': {e['msg']}")
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    takes = ", ".join(
        f"{name} ({prop.get('type', 'any')}{'' if name in required else ', optional'})"
        for name, prop in schema.get("properties", {}).items()
    )
    return f"invalid arguments for {tool}: {'; '.join(problems)}. {tool} takes: {takes}"


# --- calculator -----------------------------------------------------------------------------

MAX_EXPRESSION_CHARS = 2_000
MAX_EXPONENT = 10_000
# Numerators and denominators stay under ~3,600 digits, below Python's 4,300-digit
# int-to-str limit, so every result can be printed exactly.
MAX_RESULT_BITS = 12_000
MAX_DECIMAL_PLACES = 60

Number = Fraction | float


def calculate(expression: str) -> str:
    """Evaluate arithmetic exactly by walking its syntax tree; nothing is ever eval'd."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters: split it into steps")
    try:
        value = _evaluate(ast.parse(expression.strip(), mode="eval").body, expression.strip())
    except SyntaxError as e:
        raise ToolError(f"'{expression}' is not an arithmetic expression ({e.msg}): e.g. (3+4)*2") from None
    except ZeroDivisionError:
        raise ToolError(f"division by zero in '{expression}'") from None
    except OverflowError:
        raise ToolError(f"the result of '{expression}' is too large") from None
    except (RecursionError, MemoryError):
        raise ToolError("the expression is nested too deeply: split it into steps") from None
    return _format_number(value)


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"the exponent {_format_number(exponent)} is over the limit of {MAX_EXPONENT}")
    if isinstance(base, Fraction) and isinstance(exponent, Fraction) and exponent.denominator == 1:
        # Estimate the size before computing it, so 10**10000**... never eats the worker's memory.
        if abs(exponent.numerator) * math.log2(max(abs(base.numerator), base.denominator)) > MAX_RESULT_BITS:
            raise ToolError("the power is too large to compute exactly: rescale the numbers")
        return base**exponent.numerator
    result = float(base) ** float(exponent)
    if isinstance(result, complex):
        raise ToolError("a negative number to a fractional power has no real value")
    return result


_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _evaluate(node: ast.expr, source: str) -> Number:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        # A float literal is taken as the decimal it was written as: 0.1 is exactly 1/10.
        return _checked(Fraction(repr(node.value)) if isinstance(node.value, float) else Fraction(node.value))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_evaluate(node.operand, source)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _checked(_BINARY[type(node.op)](_evaluate(node.left, source), _evaluate(node.right, source)))
    text = ast.get_source_segment(source, node) or ast.unparse(node)
    raise ToolError(f"'{text[:80]}' is not allowed: the calculator takes numbers, + - * / // % ** and parentheses only")


def _checked(value: Number) -> Number:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ToolError("the result is too large for a floating-point number")
        return value
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_RESULT_BITS:
        raise ToolError("a number in the expression grows too large to compute exactly: rescale the numbers")
    return value


def _format_number(value: Number) -> str:
    """Integers as integers, terminating fractions as exact decimals, others as p/q with an approximation."""
    if isinstance(value, float):
        return repr(value)
    if value.denominator == 1:
        return str(value.numerator)
    exact = _exact_decimal(value)
    if exact is not None:
        return exact
    with localcontext() as ctx:
        ctx.prec = 17
        approx = Decimal(value.numerator) / Decimal(value.denominator)
    return f"{value.numerator}/{value.denominator} (≈ {approx})"


def _exact_decimal(value: Fraction) -> str | None:
    rest, twos, fives = value.denominator, 0, 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    places = max(twos, fives)
    if rest != 1 or places > MAX_DECIMAL_PLACES:
        return None
    digits = str(abs(value.numerator) * 10**places // value.denominator).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


# --- the workspace --------------------------------------------------------------------------


def _workspace(workspace: str) -> Path:
    if not workspace.strip():
        raise ToolError("this run has no workspace folder, so file tools cannot run: start the run with a workspace")
    ws = Path(workspace).resolve()
    if not ws.is_dir():
        raise ToolError(f"the workspace {ws} is not a folder: create it (mkdir -p {ws}) or use another workspace")
    return ws


def _confine(ws: Path, path: str) -> Path:
    """The real path of ``path`` inside the workspace; refuses '..', absolute paths and symlinks out."""
    if not path.strip():
        raise ToolError("the path is empty: give a path relative to the workspace, e.g. notes.txt")
    if Path(path).is_absolute():
        raise ToolError(f"'{path}' is an absolute path: give a path relative to the workspace, e.g. notes.txt")
    try:
        # resolve() follows every symlink that exists, including those in parent folders.
        target = (ws / path).resolve()
    except (OSError, ValueError) as e:
        raise ToolError(f"'{path}' is not a usable path: {e}") from None
    if not target.is_relative_to(ws):
        raise ToolError(
            f"'{path}' leads outside the workspace (through '..' or a symbolic link): give a path inside the workspace"
        )
    return target


def _listing(folder: Path, limit: int = 20) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        return ""
    if not names:
        return " (that folder is empty)"
    more = f", and {len(names) - limit} more" if len(names) > limit else ""
    return f" (that folder holds: {', '.join(names[:limit])}{more})"


# --- write_file: atomic writes and the idempotency ledger -----------------------------------


class _Ledger:
    """One JSON record per idempotency key: what a side-effecting call did, or is about to do."""

    def __init__(self, folder: Path, key: str) -> None:
        self.path = folder / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()}.json"

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except _LEDGER_SETUP_ERRORS as e:
            raise self._unusable(e) from None

    def record(self, entry: dict[str, Any]) -> None:
        try:
            _write_atomically(self.path, json.dumps(entry, sort_keys=True).encode("utf-8"))
        except _LEDGER_SETUP_ERRORS as e:
            raise self._unusable(e) from None

    def _unusable(self, err: OSError) -> ApplicationError:
        # Other OSErrors (a full disk) propagate as they are: a retry may succeed later.
        return ApplicationError(
            f"cannot use the tool ledger folder {self.path.parent}: {err.strerror}; make it a folder the "
            "worker can write, or set STAKEFLOW_HOME to one",
            type=TOOL_FAILED,
            non_retryable=True,
        )


# A ledger folder that is not a writable folder is set-up, and no retry will change it.
_LEDGER_SETUP_ERRORS = (PermissionError, NotADirectoryError, FileExistsError)


def _write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file and os.replace, so readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append_from(target: Path, data: bytes, original: int) -> int:
    """Append ``data`` to the file as it was at ``original`` bytes; returns the new size.

    Appending is not idempotent, and a crash can fall between the append and the ledger's
    "done" record. So the ledger first records "pending" with the file's original size; a
    retry that finds it cuts the file back to that size and appends again, and the bytes
    land exactly once whether the crash came before or after the append. What this cannot
    undo is another writer appending to the same file in that window.
    """
    if target.exists() and target.stat().st_size > original:
        os.truncate(target, original)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        return f.tell()


# --- sql_query ------------------------------------------------------------------------------

_SQL_READERS = {
    ".csv": "read_csv",
    ".tsv": "read_csv",
    ".parquet": "read_parquet",
    ".json": "read_json",
    ".jsonl": "read_json",
    ".ndjson": "read_json",
}
MAX_SQL_FILES = 200
_GLOB_CHARS = set("*?[]{}")


def _run_sql(con: duckdb.DuckDBPyConnection, ws: Path, query: str, max_rows: int) -> ToolResult:
    """Check, sandbox and run one query on ``con`` (blocking; runs in a thread)."""
    _check_read_only(con, query)
    tables, skipped = _expose_workspace(con, ws)
    try:
        relation = con.sql(query)
        rows = relation.limit(max_rows + 1).fetchall()
        total = relation.aggregate("count(*)").fetchall()[0][0] if len(rows) > max_rows else len(rows)
    except duckdb.InterruptException:
        raise
    except duckdb.Error as e:
        raise ToolError(_sql_error(e, tables, skipped)) from None
    text = _format_table(relation.columns, rows[:max_rows])
    if total <= max_rows:
        return ToolResult(output=f"{text}\n({total} row{'' if total == 1 else 's'})")
    note = (
        f"({max_rows} of {total} rows shown, {total - max_rows} cut: add WHERE, GROUP BY or LIMIT, "
        "or raise [tools.sql_query] max_rows in stakeflow.toml)"
    )
    return ToolResult(output=f"{text}\n{note}", truncated=True)


def _check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> None:
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as e:
        raise ToolError(f"the query does not parse: {_first_paragraph(e)}") from None
    if len(statements) != 1:
        raise ToolError(f"send exactly one SQL statement (this has {len(statements)})")
    kind = statements[0].type
    # DuckDB classifies WITH, FROM-first, DESCRIBE, SUMMARIZE and SHOW as SELECT too.
    if kind != duckdb.StatementType.SELECT:
        raise ToolError(
            f"only read-only queries are allowed (SELECT, WITH, FROM, DESCRIBE, SUMMARIZE, SHOW); "
            f"this is a {kind.name} statement"
        )


def _expose_workspace(con: duckdb.DuckDBPyConnection, ws: Path) -> tuple[list[str], list[str]]:
    """Make each data file a view, then shut DuckDB off from every other file and the network.

    A view is named after the file's workspace path ("sales.csv", which is also what
    ``FROM 'sales.csv'`` looks up) and, when unambiguous, its stem ("sales"). Views read the
    files' real paths, the only paths left in ``allowed_paths``.
    """
    con.execute("SET autoinstall_known_extensions=false")
    con.execute("SET autoload_known_extensions=false")
    files = _data_files(ws)
    stems = Counter(Path(name).stem for name, _ in files)
    names = {name for name, _ in files}
    tables: list[str] = []
    skipped: list[str] = []
    allowed: list[str] = []
    for name, real in files:
        reader = _SQL_READERS[real.suffix.lower()]
        try:
            con.execute(f"CREATE VIEW {_ident(name)} AS SELECT * FROM {reader}({_literal(str(real))})")
        except duckdb.InterruptException:
            raise
        except duckdb.Error as e:
            skipped.append(f"{name} ({_first_paragraph(e)})")
            continue
        tables.append(name)
        allowed.append(str(real))
        stem = Path(name).stem
        if stems[stem] == 1 and stem not in names:
            con.execute(f"CREATE VIEW {_ident(stem)} AS SELECT * FROM {_ident(name)}")
            tables.append(stem)
    con.execute(f"SET allowed_paths=[{', '.join(_literal(p) for p in allowed)}]")
    con.execute("SET enable_external_access=false")
    con.execute("SET lock_configuration=true")  # so the query cannot SET any of this back
    return tables, skipped


def _data_files(ws: Path) -> list[tuple[str, Path]]:
    """(workspace-relative name, real path) of each data file whose real path stays inside."""
    found: list[tuple[str, Path]] = []
    for root, dirs, names in os.walk(ws):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root) / name
            if path.suffix.lower() not in _SQL_READERS or name.startswith("."):
                continue
            real = path.resolve()
            # DuckDB would expand glob characters in a path, reaching other files.
            if not real.is_relative_to(ws) or not real.is_file() or _GLOB_CHARS & set(str(real)):
                continue
            found.append((path.relative_to(ws).as_posix(), real))
            if len(found) >= MAX_SQL_FILES:
                return found
    return found


def _sql_error(err: duckdb.Error, tables: list[str], skipped: list[str]) -> str:
    message = f"the query failed: {_first_paragraph(err)}"
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


def _first_paragraph(err: Exception) -> str:
    return str(err).split("\n\n")[0].strip()


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


# --- http_get -------------------------------------------------------------------------------

MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}
_ALLOW_HOSTS = "[tools.http_get] allow_hosts in stakeflow.toml"


async def _http_get(raw_url: str, cfg: HttpGetConfig) -> ToolResult:
    """Fetch a URL, checking the host of every hop and reading at most ``max_bytes``."""
    url = _parse_url(raw_url)
    try:
        async with asyncio.timeout(cfg.timeout_s):
            return await _fetch(url, cfg)
    except (TimeoutError, httpx.TimeoutException):
        raise ToolError(f"{raw_url} did not answer within {cfg.timeout_s:g}s: try again later or another URL") from None
    except httpx.HTTPError as e:
        raise ToolError(f"fetching {raw_url} failed: {e or type(e).__name__}") from None


async def _fetch(url: httpx.URL, cfg: HttpGetConfig) -> ToolResult:
    # No proxies from the environment (a proxy would make the address checks moot), and no
    # automatic redirects (every hop is checked). SSL_CERT_FILE is still honoured.
    async with httpx.AsyncClient(
        timeout=cfg.timeout_s, follow_redirects=False, trust_env=False, verify=httpx.create_ssl_context()
    ) as client:
        for _ in range(MAX_REDIRECTS + 1):
            address = await _vet_host(url, cfg.allow_hosts)
            response = await client.send(_pinned_request(client, url, address), stream=True)
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    url = _parse_url(str(url.join(location)))
                    continue
                body, truncated = await _read_capped(response, cfg.max_bytes)
            finally:
                await response.aclose()
            return ToolResult(output=_describe_response(url, response, body, truncated, cfg), truncated=truncated)
    raise ToolError(f"more than {MAX_REDIRECTS} redirects, the last to {url}: fetch the final URL directly")


def _parse_url(raw: str) -> httpx.URL:
    try:
        url = httpx.URL(raw.strip())
    except httpx.InvalidURL as e:
        raise ToolError(f"'{raw}' is not a valid URL ({e})") from None
    if url.scheme not in ("http", "https"):
        scheme = f"the {url.scheme}: scheme" if url.scheme else "no scheme"
        raise ToolError(f"'{raw}' has {scheme}: only http:// and https:// URLs can be fetched")
    if not url.host:
        raise ToolError(f"'{raw}' has no host: e.g. https://example.com/page")
    return url


def _pinned_request(client: httpx.AsyncClient, url: httpx.URL, address: str) -> httpx.Request:
    """A request to the vetted address, so a second DNS answer cannot point it elsewhere."""
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    # identity: max_bytes then bounds what the server sends, not what a compressed body inflates to.
    headers = {"Host": url.netloc.decode("ascii"), "Accept-Encoding": "identity"}
    return client.build_request("GET", url.copy_with(host=address), headers=headers, extensions=extensions)


async def _vet_host(url: httpx.URL, allow_hosts: list[str]) -> str:
    """Check the host against the allowlist and its addresses; return the address to connect to."""
    host = url.host.lower().rstrip(".")
    listed = _listed(host, allow_hosts)
    if allow_hosts and listed is None:
        raise ToolError(f"host '{host}' is not allowed: add it to {_ALLOW_HOSTS} (allowed: {', '.join(allow_hosts)})")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            url.raw_host.decode("ascii"), port, type=socket.SOCK_STREAM
        )
    except (socket.gaierror, UnicodeError) as e:
        raise ToolError(f"cannot resolve host '{host}' ({e}): check the URL") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise ToolError(f"host '{host}' has no address: check the URL")
    if listed != "exact":
        # Wildcards do not vouch for internal addresses: *.example.com may resolve to 10.0.0.5.
        for address in addresses:
            kind = _internal_kind(address)
            if kind:
                raise ToolError(
                    f"host '{host}' resolves to {address}, a {kind} address, and internal addresses are "
                    f"refused: if you trust it, list '{host}' exactly in {_ALLOW_HOSTS}"
                )
    return str(addresses[0])


def _listed(host: str, allow_hosts: list[str]) -> str | None:
    """'exact' or 'wildcard' when an allow_hosts entry matches ``host``, else None."""
    entries = [entry.strip().lower().strip("[]").rstrip(".") for entry in allow_hosts]
    if host in entries:
        return "exact"
    if _is_ip(host):
        return None  # a wildcard names domains, never addresses
    if any(e.startswith("*.") and host.endswith(e[1:]) for e in entries):
        return "wildcard"
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _internal_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    for kind in ("loopback", "private", "link_local", "multicast", "reserved", "unspecified"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if address.is_global else "non-public"


async def _read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]), True  # stop reading: the rest never leaves the socket
    return bytes(body), False


def _describe_response(
    url: httpx.URL, response: httpx.Response, body: bytes, truncated: bool, cfg: HttpGetConfig
) -> str:
    try:
        text = body.decode(response.encoding or "utf-8", errors="replace")
    except LookupError:
        text = body.decode("utf-8", errors="replace")
    head = [
        f"HTTP {response.status_code} {response.reason_phrase}".rstrip(),
        f"url: {url}",
        f"content-type: {response.headers.get('content-type', 'unknown')}",
    ]
    note = ""
    if truncated:
        note = (
            f"\n[truncated: stopped reading after {cfg.max_bytes} bytes; "
            "raise [tools.http_get] max_bytes in stakeflow.toml to read more]"
        )
    return "\n".join(head) + "\n\n" + text + note
