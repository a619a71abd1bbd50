"""Named agents: [agents.<name>] gives a run its role, its tools, its defaults and its own open model."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from stakeflow import tasks
from stakeflow.catalog_config import AgentConfig
from stakeflow.cli import cli
from stakeflow.core.contracts import KEYS
from stakeflow.core.errors import InputError
from tests.agent_script import agent, call, plan
from tests.conftest import make_settings, running_workers
from tests.fakes import FakeOpenAIServer

ANALYST = AgentConfig(
    instructions="You are the sales analyst of the team. Answer in one sentence.",
    tools=["sql_query", "calc*"], stakes="low", max_steps=3, open_model="qwen-sales-lora",
    description="Answers questions about the sales data",
)


@pytest.fixture
def open_fake():
    with FakeOpenAIServer(model="qwen-test") as server:
        yield server


async def test_a_run_of_an_agent_has_its_role_tools_defaults_and_model(client, tmp_path, open_fake):
    from tests.conftest import EXAMPLE_WORKSPACE

    open_fake.script(agent(plan(("Total the units", "sql_query")),
                           {1: call("sql_query", query="SELECT sum(units) FROM 'sales.csv'")}, answer="77 units"))
    settings = make_settings(tmp_path, open_base_url=open_fake.url, open_model="qwen-test", open_dialect="vllm",
                             agents={"analyst": ANALYST})
    req = tasks.build_request(settings, "How many units did we sell?", workspace=EXAMPLE_WORKSPACE, agent="analyst")
    assert sorted(req.tools) == ["calculator", "sql_query"] and req.max_steps == 3 and req.stakes == "low"
    async with running_workers(client, settings):
        handle = await tasks.start_run(client, settings, req)
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
    req = tasks.build_request(settings, "Go", agent="analyst", stakes="high", tools=["read_file"], max_steps=5)
    assert (req.stakes, req.tools, req.max_steps) == ("high", ["read_file"], 5)


def test_an_unknown_agent_names_the_known_ones(tmp_path):
    settings = make_settings(tmp_path, agents={"analyst": ANALYST})
    with pytest.raises(InputError) as unknown:
        tasks.build_request(settings, "Go", agent="nope")
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
