"""The sql_query tool through run_tool: read-only DuckDB over the workspace's files, and nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from stakeflow.config import SqlQueryConfig, ToolsConfig
from tests.support import REPO
from tests.tool_cases import refused, run, tools_config, ws  # noqa: F401 (ws is a fixture)

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
        f"only read-only queries are allowed (SELECT, WITH, FROM, DESCRIBE, SUMMARIZE, SHOW); this one is {kind}"
    )
    assert sorted(p.name for p in ws.iterdir()) == ["sales.csv"]


async def test_sql_query_refuses_several_statements(ws: Path) -> None:
    error = refused(await run("sql_query", {"query": "SELECT 1; SELECT 2"}, workspace=ws))
    assert error == "send exactly one SQL statement (this has 2)"


async def test_sql_query_cuts_rows_and_says_how_many(ws: Path) -> None:
    result = await run(
        "sql_query", {"query": "SELECT range AS i FROM range(10)"}, workspace=ws, config=tools_config(sql_rows=3)
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
    error = refused(await run("sql_query", {"query": query}, workspace=ws, config=tools_config(sql_timeout=0.3)))
    assert error == (
        "the query ran longer than 0.3s and was stopped: narrow it (WHERE, GROUP BY, LIMIT) "
        "or raise [tools.sql_query] timeout_s in stakeflow.toml"
    )


async def test_sql_query_runs_under_the_resource_caps_and_a_locked_configuration(ws: Path) -> None:
    query = (
        "SELECT current_setting('memory_limit') AS memory, current_setting('threads') AS threads, "
        "current_setting('temp_directory') AS spill, current_setting('enable_external_access') AS external, "
        "current_setting('lock_configuration') AS locked"
    )
    result = await run("sql_query", {"query": query}, workspace=ws)
    # 512MB is DuckDB's 488.2 MiB; an empty temp_directory means nothing spills to disk.
    assert result.output == "memory | threads | spill | external | locked\n488.2 MiB | 1 |  | False | True\n(1 row)"


async def test_sql_query_reads_json_lines_and_names_the_files_it_could_not_read(ws: Path) -> None:
    (ws / "events.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    (ws / "broken.parquet").write_bytes(b"not parquet")
    assert (await run("sql_query", {"query": "SELECT sum(a) AS s FROM events"}, workspace=ws)).output == "s\n3\n(1 row)"
    error = refused(await run("sql_query", {"query": "SELECT * FROM broken"}, workspace=ws))
    assert error.startswith("the query failed: Catalog Error: Table with name broken does not exist!")
    assert error.endswith(
        "Tables: events.jsonl, events. Files DuckDB could not read: broken.parquet (Invalid Input Error: "
        f"File '{(ws / 'broken.parquet').resolve()}' too small to be a Parquet file)"
    )


async def test_sql_query_skips_a_symlink_loop_in_the_workspace(ws: Path) -> None:
    (ws / "a.csv").symlink_to(ws / "b.csv")
    (ws / "b.csv").symlink_to(ws / "a.csv")
    (ws / "sales.csv").write_text(SALES_CSV)
    result = await run("sql_query", {"query": "SELECT count(*) AS n FROM sales"}, workspace=ws)
    assert result.output == "n\n4\n(1 row)"
    error = refused(await run("sql_query", {"query": "SELECT * FROM 'a.csv'"}, workspace=ws))
    assert error.endswith("Tables: sales.csv, sales")


async def test_sql_query_over_the_memory_limit_names_the_cap(ws: Path) -> None:
    config = ToolsConfig(sql_query=SqlQueryConfig(memory_limit="16MB"))
    query = "SELECT count(*) FROM (SELECT DISTINCT range::VARCHAR || repeat('x', 50) FROM range(3000000))"
    error = refused(await run("sql_query", {"query": query}, workspace=ws, config=config))
    assert error.startswith(
        "the query needs more memory than [tools.sql_query] memory_limit (16MB) allows: narrow it "
        "(WHERE, fewer columns, GROUP BY, LIMIT), or raise memory_limit in [tools.sql_query] in stakeflow.toml"
    )
    assert "could not allocate" in error or "failed to" in error  # DuckDB's own words follow


async def test_sql_query_runs_under_the_configured_caps(ws: Path) -> None:
    config = ToolsConfig(sql_query=SqlQueryConfig(memory_limit="64MB", threads=2))
    query = "SELECT current_setting('memory_limit') AS memory, current_setting('threads') AS threads"
    result = await run("sql_query", {"query": query}, workspace=ws, config=config)
    assert result.output == "memory | threads\n61.0 MiB | 2\n(1 row)"


async def test_sql_query_over_the_spill_limit_names_that_cap_and_cleans_up(tmp_path: Path, ws: Path) -> None:
    spill = tmp_path / "spill"
    config = ToolsConfig(sql_query=SqlQueryConfig(memory_limit="16MB", temp_directory=spill, max_temp_size="1MB"))
    query = "SELECT count(*) FROM (SELECT DISTINCT range::VARCHAR || repeat('x', 50) FROM range(3000000))"
    error = refused(await run("sql_query", {"query": query}, workspace=ws, config=config))
    assert error.startswith(
        "the query spilled more than [tools.sql_query] max_temp_size (1MB) to disk: narrow it "
        "(WHERE, fewer columns, GROUP BY, LIMIT), or raise max_temp_size in [tools.sql_query] in stakeflow.toml ("
    )
    assert list(spill.iterdir()) == []  # the query's own spill folder is gone


async def test_sql_query_spills_to_the_temp_directory_when_one_is_set(tmp_path: Path, ws: Path) -> None:
    config = ToolsConfig(sql_query=SqlQueryConfig(temp_directory=tmp_path / "spill"))
    result = await run(
        "sql_query", {"query": "SELECT current_setting('temp_directory') AS t"}, workspace=ws, config=config
    )
    spill = result.output.splitlines()[1]
    assert Path(spill).parent == tmp_path / "spill" and Path(spill).name.startswith("sql-")
    assert not Path(spill).exists()


def test_sql_query_memory_stays_bounded_by_huge_cells(ws: Path) -> None:
    """Issue 21 §12: 5 rows of 200 MB strings cost the worker 3.3 GB when fetched whole; each cell is cut inside
    the query now, so the process stays near DuckDB's memory_limit (512MB) and the model sees a marker."""
    script = (
        "import asyncio, json, resource\n"
        "from tests.tool_cases import run\n"
        "q = \"SELECT range AS n, repeat('x', 200000000) AS s FROM range(5)\"\n"
        f"r = asyncio.run(run('sql_query', {{'query': q}}, workspace={str(ws)!r}))\n"
        "print(json.dumps({'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 'ok': r.ok,"
        " 'output': r.output, 'error': r.error}))\n"
    )
    ran = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    result = json.loads(ran.stdout.splitlines()[-1])
    assert result["rss_mb"] < 1000, f"the worker peaked at {result['rss_mb']:.0f} MB"
    assert result["ok"] and len(result["output"]) < 25_000
    assert "[... cut: 200000000 characters in all]" in result["output"]
    assert result["output"].startswith("n | s\n0 | xxx")


async def test_sql_query_cuts_a_wide_result_by_size_and_says_so(ws: Path) -> None:
    query = "SELECT range AS n, repeat('y', 1500) AS a, repeat('z', 1500) AS b FROM range(100)"
    result = await run("sql_query", {"query": query}, workspace=ws)
    assert result.ok and result.truncated and len(result.output) < 25_000
    lines = result.output.splitlines()
    assert lines[0] == "n | a | b" and lines[1].startswith("0 | yyy")
    assert lines[-1].startswith(f"({len(lines) - 2} of 100 rows shown: the result is over 20000 characters;")


async def test_sql_query_shows_at_most_100_columns(ws: Path) -> None:
    query = "SELECT " + ", ".join(f"{i} AS c{i}" for i in range(105))
    result = await run("sql_query", {"query": query}, workspace=ws)
    header, values, count = result.output.splitlines()
    assert header.split(" | ")[-1] == "c99" and values.split(" | ")[-1] == "99"
    assert count == "(1 row) (5 more columns not shown)" and result.truncated
