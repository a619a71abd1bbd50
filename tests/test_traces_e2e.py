"""Traces and costs from a real run: a real worker process, the real dev server, the scripted model
servers, the real DuckDB file; read back through the CLI."""

from __future__ import annotations

import json
import signal
import uuid

import pytest
from click.testing import CliRunner

from stakeflow.cli import cli
from stakeflow.services import runs
from tests.agent_script import agent, call, plan
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer
from tests.support import EXAMPLE_WORKSPACE, make_settings, open_endpoint_env, spawn_worker, worker_env, worker_log
from tests.trace_spans import export_priced_runs

SECRET = "sk-ant-trace-SECRET-5d4c3b"
PRICES = """
frontier_model = "claude-sonnet-4-6"

[prices."qwen-test"]
input_per_mtok = 0.2
output_per_mtok = 0.6
"""

OPEN_USAGE = {"prompt_tokens": 1000, "completion_tokens": 200, "cached_tokens": 400}
FRONTIER_USAGE = {
    "input_tokens": 2000,
    "output_tokens": 300,
    "cache_creation_input_tokens": 500,
    "cache_read_input_tokens": 4000,
}


@pytest.fixture
async def traced_run(client, tmp_path, monkeypatch):
    """One run (read on the open model, write on the frontier) on a worker subprocess."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text(PRICES)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "notes.txt").write_text((EXAMPLE_WORKSPACE / "notes.txt").read_text())
    with FakeOpenAIServer(model="qwen-test") as open_fake, FakeAnthropicServer() as frontier_fake:
        script = agent(
            plan(("Read the notes", "read_file"), ("Write the summary", "write_file")),
            {1: call("read_file", path="notes.txt"), 2: call("write_file", path="summary.txt", content="grew 12%")},
            answer="Wrote summary.txt",
        )
        open_fake.script(script)
        frontier_fake.script(script)
        open_fake.usage = OPEN_USAGE
        frontier_fake.usage = FRONTIER_USAGE
        prefix = f"t{uuid.uuid4().hex[:8]}"
        env = worker_env(
            home,
            client,
            prefix,
            **open_endpoint_env(open_fake.url),
            ANTHROPIC_API_KEY=SECRET,
            ANTHROPIC_BASE_URL=frontier_fake.url,
        )
        worker = spawn_worker(env)
        try:
            settings = make_settings(
                tmp_path,
                queue_prefix=prefix,
                open_base_url=open_fake.url,
                open_model="qwen-test",
                anthropic_api_key=SECRET,
                frontier_model="claude-sonnet-4-6",
            )
            req = runs.build_request(
                settings, "Summarise notes.txt into summary.txt", workspace=workspace, auto_approve=True
            )
            handle = await runs.start_run(client, settings, req)
            result = await handle.result()
        finally:
            worker.send_signal(signal.SIGTERM)  # graceful: flushes buffered spans
            worker.wait(60)
        assert worker.returncode == 0, worker_log(env)
    monkeypatch.setenv("STAKEFLOW_HOME", str(home))
    history = await handle.fetch_history()
    return handle.id, result, home, history


def cli_json(*args: str):
    out = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


async def test_span_tree_tokens_costs_and_no_secrets(traced_run):
    run_id, result, home, history = traced_run

    rows = cli_json("trace", run_id)
    tree = ["  " * r["depth"] + r["name"] for r in rows]
    assert tree == [
        "stakeflow.run",
        "  stakeflow.step",
        "    chat qwen-test",
        "  stakeflow.step",
        "    chat qwen-test",
        "    execute_tool read_file",
        "  stakeflow.step",
        "    chat claude-sonnet-4-6",
        "    execute_tool write_file",
        "  stakeflow.step",
        "    chat claude-sonnet-4-6",
    ]
    assert [r["purpose"] for r in rows if r["name"] == "stakeflow.step"] == ["plan", "step", "step", "answer"]
    chats = [r for r in rows if r["name"].startswith("chat ")]
    assert [r["route"] for r in chats] == ["open", "open", "frontier", "frontier"]
    # Tokens as the servers reported them. OTel input includes cache; raw input is the provider's figure:
    # OpenAI-compatible prompt_tokens includes the cached tokens, Anthropic's input_tokens excludes them.
    open_rows, frontier_rows = chats[:2], chats[2:]
    for r in open_rows:
        assert (r["input_tokens"], r["raw_input_tokens"], r["cache_read_tokens"], r["output_tokens"]) == (
            1000,
            1000,
            400,
            200,
        )
    for r in frontier_rows:
        assert (
            r["input_tokens"],
            r["raw_input_tokens"],
            r["cache_read_tokens"],
            r["cache_write_tokens"],
            r["output_tokens"],
        ) == (6500, 2000, 4000, 500, 300)

    # Costs by hand. qwen-test has no cache price: its cache reads are charged at the input price.
    open_call = 600 * 0.2e-6 + 400 * 0.2e-6 + 200 * 0.6e-6  # 0.00032
    frontier_call = 2000 * 3e-6 + 300 * 15e-6 + 500 * 3.75e-6 + 4000 * 0.3e-6  # 0.013575
    open_as_frontier = 600 * 3e-6 + 400 * 0.3e-6 + 200 * 15e-6  # 0.00492
    report = cli_json("costs", "--by", "route")
    assert report["open_usd"] == pytest.approx(2 * open_call, abs=1e-9)
    assert report["frontier_usd"] == pytest.approx(2 * frontier_call, abs=1e-9)
    assert report["total_usd"] == pytest.approx(2 * open_call + 2 * frontier_call, abs=1e-9)
    assert report["frontier_equivalent_usd"] == pytest.approx(2 * open_as_frontier + 2 * frontier_call, abs=1e-9)
    assert report["saved_usd"] == pytest.approx(2 * (open_as_frontier - open_call), abs=1e-9)
    assert report["unpriced_calls"] == 0
    assert result.cost.total_usd == pytest.approx(report["total_usd"], abs=1e-9)
    one = cli_json("costs", "--run", run_id)
    assert one["total_usd"] == pytest.approx(report["total_usd"], abs=1e-9)

    # The run's outcome is in the store.
    [run] = cli_json(
        "sql", f"SELECT status, open_steps, frontier_steps, escalations FROM runs WHERE run_id = '{run_id}'"
    )
    assert run == {"status": "completed", "open_steps": 1, "frontier_steps": 1, "escalations": 0}

    # The key is in no span and no history event.
    dump = json.dumps(cli_json("sql", "SELECT * FROM spans"), default=str)
    assert "notes.txt" in dump or "read_file" in dump  # the rows are really there
    assert SECRET not in dump
    assert SECRET not in history.to_json()
    # Prompt text is not recorded unless STAKEFLOW_TRACE_CONTENT=1.
    assert "gen_ai.input.messages" not in dump


def test_costs_and_sql_bad_input(tmp_path, monkeypatch):
    monkeypatch.setenv("STAKEFLOW_HOME", str(tmp_path))
    runner = CliRunner()
    out = runner.invoke(cli, ["costs", "--by", "colour"])
    assert out.exit_code == 1 and "run, model, route, stakes, tool, day, source" in out.output
    out = runner.invoke(cli, ["sql", "DELETE FROM spans"])
    assert out.exit_code == 1 and "Traceback" not in out.output and "read" in out.output.lower()
    out = runner.invoke(cli, ["costs", "--since", "yesterday"])
    assert out.exit_code == 1 and "30m, 24h, 7d" in out.output
    (tmp_path / "traces.duckdb").write_text("this is not a database")
    out = runner.invoke(cli, ["costs"])
    assert out.exit_code == 1 and "Traceback" not in out.output and "STAKEFLOW_TRACES" in out.output


def test_costs_and_sql_csv_have_lf_line_endings_and_iso_dates(tmp_path):
    export_priced_runs(tmp_path / "home" / "traces.duckdb")  # the test's STAKEFLOW_HOME
    runner = CliRunner()
    # stdout_bytes: click's Result.output turns CRLF into LF, which would hide the line endings.
    out = runner.invoke(cli, ["costs", "--by", "day", "--csv"])
    assert out.exit_code == 0, out.output
    assert out.stdout_bytes == (
        b"day,calls,unpriced_calls,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,cost_usd,"
        b"frontier_equivalent_usd,saved_usd\n"
        b"2026-11-18,3,1,50,0,0,0,0.101,0.1,0.0\n"
        b"2026-11-20,2,0,4000,300,1500,500,0.052,0.08,0.028\n"
    )
    out = runner.invoke(
        cli,
        [
            "sql",
            "SELECT run_id, min(start_time) AS started, CAST(min(start_time) AS DATE) AS day "
            "FROM spans WHERE run_id IS NOT NULL GROUP BY run_id ORDER BY run_id",
            "--csv",
        ],
    )
    assert out.exit_code == 0, out.output
    assert (
        out.stdout_bytes == b"run_id,started,day\nA,2026-11-20T12:00:00,2026-11-20\nB,2026-11-18T12:00:00,2026-11-18\n"
    )


def test_sql_runs_in_the_read_only_sandbox(tmp_path):
    export_priced_runs(tmp_path / "home" / "traces.duckdb")
    runner = CliRunner()
    [settings] = cli_json(
        "sql",
        "SELECT current_setting('autoload_known_extensions') AS autoload, "
        "current_setting('autoinstall_known_extensions') AS autoinstall, "
        "current_setting('enable_external_access') AS external, "
        "(SELECT count(*) FROM spans) AS spans",
    )
    assert settings == {"autoload": False, "autoinstall": False, "external": False, "spans": 11}
    refused = {
        "SELECT * FROM read_csv('/etc/passwd')": "SQL failed",
        "SET autoload_known_extensions = true": "only read-only queries",
        "SELECT 1; SELECT 2": "send exactly one SQL statement (this has 2)",
    }
    for query, reason in refused.items():
        out = runner.invoke(cli, ["sql", query])
        assert (out.exit_code, reason in out.output, "Traceback" in out.output) == (1, True, False), out.output
        assert "root:" not in out.output
