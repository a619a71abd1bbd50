"""The run_tool activity, called directly: every tool, its limits and its refusals.

http_get talks to real HTTP(S) servers on 127.0.0.1 started here; where a test needs a
host name to resolve somewhere chosen, it swaps the event loop's resolver, the one the
activity uses.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import duckdb
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import tools as tools_module
from activities.tools import MAX_OUTPUT_CHARS, ToolActivities
from agents.types import ToolRequest, ToolResult
from stakeflow.errors import TOOL_FAILED
from stakeflow.settings import HttpGetConfig, ReadFileConfig, SqlQueryConfig, ToolsConfig, WriteFileConfig

ALLOW_HOSTS = "[tools.http_get] allow_hosts in stakeflow.toml"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    folder = tmp_path / "ws"
    folder.mkdir()
    return folder


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Path:
    return tmp_path / "ledger"


async def run(
    tool: str,
    args: dict,
    *,
    workspace: Path | str = "",
    key: str = "",
    config: ToolsConfig | None = None,
    ledger_dir: Path | None = None,
) -> ToolResult:
    acts = ToolActivities(config or ToolsConfig(), ledger_dir or Path("/nonexistent-ledger"))
    req = ToolRequest(run_id="run-1", tool=tool, args=args, workspace=str(workspace), idempotency_key=key)
    return await acts.run_tool(req)


def refused(result: ToolResult) -> str:
    """The error of a result that must be a refusal."""
    assert result.ok is False, result
    assert result.output == ""
    assert result.error is not None
    return result.error


# --- dispatch and arguments -----------------------------------------------------------------


async def test_unknown_tool_is_refused_and_names_the_tools() -> None:
    result = await run("rm", {"path": "x"})
    assert result.tool == "rm"
    assert refused(result) == "unknown tool 'rm': the tools are calculator, http_get, read_file, sql_query, write_file"


async def test_missing_argument_is_refused_with_the_expected_arguments() -> None:
    error = refused(await run("write_file", {"path": "a.txt"}))
    assert error == (
        "invalid arguments for write_file: 'content' is missing. "
        "write_file takes: path (string), content (string), append (boolean, optional)"
    )


async def test_extra_argument_is_refused() -> None:
    error = refused(await run("calculator", {"expression": "1+1", "shell": "ls"}))
    assert error == (
        "invalid arguments for calculator: 'shell' is not an argument of calculator. "
        "calculator takes: expression (string)"
    )


async def test_tool_not_enabled_on_the_worker_is_refused(ws: Path) -> None:
    (ws / "a.txt").write_text("secret")
    error = refused(await run("read_file", {"path": "a.txt"}, workspace=ws, config=ToolsConfig(enabled=["calculator"])))
    assert error == "tool 'read_file' is not enabled on this worker: add it to [tools] enabled in stakeflow.toml"


async def test_runs_as_a_temporal_activity_and_times_itself() -> None:
    acts = ToolActivities(ToolsConfig(), Path("/nonexistent-ledger"))
    req = ToolRequest(tool="calculator", args={"expression": "6*7"})
    result = await ActivityEnvironment().run(acts.run_tool, req)
    assert (result.tool, result.ok, result.output, result.error) == ("calculator", True, "42", None)
    assert result.duration_ms > 0


async def test_output_is_cut_to_the_history_limit(ws: Path) -> None:
    (ws / "big.txt").write_text("ab" * MAX_OUTPUT_CHARS)
    result = await run("read_file", {"path": "big.txt"}, workspace=ws, config=_config(read_file=10 * MAX_OUTPUT_CHARS))
    assert result.ok and result.truncated
    assert result.output == (
        "ab" * (MAX_OUTPUT_CHARS // 2)
        + f"\n[output truncated: showing the first {MAX_OUTPUT_CHARS} of {2 * MAX_OUTPUT_CHARS} characters]"
    )


# --- calculator -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("(3+4)*2", "14"),
        ("0.1 + 0.2", "0.3"),
        ("7/2", "3.5"),
        ("-7/4", "-1.75"),
        ("1/3", "1/3 (≈ 0.33333333333333333)"),
        ("2**100", str(2**100)),
        ("-2**2", "-4"),
        ("+5 - -3", "8"),
        ("7 // 2", "3"),
        ("-7 % 3", "2"),
        ("2 ** -2", "0.25"),
        ("2 ** 0.5", "1.4142135623730951"),
        ("1_000 * 3", "3000"),
        ("2**10000", str(2**10000)),
    ],
)
async def test_calculator_is_exact(expression: str, expected: str) -> None:
    result = await run("calculator", {"expression": expression})
    assert (result.ok, result.output, result.error) == (True, expected, None)


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        (
            "__import__('os').system('touch /tmp/pwned')",
            (
                "'__import__('os').system('touch /tmp/pwned')' is not allowed: "
                "the calculator takes numbers, + - * / // % ** and parentheses only"
            ),
        ),
        ("x + 1", "'x' is not allowed: the calculator takes numbers, + - * / // % ** and parentheses only"),
        (
            "(1).__class__",
            "'(1).__class__' is not allowed: the calculator takes numbers, + - * / // % ** and parentheses only",
        ),
        ("1/0", "division by zero in '1/0'"),
        ("5 % 0", "division by zero in '5 % 0'"),
        ("2**100000", "the exponent 100000 is over the limit of 10000"),
        ("9**9**9", "the exponent 387420489 is over the limit of 10000"),
        ("(2**9999)**9999", "the power is too large to compute exactly: rescale the numbers"),
        ("(-8)**(1/3)", "a negative number to a fractional power has no real value"),
        ("1 +", "'1 +' is not an arithmetic expression (invalid syntax): e.g. (3+4)*2"),
    ],
)
async def test_calculator_refuses(expression: str, error: str) -> None:
    assert refused(await run("calculator", {"expression": expression})) == error


async def test_calculator_never_evaluates_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    result = await run("calculator", {"expression": f"open({str(marker)!r}, 'w')"})
    assert result.ok is False
    assert not marker.exists()


# --- read_file ------------------------------------------------------------------------------


def _config(
    *,
    read_file: int | None = None,
    write_file: int | None = None,
    sql_rows: int | None = None,
    sql_timeout: float | None = None,
    http: HttpGetConfig | None = None,
) -> ToolsConfig:
    config = ToolsConfig()
    if read_file is not None:
        config.read_file = ReadFileConfig(max_bytes=read_file)
    if write_file is not None:
        config.write_file = WriteFileConfig(max_bytes=write_file)
    if sql_rows is not None or sql_timeout is not None:
        config.sql_query = SqlQueryConfig(max_rows=sql_rows or 200, timeout_s=sql_timeout or 20.0)
    if http is not None:
        config.http_get = http
    return config


async def test_read_file(ws: Path) -> None:
    (ws / "notes").mkdir()
    (ws / "notes" / "a.txt").write_text("héllo\nworld\n", encoding="utf-8")
    result = await run("read_file", {"path": "notes/a.txt"}, workspace=ws)
    assert (result.ok, result.output, result.truncated) == (True, "héllo\nworld\n", False)


async def test_read_file_truncates_at_max_bytes(ws: Path) -> None:
    (ws / "a.txt").write_text("0123456789")
    result = await run("read_file", {"path": "a.txt"}, workspace=ws, config=_config(read_file=4))
    assert result.ok and result.truncated
    assert result.output == (
        "0123\n[truncated: showing the first 4 of 10 bytes; raise [tools.read_file] max_bytes in stakeflow.toml "
        "to read more]"
    )


async def test_read_file_refuses_dot_dot_escape(tmp_path: Path, ws: Path) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    error = refused(await run("read_file", {"path": "../secret.txt"}, workspace=ws))
    assert error == (
        "'../secret.txt' leads outside the workspace (through '..' or a symbolic link): give a path inside the workspace"
    )


async def test_read_file_refuses_absolute_path(ws: Path) -> None:
    (ws / "a.txt").write_text("inside")
    for path in [str(ws / "a.txt"), "/etc/passwd"]:
        error = refused(await run("read_file", {"path": path}, workspace=ws))
        assert error == f"'{path}' is an absolute path: give a path relative to the workspace, e.g. notes.txt"


async def test_read_file_refuses_symlink_escapes(tmp_path: Path, ws: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("secret")
    (ws / "link.txt").symlink_to(tmp_path / "outside" / "secret.txt")
    (ws / "linked_dir").symlink_to(tmp_path / "outside")
    for path in ["link.txt", "linked_dir/secret.txt"]:
        error = refused(await run("read_file", {"path": path}, workspace=ws))
        assert error.startswith(f"'{path}' leads outside the workspace")


async def test_read_file_follows_symlinks_that_stay_inside(ws: Path) -> None:
    (ws / "real.txt").write_text("real")
    (ws / "alias.txt").symlink_to(ws / "real.txt")
    assert (await run("read_file", {"path": "alias.txt"}, workspace=ws)).output == "real"


async def test_read_file_missing_file_lists_the_folder(ws: Path) -> None:
    (ws / "a.txt").write_text("a")
    (ws / "sub").mkdir()
    error = refused(await run("read_file", {"path": "b.txt"}, workspace=ws))
    assert error == "there is no file 'b.txt' in the workspace (that folder holds: a.txt, sub/)"


async def test_file_tools_need_a_workspace(tmp_path: Path) -> None:
    error = refused(await run("read_file", {"path": "a.txt"}, workspace=""))
    assert error == "this run has no workspace folder, so file tools cannot run: start the run with a workspace"
    missing = tmp_path / "nope"
    error = refused(await run("sql_query", {"query": "SELECT 1"}, workspace=missing))
    assert error == f"the workspace {missing} is not a folder: create it (mkdir -p {missing}) or use another workspace"


# --- write_file -----------------------------------------------------------------------------


def _ledger_entry(ledger_dir: Path, key: str) -> dict:
    return json.loads((ledger_dir / f"{hashlib.sha256(key.encode()).hexdigest()}.json").read_text())


async def test_write_file_creates_parents_and_records_the_ledger(ws: Path, ledger_dir: Path) -> None:
    result = await run(
        "write_file",
        {"path": "out/report.md", "content": "# Report\n"},
        workspace=ws,
        key="run-1/2/0",
        ledger_dir=ledger_dir,
    )
    assert (result.ok, result.output, result.replayed) == (True, "wrote 9 bytes to out/report.md", False)
    assert (ws / "out" / "report.md").read_text() == "# Report\n"
    entry = _ledger_entry(ledger_dir, "run-1/2/0")
    assert (entry["key"], entry["tool"], entry["path"], entry["bytes"], entry["status"]) == (
        "run-1/2/0",
        "write_file",
        str((ws / "out" / "report.md").resolve()),
        9,
        "done",
    )
    assert entry["result"]["output"] == "wrote 9 bytes to out/report.md"
    assert [p.name for p in (ws / "out").iterdir()] == ["report.md"]  # no temporary file left behind


async def test_write_file_same_key_writes_once(ws: Path, ledger_dir: Path) -> None:
    args = {"path": "a.txt", "content": "first"}
    first = await run("write_file", args, workspace=ws, key="k1", ledger_dir=ledger_dir)
    (ws / "a.txt").write_text("changed by someone else")
    second = await run("write_file", args, workspace=ws, key="k1", ledger_dir=ledger_dir)
    assert (first.replayed, second.replayed) == (False, True)
    assert second.output == first.output == "wrote 5 bytes to a.txt"
    assert (ws / "a.txt").read_text() == "changed by someone else"  # the retry did not write again


async def test_write_file_append_same_key_appends_once(ws: Path, ledger_dir: Path) -> None:
    (ws / "log.txt").write_text("start\n")
    args = {"path": "log.txt", "content": "line\n", "append": True}
    first = await run("write_file", args, workspace=ws, key="a1", ledger_dir=ledger_dir)
    second = await run("write_file", args, workspace=ws, key="a1", ledger_dir=ledger_dir)
    third = await run("write_file", args, workspace=ws, key="a2", ledger_dir=ledger_dir)
    assert first.output == "appended 5 bytes to log.txt (now 11 bytes)"
    assert (first.replayed, second.replayed, third.replayed) == (False, True, False)
    assert (ws / "log.txt").read_text() == "start\nline\nline\n"


class Crash(Exception):
    """The worker dies here."""


@pytest.mark.parametrize("crash_after", ["pending", "done"])
async def test_write_file_append_is_exactly_once_across_a_crash(
    ws: Path, ledger_dir: Path, monkeypatch: pytest.MonkeyPatch, crash_after: str
) -> None:
    # crash_after="pending": the worker dies after recording the intent, before appending.
    # crash_after="done": it dies after appending, while recording completion.
    (ws / "log.txt").write_text("start\n")
    args = {"path": "log.txt", "content": "line\n", "append": True}
    real_record = tools_module._Ledger.record

    def crashing_record(self: tools_module._Ledger, entry: dict) -> None:
        if entry["status"] == "done" and crash_after == "done":
            raise Crash()
        real_record(self, entry)
        if entry["status"] == "pending" and crash_after == "pending":
            raise Crash()

    with monkeypatch.context() as patch:
        patch.setattr(tools_module._Ledger, "record", crashing_record)
        with pytest.raises(Crash):
            await run("write_file", args, workspace=ws, key="a1", ledger_dir=ledger_dir)
    expected_after_crash = "start\n" if crash_after == "pending" else "start\nline\n"
    assert (ws / "log.txt").read_text() == expected_after_crash
    assert _ledger_entry(ledger_dir, "a1")["status"] == "pending"

    retry = await run("write_file", args, workspace=ws, key="a1", ledger_dir=ledger_dir)
    assert (retry.ok, retry.output) == (True, "appended 5 bytes to log.txt (now 11 bytes)")
    assert (ws / "log.txt").read_text() == "start\nline\n"
    assert _ledger_entry(ledger_dir, "a1")["status"] == "done"


async def test_write_file_replays_a_crafted_pending_entry(ws: Path, ledger_dir: Path) -> None:
    # The ledger as a crash between append and completion leaves it, written by hand.
    content = "line\n"
    (ws / "log.txt").write_text("start\n" + content)
    ledger_dir.mkdir()
    entry = {
        "key": "k",
        "tool": "write_file",
        "path": str((ws / "log.txt").resolve()),
        "append": True,
        "bytes": 5,
        "sha256": hashlib.sha256(content.encode()).hexdigest(),
        "status": "pending",
        "original_size": 6,
    }
    (ledger_dir / f"{hashlib.sha256(b'k').hexdigest()}.json").write_text(json.dumps(entry))
    args = {"path": "log.txt", "content": content, "append": True}
    assert (await run("write_file", args, workspace=ws, key="k", ledger_dir=ledger_dir)).ok
    assert (ws / "log.txt").read_text() == "start\nline\n"


async def test_write_file_key_reused_for_another_write_is_refused(ws: Path, ledger_dir: Path) -> None:
    await run("write_file", {"path": "a.txt", "content": "one"}, workspace=ws, key="k", ledger_dir=ledger_dir)
    error = refused(
        await run("write_file", {"path": "a.txt", "content": "two"}, workspace=ws, key="k", ledger_dir=ledger_dir)
    )
    assert error == (
        f"idempotency key 'k' was already used for a different write ({(ws / 'a.txt').resolve()}): "
        "every write needs its own key"
    )
    assert (ws / "a.txt").read_text() == "one"


async def test_write_file_needs_an_idempotency_key(ws: Path, ledger_dir: Path) -> None:
    error = refused(await run("write_file", {"path": "a.txt", "content": "x"}, workspace=ws, ledger_dir=ledger_dir))
    assert error == (
        "write_file needs an idempotency key so a retry cannot write twice: "
        "the workflow must set ToolRequest.idempotency_key"
    )
    assert not (ws / "a.txt").exists()


async def test_write_file_refuses_escapes(tmp_path: Path, ws: Path, ledger_dir: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws / "linked_dir").symlink_to(outside)
    (ws / "link.txt").symlink_to(outside / "target.txt")
    for n, path in enumerate(["../evil.txt", "linked_dir/evil.txt", "link.txt", "linked_dir/new/evil.txt"]):
        result = await run(
            "write_file", {"path": path, "content": "x"}, workspace=ws, key=f"k{n}", ledger_dir=ledger_dir
        )
        assert refused(result).startswith(f"'{path}' leads outside the workspace")
    error = refused(await run("write_file", {"path": "/tmp/evil.txt", "content": "x"}, workspace=ws, key="abs"))
    assert error == "'/tmp/evil.txt' is an absolute path: give a path relative to the workspace, e.g. notes.txt"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["link.txt", "linked_dir", "outside", "ws"]


async def test_write_file_refuses_content_over_the_limit(ws: Path, ledger_dir: Path) -> None:
    result = await run(
        "write_file",
        {"path": "a.txt", "content": "é" * 3},
        workspace=ws,
        key="k",
        config=_config(write_file=5),
        ledger_dir=ledger_dir,
    )
    assert refused(result) == (
        "content is 6 bytes, over the 5-byte limit: write less, or raise [tools.write_file] max_bytes in stakeflow.toml"
    )


async def test_write_file_unusable_ledger_is_a_non_retryable_failure(tmp_path: Path, ws: Path) -> None:
    not_a_folder = tmp_path / "ledger-file"
    not_a_folder.write_text("")
    with pytest.raises(ApplicationError) as caught:
        await run("write_file", {"path": "a.txt", "content": "x"}, workspace=ws, key="k", ledger_dir=not_a_folder)
    assert caught.value.type == TOOL_FAILED
    assert caught.value.non_retryable is True
    assert str(not_a_folder) in caught.value.message


# --- sql_query ------------------------------------------------------------------------------

SALES_CSV = "region,amount\neast,10\nwest,5.5\neast,7.25\nnorth,3\n"


async def test_sql_query_aggregates_a_csv(ws: Path) -> None:
    (ws / "sales.csv").write_text(SALES_CSV)
    query = "SELECT region, sum(amount) AS total, count(*) AS n FROM 'sales.csv' GROUP BY region ORDER BY region"
    result = await run("sql_query", {"query": query}, workspace=ws)
    assert (result.ok, result.truncated, result.error) == (True, False, None)
    assert result.output == "region | total | n\neast | 17.25 | 2\nnorth | 3.0 | 1\nwest | 5.5 | 1\n(3 rows)"
    by_stem = await run("sql_query", {"query": "SELECT max(amount) AS top FROM sales"}, workspace=ws)
    assert by_stem.output == "top\n10.0\n(1 row)"


async def test_sql_query_reads_parquet_in_a_subfolder(ws: Path) -> None:
    (ws / "data").mkdir()
    target = ws / "data" / "nums.parquet"
    with duckdb.connect() as con:
        con.execute(f"COPY (SELECT range AS id, range * 2 AS doubled FROM range(5)) TO '{target}' (FORMAT parquet)")
    result = await run("sql_query", {"query": "SELECT sum(doubled) AS s, max(id) AS m FROM nums"}, workspace=ws)
    assert result.output == "s | m\n20 | 4\n(1 row)"
    result = await run("sql_query", {"query": "FROM 'data/nums.parquet' WHERE id = 3"}, workspace=ws)
    assert result.output == "id | doubled\n3 | 6\n(1 row)"


async def test_sql_query_describe_and_show(ws: Path) -> None:
    (ws / "sales.csv").write_text(SALES_CSV)
    result = await run("sql_query", {"query": "SELECT column_name, column_type FROM (DESCRIBE sales)"}, workspace=ws)
    assert result.output == "column_name | column_type\nregion | VARCHAR\namount | DOUBLE\n(2 rows)"
    result = await run("sql_query", {"query": "SHOW TABLES"}, workspace=ws)
    assert result.output == "name\nsales\nsales.csv\n(2 rows)"


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        ("CREATE TABLE t AS SELECT 1", "CREATE"),
        ("INSERT INTO sales VALUES ('x', 1)", "INSERT"),
        ("COPY (SELECT * FROM sales) TO 'copy.csv'", "COPY"),
        ("ATTACH 'other.duckdb'", "ATTACH"),
        ("INSTALL httpfs", "LOAD"),
        ("LOAD httpfs", "LOAD"),
        ("PRAGMA version", "PRAGMA"),
        ("SET enable_external_access = true", "SET"),
        ("CALL pragma_version()", "CALL"),
    ],
)
async def test_sql_query_refuses_anything_but_a_read(ws: Path, query: str, kind: str) -> None:
    (ws / "sales.csv").write_text(SALES_CSV)
    error = refused(await run("sql_query", {"query": query}, workspace=ws))
    assert error == (
        "only read-only queries are allowed (SELECT, WITH, FROM, DESCRIBE, SUMMARIZE, SHOW); "
        f"this is a {kind} statement"
    )
    assert sorted(p.name for p in ws.iterdir()) == ["sales.csv"]


async def test_sql_query_refuses_several_statements(ws: Path) -> None:
    error = refused(await run("sql_query", {"query": "SELECT 1; SELECT 2"}, workspace=ws))
    assert error == "send exactly one SQL statement (this has 2)"


async def test_sql_query_cuts_rows_and_says_how_many(ws: Path) -> None:
    result = await run(
        "sql_query", {"query": "SELECT range AS i FROM range(10)"}, workspace=ws, config=_config(sql_rows=3)
    )
    assert result.ok and result.truncated
    assert result.output == (
        "i\n0\n1\n2\n(3 of 10 rows shown, 7 cut: add WHERE, GROUP BY or LIMIT, "
        "or raise [tools.sql_query] max_rows in stakeflow.toml)"
    )


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_csv('../outside.csv')",
        "SELECT * FROM 'leak.csv'",
        "SELECT * FROM leak",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM 'https://example.com/data.csv'",
    ],
)
async def test_sql_query_cannot_reach_files_outside_the_workspace(tmp_path: Path, ws: Path, query: str) -> None:
    (tmp_path / "outside.csv").write_text("secret\nTOPSECRET\n")
    (ws / "leak.csv").symlink_to(tmp_path / "outside.csv")
    (ws / "sales.csv").write_text(SALES_CSV)
    error = refused(await run("sql_query", {"query": query}, workspace=ws))
    assert error.startswith("the query failed: ")
    assert error.endswith(
        ". Only the workspace's data files can be queried, by name (FROM sales or FROM 'sales.csv'); "
        "file functions such as read_csv cannot reach anything else. Tables: sales.csv, sales"
    )
    assert "TOPSECRET" not in error and "root:" not in error


async def test_sql_query_stops_at_the_timeout(ws: Path) -> None:
    query = "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b"
    error = refused(await run("sql_query", {"query": query}, workspace=ws, config=_config(sql_timeout=0.3)))
    assert error == (
        "the query ran longer than 0.3s and was stopped: narrow it (WHERE, GROUP BY, LIMIT) "
        "or raise [tools.sql_query] timeout_s in stakeflow.toml"
    )


# --- http_get -------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the name http.server calls
        url = urlparse(self.path)
        if url.path == "/hello":
            self._send(200, b"hello world")
        elif url.path == "/big":
            self._send(200, b"x" * 10_000)
        elif url.path == "/host":
            self._send(200, self.headers["Host"].encode())
        elif url.path in ("/redirect", "/loop"):
            self.send_response(302)
            self.send_header("Location", "/loop" if url.path == "/loop" else parse_qs(url.query)["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"not found")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(server: ThreadingHTTPServer) -> Iterator[int]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    yield from _serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))


@pytest.fixture
async def resolve_to(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Make chosen host names resolve to chosen addresses, for the activity's resolver."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    names: dict[str, str] = {}

    async def getaddrinfo(host, port, *args, **kwargs):
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (names[host], port))]
        return await real(host, port, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return names


def _http(*allow_hosts: str, max_bytes: int = 1_000_000) -> ToolsConfig:
    return _config(http=HttpGetConfig(allow_hosts=list(allow_hosts), max_bytes=max_bytes, timeout_s=5))


async def test_http_get_refuses_loopback_by_default(port: int) -> None:
    error = refused(await run("http_get", {"url": f"http://127.0.0.1:{port}/hello"}, config=_http()))
    assert error == (
        "host '127.0.0.1' resolves to 127.0.0.1, a loopback address, and internal addresses are refused: "
        f"if you trust it, list '127.0.0.1' exactly in {ALLOW_HOSTS}"
    )


async def test_http_get_refuses_ipv4_mapped_loopback(port: int) -> None:
    error = refused(await run("http_get", {"url": f"http://[::ffff:127.0.0.1]:{port}/hello"}, config=_http()))
    assert error.startswith("host '::ffff:127.0.0.1' resolves to ::ffff:7f00:1, a loopback address")


async def test_http_get_fetches_an_allowlisted_host(port: int) -> None:
    result = await run("http_get", {"url": f"http://127.0.0.1:{port}/hello"}, config=_http("127.0.0.1"))
    assert (result.ok, result.truncated) == (True, False)
    assert result.output == (
        f"HTTP 200 OK\nurl: http://127.0.0.1:{port}/hello\ncontent-type: text/plain; charset=utf-8\n\nhello world"
    )


async def test_http_get_reports_an_error_status(port: int) -> None:
    result = await run("http_get", {"url": f"http://127.0.0.1:{port}/missing"}, config=_http("127.0.0.1"))
    assert result.ok
    assert result.output.startswith("HTTP 404 Not Found\n") and result.output.endswith("\n\nnot found")


async def test_http_get_stops_reading_at_max_bytes(port: int) -> None:
    result = await run("http_get", {"url": f"http://127.0.0.1:{port}/big"}, config=_http("127.0.0.1", max_bytes=100))
    assert result.ok and result.truncated
    assert result.output == (
        f"HTTP 200 OK\nurl: http://127.0.0.1:{port}/big\ncontent-type: text/plain; charset=utf-8\n\n"
        + "x" * 100
        + "\n[truncated: stopped reading after 100 bytes; raise [tools.http_get] max_bytes in stakeflow.toml to read more]"
    )


async def test_http_get_follows_a_redirect_to_an_allowed_host(port: int) -> None:
    url = f"http://127.0.0.1:{port}/redirect?to=/hello"
    result = await run("http_get", {"url": url}, config=_http("127.0.0.1"))
    assert result.output.startswith(f"HTTP 200 OK\nurl: http://127.0.0.1:{port}/hello\n")
    assert result.output.endswith("\n\nhello world")


async def test_http_get_checks_every_redirect_hop(port: int) -> None:
    # localhost is loopback too, but only 127.0.0.1 is listed.
    url = f"http://127.0.0.1:{port}/redirect?to=http://localhost:{port}/hello"
    error = refused(await run("http_get", {"url": url}, config=_http("127.0.0.1")))
    assert error == f"host 'localhost' is not allowed: add it to {ALLOW_HOSTS} (allowed: 127.0.0.1)"


async def test_http_get_checks_the_address_of_a_wildcard_hop(port: int, resolve_to: dict[str, str]) -> None:
    resolve_to["evil.example.com"] = "127.0.0.1"
    url = f"http://127.0.0.1:{port}/redirect?to=http://evil.example.com:{port}/hello"
    error = refused(await run("http_get", {"url": url}, config=_http("127.0.0.1", "*.example.com")))
    assert error == (
        "host 'evil.example.com' resolves to 127.0.0.1, a loopback address, and internal addresses are refused: "
        f"if you trust it, list 'evil.example.com' exactly in {ALLOW_HOSTS}"
    )


async def test_http_get_wildcard_does_not_vouch_for_private_addresses(resolve_to: dict[str, str]) -> None:
    resolve_to["intranet.example.com"] = "10.0.0.5"
    error = refused(await run("http_get", {"url": "http://intranet.example.com/"}, config=_http("*.example.com")))
    assert error.startswith("host 'intranet.example.com' resolves to 10.0.0.5, a private address")


async def test_http_get_connects_to_the_address_it_checked(port: int, resolve_to: dict[str, str]) -> None:
    # httpx cannot resolve pinned.test itself: the response proves it went to the vetted address,
    # with the original Host header.
    resolve_to["pinned.test"] = "127.0.0.1"
    result = await run("http_get", {"url": f"http://pinned.test:{port}/host"}, config=_http("pinned.test"))
    assert result.output.endswith(f"\n\npinned.test:{port}")


async def test_http_get_refuses_a_host_not_on_the_allowlist(port: int) -> None:
    error = refused(await run("http_get", {"url": f"http://127.0.0.1:{port}/hello"}, config=_http("example.com")))
    assert error == f"host '127.0.0.1' is not allowed: add it to {ALLOW_HOSTS} (allowed: example.com)"
    error = refused(await run("http_get", {"url": "https://badexample.com/"}, config=_http("*.example.com")))
    assert error == f"host 'badexample.com' is not allowed: add it to {ALLOW_HOSTS} (allowed: *.example.com)"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        (
            "file:///etc/passwd",
            "'file:///etc/passwd' has the file: scheme: only http:// and https:// URLs can be fetched",
        ),
        (
            "ftp://example.com/x",
            "'ftp://example.com/x' has the ftp: scheme: only http:// and https:// URLs can be fetched",
        ),
        ("example.com/page", "'example.com/page' has no scheme: only http:// and https:// URLs can be fetched"),
    ],
)
async def test_http_get_refuses_other_schemes(url: str, error: str) -> None:
    assert refused(await run("http_get", {"url": url}, config=_http())) == error


async def test_http_get_gives_up_after_five_redirects(port: int) -> None:
    error = refused(await run("http_get", {"url": f"http://127.0.0.1:{port}/loop"}, config=_http("127.0.0.1")))
    assert error == f"more than 5 redirects, the last to http://127.0.0.1:{port}/loop: fetch the final URL directly"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """An HTTPS server on 127.0.0.1 whose certificate names only secure.test."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=secure.test",
            "-addext",
            "subjectAltName=DNS:secure.test",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    for port in _serve(server):
        yield port, cert


async def test_https_pins_the_address_and_verifies_the_name(
    tls: tuple[int, Path], resolve_to: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, cert = tls
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    resolve_to["secure.test"] = "127.0.0.1"
    result = await run("http_get", {"url": f"https://secure.test:{port}/hello"}, config=_http("secure.test"))
    assert (result.ok, result.error) == (True, None)
    assert result.output.endswith("\n\nhello world")


async def test_https_refuses_a_certificate_for_another_name(
    tls: tuple[int, Path], resolve_to: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, cert = tls
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    resolve_to["other.test"] = "127.0.0.1"
    error = refused(await run("http_get", {"url": f"https://other.test:{port}/hello"}, config=_http("other.test")))
    assert error.startswith(f"fetching https://other.test:{port}/hello failed: ")
    assert "certificate is not valid for 'other.test'" in error
