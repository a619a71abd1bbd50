"""Named agents: [agents.<name>] gives a run its role, its tools, its defaults and its own open model."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from stakeflow.cli import cli
from stakeflow.config import AgentConfig
from stakeflow.core.contracts import KEYS
from stakeflow.core.errors import InputError
from stakeflow.services import runs
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer
from tests.support import make_settings, open_endpoint_env, running_workers

ANALYST = AgentConfig(
    instructions="You are the sales analyst of the team. Answer in one sentence.",
    tools=["sql_query", "calc*"],
    stakes="low",
    max_steps=3,
    open_model="qwen-sales-lora",
    description="Answers questions about the sales data",
)


@pytest.fixture
def open_fake():
    with FakeOpenAIServer(model="qwen-test") as server:
        yield server


async def test_a_run_of_an_agent_has_its_role_tools_defaults_and_model(client, tmp_path, open_fake):
    from tests.support import EXAMPLE_WORKSPACE

    open_fake.script(
        agent(
            plan(("Total the units", "sql_query")),
            {1: call("sql_query", query="SELECT sum(units) FROM 'sales.csv'")},
            answer="77 units",
        )
    )
    settings = make_settings(
        tmp_path, open_base_url=open_fake.url, open_model="qwen-test", open_dialect="vllm", agents={"analyst": ANALYST}
    )
    req = runs.build_request(settings, "How many units did we sell?", workspace=EXAMPLE_WORKSPACE, agent="analyst")
    assert sorted(req.tools) == ["calculator", "sql_query"] and req.max_steps == 3 and req.stakes == "low"
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req)
        result = await handle.result()
        attrs = (await handle.describe()).typed_search_attributes
    assert result.answer == "77 units"
    assert attrs.get(KEYS["agent"]) == "analyst"
    for c in open_fake.calls:
        assert c.body["model"] == "qwen-sales-lora"  # the agent's own open model (e.g. a LoRA adapter)
        system = c.body["messages"][0]["content"]
        assert system.startswith("You are the sales analyst of the team.")
    assert "write_file" not in json.dumps(open_fake.calls[0].body["response_format"])  # only its tools


def test_what_the_caller_says_wins_over_the_agent(tmp_path):
    settings = make_settings(tmp_path, agents={"analyst": ANALYST})
    req = runs.build_request(settings, "Go", agent="analyst", stakes="high", tools=["read_file"], max_steps=5)
    assert (req.stakes, req.tools, req.max_steps) == ("high", ["read_file"], 5)


def test_an_unknown_agent_names_the_known_ones(tmp_path):
    settings = make_settings(tmp_path, agents={"analyst": ANALYST})
    with pytest.raises(InputError) as unknown:
        runs.build_request(settings, "Go", agent="nope")
    assert "unknown agent 'nope'" in str(unknown.value) and "agents: analyst" in str(unknown.value)


def test_stakeflow_agents_and_tools_list_them(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text(
        '[agents.analyst]\ndescription = "Answers questions about the sales data"\ntools = ["sql_query", "calc*"]\n'
    )
    monkeypatch.setenv("STAKEFLOW_HOME", str(home))
    listed = CliRunner().invoke(cli, ["agents"], catch_exceptions=False)
    assert listed.exit_code == 0 and "analyst" in listed.output and "tools: sql_query, calc*" in listed.output
    tools = CliRunner().invoke(cli, ["tools", "--agent", "analyst", "--json"], catch_exceptions=False)
    assert tools.exit_code == 0
    assert sorted(t["name"] for t in json.loads(tools.output)["tools"]) == ["calculator", "sql_query"]
    missing = CliRunner().invoke(cli, ["run", "--agent", "nope", "hello"], catch_exceptions=False)
    assert missing.exit_code == 1 and "unknown agent 'nope'" in missing.output


async def test_costs_by_agent_groups_a_named_agents_calls(client, tmp_path, open_fake):
    """The agent's name rides on the run and model-call spans into the store: `costs --by agent` works."""
    import signal
    import uuid

    from stakeflow.traces import TraceStore, cost_report
    from tests.support import EXAMPLE_WORKSPACE, spawn_worker, worker_env, worker_log

    open_fake.script(
        agent(
            plan(("Total the units", "sql_query")),
            {1: call("sql_query", query="SELECT sum(units) FROM 'sales.csv'")},
            answer="77 units",
        )
    )
    home = tmp_path / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text('[prices."qwen-sales-lora"]\ninput_per_mtok = 1\noutput_per_mtok = 2\n')
    prefix = f"t{uuid.uuid4().hex[:8]}"
    env = worker_env(
        home,
        client,
        prefix,
        **open_endpoint_env(open_fake.url),
    )
    worker = spawn_worker(env)
    try:
        settings = make_settings(
            tmp_path,
            queue_prefix=prefix,
            open_base_url=open_fake.url,
            open_model="qwen-test",
            agents={"analyst": ANALYST},
        )
        req = runs.build_request(settings, "Units?", workspace=EXAMPLE_WORKSPACE, agent="analyst")
        await (await runs.start_run(client, settings, req)).result()
        plain = runs.build_request(settings, "What is 2+2?", workspace=EXAMPLE_WORKSPACE, tools=["calculator"])
        open_fake.script(agent(plan(("Add", "calculator")), {1: call("calculator", expression="2+2")}, answer="4"))
        await (await runs.start_run(client, settings, plain)).result()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    assert worker.returncode == 0, worker_log(env)
    report = cost_report(TraceStore(home / "traces.duckdb"), None, "agent")
    by_agent = {r["agent"]: r for r in report["rows"]}
    assert set(by_agent) == {"analyst", "(none)"}
    assert by_agent["analyst"]["calls"] == 3 and by_agent["analyst"]["cost_usd"] > 0
    with TraceStore(home / "traces.duckdb").reader() as con:
        assert con.execute("SELECT count(*) FROM runs WHERE agent = 'analyst'").fetchone() == (1,)
