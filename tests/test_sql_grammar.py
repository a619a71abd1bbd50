"""SQL held to the workspace's tables and columns (agents/sql_grammar.py): the pattern, the step call that carries
it, the prompt that does not, and the real embedded model sampling under it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pytest

from stakeflow.activities.model_shapes import build_shape
from stakeflow.agents.sql_grammar import MAX_PATTERN_CHARS, sql_constrained, sql_pattern
from stakeflow.agents.tools import CATALOGUE
from stakeflow.config import PolicyConfig, Settings
from stakeflow.services.runs import build_request, workspace_tables
from tests.agent_script import agent, plan
from tests.agent_script import call as tool_call
from tests.fakes import prompt_text
from tests.support import EXAMPLE_WORKSPACE, make_settings
from tests.test_embedded_model_calls import embedded_server  # noqa: F401
from tests.test_model_activity import call, request
from tests.workflow_support import frontier_fake, open_fake, run_task, settings_for, workspace  # noqa: F401

TABLES = {
    "orders.csv": ["order_id", "customer_id", "kg", "shipped_on"],
    "customers.csv": ["customer_id", "name", "city"],
}


def matches(query: str, tables: dict[str, list[str]] = TABLES) -> bool:
    pattern = sql_pattern(tables)
    assert pattern is not None
    return re.fullmatch(pattern, query) is not None


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM 'orders.csv'",
        "SELECT count(*) FROM 'customers.csv' WHERE city = 'Hull'",
        "SELECT sum(kg) AS total_kg FROM 'orders.csv' WHERE kg >= 2.5 AND shipped_on IS NOT NULL",
        "SELECT c.city, round(avg(o.kg), 2) FROM 'orders.csv' o JOIN 'customers.csv' c USING (customer_id) "
        "GROUP BY c.city ORDER BY avg(o.kg) DESC LIMIT 3",
        "SELECT name FROM 'customers.csv' AS c LEFT JOIN 'orders.csv' AS o ON c.customer_id = o.customer_id "
        "WHERE o.order_id IS NULL",
        "SELECT name FROM 'customers.csv' WHERE customer_id NOT IN (SELECT customer_id FROM 'orders.csv')",
        "SELECT DISTINCT city FROM 'customers.csv' WHERE name LIKE 'B%' OR city IN ('York', 'Leeds')",
        "SELECT monthname(any_value(shipped_on)), sum(kg * 2) FROM 'orders.csv' GROUP BY month(shipped_on)",
        "SELECT * FROM 'orders.csv' WHERE kg = 123456789012345 OR kg = 0.123456 OR kg = -0.5 LIMIT 0",
    ],
)
def test_the_queries_a_question_over_the_tables_needs_fit_the_pattern(query):
    assert matches(query), query


@pytest.mark.parametrize(
    "query",
    [
        "SELECT sum(revenue) FROM 'orders.csv'",  # no such column in any table
        "SELECT region, sum(units) AS units FROM 'sample-orders.csv' GROUP BY region",  # a worked example's file
        'SELECT {"query": "SELECT 1"}',  # JSON inside the SQL
        "",
        "DROP TABLE 'orders.csv'",
        "SELECT * FROM 'orders.csv'; SELECT 1",
        # A number a model can write without end (SmolLM2 wrote digits until the output limit cut its JSON):
        # at most 15 digits and 6 decimals.
        "SELECT * FROM 'orders.csv' WHERE kg = 1" + "3" * 15,
        "SELECT * FROM 'orders.csv' WHERE kg = 1.1234567",
        "SELECT * FROM 'orders.csv' LIMIT 1" + "0" * 15,
    ],
)
def test_names_the_workspace_lacks_and_other_shapes_do_not(query):
    assert not matches(query), query


def test_no_pattern_when_a_name_cannot_be_written_plainly_or_it_would_be_too_long():
    assert sql_pattern({}) is None
    assert sql_pattern({"notes.txt": []}) is None
    assert sql_pattern({"odd.csv": ["unit price"]}) is None  # a column that needs quoting
    assert sql_pattern({"it's.csv": ["a"], "ok.csv": ["b"]}) is not None  # the odd file is left out
    wide = {f"t{n}.csv": [f"column_{n}_{c}" for c in range(30)] for n in range(20)}
    assert sql_pattern(wide) is None and MAX_PATTERN_CHARS < 1_000_000
    # Characters a pattern reads as operators are literal in a file's name.
    assert matches("SELECT a FROM 'q3 (final).csv'", {"q3 (final).csv": ["a"]})
    assert not matches("SELECT a FROM 'q3 final.csv'", {"q3 (final).csv": ["a"]})


def test_the_step_call_carries_the_pattern_and_its_prompt_does_not():
    tables = workspace_tables(EXAMPLE_WORKSPACE)
    assert tables == {
        "regions.csv": ["region", "manager", "target_usd"],
        "sales.csv": ["date", "region", "product", "units", "unit_price"],
    }
    view = sql_constrained(CATALOGUE["sql_query"].view(), tables)
    assert view.args_schema["properties"]["query"]["pattern"] == sql_pattern(tables)
    assert sql_constrained(CATALOGUE["read_file"].view(), tables) == CATALOGUE["read_file"].view()
    shape = build_shape(request("step", tools=[view], prompt="p"), "llamacpp")
    grammar = json.dumps(shape.settings["extra_body"]["response_format"]["schema"])
    assert "unit_price" in grammar and "target_usd" in grammar
    shown = json.dumps(shape.params.output_object.json_schema)  # the schema the prompt shows
    assert "pattern" not in shown and '"query"' in shown


@pytest.mark.embedded
async def test_the_embedded_model_writes_sql_over_the_real_columns(tmp_path: Path, embedded_server: int) -> None:
    """llama.cpp compiles the pattern into its grammar (a pattern it cannot compile kills the server: bounded
    repetitions such as {0,60} did) and SmolLM2's query uses the workspace's names, and DuckDB can plan it."""
    settings = Settings(home=tmp_path, embedded_port=embedded_server)
    tables = workspace_tables(EXAMPLE_WORKSPACE)
    view = sql_constrained(CATALOGUE["sql_query"].view(), tables)
    req = request(
        "step",
        system="You carry out one step of a plan. Call the tool with exact arguments. Answer with JSON only.",
        prompt="Goal: How many units were sold in the West region, according to sales.csv?\n"
        "Workspace files: sales.csv (columns: date, region, product, units, unit_price), "
        "regions.csv (columns: region, manager, target_usd)\nNow step 1/1: Sum the units [sql_query]",
        tools=[view],
        require_tool_call=True,
        max_output_tokens=200,
    )
    result = await call(settings, req)
    [made] = result.action.tool_calls
    query = made.args["query"]
    assert re.fullmatch(sql_pattern(tables) or "", query), query
    con = duckdb.connect()
    try:
        con.execute(f"SET file_search_path = '{EXAMPLE_WORKSPACE}'")
        con.execute(f"EXPLAIN {query}")  # names resolve: no Binder Error
    except duckdb.ParserException:
        pass  # parentheses are not counted by a regular pattern: the tool's parse error goes to the next round
    finally:
        con.close()


def test_the_edge_reads_the_tables(tmp_path):
    """(What "auto" means for sql_grammar: test_arithmetic_grammar's test_auto_means_the_embedded_model.)"""
    embedded = build_request(make_settings(tmp_path), "How many units?", workspace=EXAMPLE_WORKSPACE)
    assert embedded.routing.sql_grammar is True
    assert embedded.workspace_tables == workspace_tables(EXAMPLE_WORKSPACE)


async def test_an_open_step_sends_the_pattern_and_a_frontier_step_does_not(
    client, tmp_path, open_fake, frontier_fake, workspace
):
    query = "SELECT sum(units) FROM 'sales.csv'"
    script = agent(
        plan(("Sum the units", "sql_query"), ("Sum them again", "sql_query", "high")),
        {1: tool_call("sql_query", query=query), 2: tool_call("sql_query", query=query)},
        answer="77 units were sold.",
    )
    open_fake.script(script)
    frontier_fake.script(script)
    settings = settings_for(tmp_path, open_fake, frontier_fake, policy=PolicyConfig(sql_grammar="always"))
    result = await run_task(client, settings, "How many units were sold in sales.csv?", workspace=workspace)

    assert [s.route for s in result.steps] == ["open", "frontier"] and result.answer_supported
    [open_step] = [c.body for c in open_fake.calls if "Now step 1" in prompt_text(c.body)]
    [frontier_step] = [c.body for c in frontier_fake.calls if "Now step 2" in prompt_text(c.body)]
    assert json.dumps(sql_pattern(workspace_tables(workspace))) in json.dumps(open_step["response_format"])
    assert '"pattern"' not in json.dumps(frontier_step)


def test_the_edge_walks_the_workspace_once_and_reads_each_header_once(tmp_path, monkeypatch):
    """A run's input holds the files as prompts show them, every path and every table's columns: one walk (it
    was three, and each CSV header was read twice), with each limit as it was."""
    from stakeflow.services.runs import _start

    ws = tmp_path / "ws"
    ws.mkdir()
    for n in range(250):  # past MAX_LISTED_FILES (40) and MAX_ENUM_FILES (200)
        (ws / f"t{n:03}.csv").write_text("region,units\nWest,1\n")
    walks, headers = [], []
    walk, read = _start._workspace_files, _start._column_names
    monkeypatch.setattr(_start, "_workspace_files", lambda folder: walks.append(folder) or walk(folder))
    monkeypatch.setattr(_start, "_column_names", lambda path: headers.append(path) or read(path))

    req = build_request(make_settings(tmp_path), "How many units?", workspace=ws)
    assert len(walks) == 1 and len(headers) == len(set(headers)) <= 201
    assert req.workspace_files[:2] == [
        "t000.csv (20 bytes; columns: region, units)",
        "t001.csv (20 bytes; columns: region, units)",
    ]
    assert len(req.workspace_files) == 41 and req.workspace_files[-1] == "(more files not listed)"
    assert req.workspace_paths == [] and req.workspace_tables == {}  # past the enum's limit: all or none

    few = tmp_path / "few"
    few.mkdir()
    for n in range(3):
        (few / f"t{n}.csv").write_text("region,units\nWest,1\n")
    (few / "notes.txt").write_text("hello\n")
    req = build_request(make_settings(tmp_path), "How many units?", workspace=few)
    assert req.workspace_paths == ["notes.txt", "t0.csv", "t1.csv", "t2.csv"]
    assert req.workspace_tables == {f"t{n}.csv": ["region", "units"] for n in range(3)}
    assert req.workspace_files == ["notes.txt (6 bytes)"] + [
        f"t{n}.csv (20 bytes; columns: region, units)" for n in range(3)
    ]


async def test_the_embedded_model_cannot_write_a_number_without_end(tmp_path: Path, embedded_server: int) -> None:
    """The step bench/tasks.py's ex-triage-share sent, as it sent it, with today's pattern: SmolLM2 wrote
    ``WHERE region='NordicRegion', 10000000000000032875694313333...`` until the output limit cut its JSON, twice,
    and the run failed. A number now ends by its 15th digit, and the call's output is valid."""
    sent = json.loads(
        (Path(__file__).parent / "fixtures" / "model_requests" / "sql_digits_without_end.json").read_text()
    )
    sent.pop("_about")
    view = sql_constrained(CATALOGUE["sql_query"].view(), workspace_tables(EXAMPLE_WORKSPACE))
    req = request(**{**sent, "tools": [view]})
    settings = Settings(home=tmp_path, embedded_port=embedded_server)
    result = await call(settings, req)
    [made] = result.action.tool_calls
    assert re.fullmatch(sql_pattern(workspace_tables(EXAMPLE_WORKSPACE)) or "", made.args["query"])
