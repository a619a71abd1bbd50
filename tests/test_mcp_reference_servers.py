"""Runs against the official MCP reference servers from npm (tests/mcp_support.py): what their strict argument
validation, their error texts and their tool kinds ask of stakeflow. Real dev server, real workers, real
servers; only the models are scripted."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError

from stakeflow.activities.model_outputs import step_output_model, to_action
from stakeflow.agents.types import ToolSpecView
from stakeflow.services import runs
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer
from tests.mcp_support import install_npm_servers, mcp_settings, npm_server
from tests.support import running_workers

TEST_SERVER = str(Path(__file__).with_name("mcp_test_server.py"))


@pytest.fixture
def open_fake():
    with FakeOpenAIServer(model="qwen-test") as server:
        yield server


def filesystem(root) -> dict:
    return {"command": npm_server("mcp-server-filesystem"), "args": [str(root)]}


def everything(**cfg) -> dict:
    return {"command": npm_server("mcp-server-everything"), **cfg}


def hanging_list(log: Path, **cfg) -> dict:
    """The fastmcp test server, answering initialize and never tools/list (it logs when asked)."""
    log.touch()
    return {"command": sys.executable, "args": [TEST_SERVER, "stdio-hanging-list", str(log)], **cfg}


async def failure_of(client, settings, goal: str, tools: list[str], within_s: float = 90) -> str:
    """The message a run that must fail fails with (it must fail within ``within_s``)."""
    req = runs.build_request(settings, goal, tools=tools)
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req)
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), within_s)
    return failed.value.cause.message


async def test_optional_arguments_the_model_left_out_are_not_sent_as_null(client, tmp_path, open_fake):
    # server-filesystem's read_text_file has optional head/tail; zod refuses them as null.
    root = tmp_path / "files"
    root.mkdir()
    (root / "notes.txt").write_text("line one\nline two\n")
    open_fake.script(
        agent(
            plan(("Read the notes", "fs.read_text_file")),
            {1: call("fs.read_text_file", path=str(root / "notes.txt"))},
            answer="read",
        )
    )
    settings = mcp_settings(tmp_path, open_fake, fs=filesystem(root))
    req = runs.build_request(settings, "Read the notes", workspace=tmp_path, tools=["fs.read_text_file"])
    async with running_workers(client, settings):
        result = await (await runs.start_run(client, settings, req)).result()
    read = result.steps[0].tool_results[0]
    assert read.ok, read.error
    assert read.output == "line one\nline two\n"


def test_a_call_carries_what_the_model_gave_and_the_schemas_defaults_never_null_for_the_rest():
    schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string"},
            "head": {"type": "number"},
            "sortBy": {"type": "string", "enum": ["name", "size"], "default": "name"},
            "edits": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"oldText": {"type": "string"}, "note": {"type": "string"}},
                    "required": ["oldText"],
                },
            },
        },
        "required": ["path"],
    }
    view = ToolSpecView(name="fs.edit", description="edit", risk="side_effect", args_schema=schema)
    model = step_output_model([view])
    given = {"tool": "fs.edit", "args": {"path": "a.txt", "head": None, "edits": [{"oldText": "x"}]}}
    action = to_action(model.model_validate({"tool_calls": [given], "result": "ok"}))
    assert action.tool_calls[0].args == {"path": "a.txt", "sortBy": "name", "edits": [{"oldText": "x"}]}


async def test_a_tool_call_that_hangs_says_when_its_retries_are_spent(client, tmp_path, open_fake):
    hang = call("everything.trigger-long-running-operation", duration=30, steps=2)
    open_fake.script(agent(plan(("Wait", "everything.trigger-long-running-operation")), {1: hang}, answer="-"))
    settings = mcp_settings(tmp_path, open_fake, everything=everything(timeout_s=1))
    message = await failure_of(client, settings, "Wait", ["everything.trigger-long-running-operation"])
    assert "timed out" in message and "no retries left (attempt 5 of 5)" in message, message
    assert "Temporal retries it" not in message


async def test_a_server_that_exits_at_start_is_reported_with_its_stderr(client, tmp_path, open_fake):
    open_fake.script(agent(plan(("List", "fs.list_directory")), {}, answer="-"))
    settings = mcp_settings(tmp_path, open_fake, fs=filesystem(tmp_path / "no-such-dir"))
    message = await failure_of(client, settings, "List", ["fs.*"])
    assert message.startswith("MCP server 'fs' is unavailable: MCP server 'fs' could not be started"), message
    assert "its stderr ends:" in message and "None of the specified directories are accessible" in message


async def test_a_tool_the_server_lacks_or_that_needs_tasks_is_named_not_called_unavailable(client, tmp_path, open_fake):
    open_fake.script(agent(plan(("Research", None)), {}, answer="-"))
    settings = mcp_settings(tmp_path, open_fake, everything=everything())
    tools = ["everything.no_such_tool", "everything.simulate-research-query"]
    message = await failure_of(client, settings, "Research", tools)
    assert message.startswith(
        "MCP server 'everything' has no tool no_such_tool, simulate-research-query (simulate-research-query needs "
        "MCP tasks (taskSupport required), which stakeflow does not run): its tools are echo, "
    ), message
    assert "unavailable" not in message and "simulate-research-query" not in message.split("its tools are")[1]


def test_stakeflow_tools_does_not_offer_tools_that_need_mcp_tasks(tmp_path, open_fake):
    from stakeflow.cli.listing import tools_report

    listing = tools_report(mcp_settings(tmp_path, open_fake, everything=everything()))
    names = {t.name for t in listing.tools}
    assert "everything.echo" in names and "everything.simulate-research-query" not in names
    assert listing.problems == [
        "MCP server everything: not offered: everything.simulate-research-query: needs MCP tasks "
        "(taskSupport required), which stakeflow does not run"
    ]


def test_stakeflow_tools_asks_hanging_servers_at_the_same_time(tmp_path, open_fake):
    from stakeflow.cli.listing import tools_report

    logs = [tmp_path / "slow1.log", tmp_path / "slow2.log"]
    servers = {f"slow{i}": hanging_list(log, timeout_s=4) for i, log in enumerate(logs, start=1)}
    listing = tools_report(mcp_settings(tmp_path, open_fake, **servers))
    asked = [json.loads(log.read_text())["at"] for log in logs]
    # One after the other, the second would be asked after the first's 4 s timeout.
    assert abs(asked[0] - asked[1]) < 2, asked
    assert sorted(p.split(":")[0] for p in listing.problems) == ["MCP server slow1", "MCP server slow2"]
    assert all("answered initialize but not tools/list within 4s" in p for p in listing.problems)


async def test_resource_links_keep_their_uri(client, tmp_path, open_fake):
    links = call("everything.get-resource-links", count=2)
    open_fake.script(agent(plan(("Links", "everything.get-resource-links")), {1: links}, answer="-"))
    settings = mcp_settings(tmp_path, open_fake, everything=everything())
    req = runs.build_request(settings, "Links", tools=["everything.get-resource-links"])
    async with running_workers(client, settings):
        result = await (await runs.start_run(client, settings, req)).result()
    output = result.steps[0].tool_results[0].output
    assert "[resource link: Blob Resource 1 demo://resource/dynamic/blob/1 (Resource 1: plaintext resource)]" in output


async def test_a_server_that_never_lists_its_tools_fails_the_run_within_a_minute_naming_it(client, tmp_path, open_fake):
    open_fake.script(agent(plan(("Think", None)), {}, answer="-"))
    settings = mcp_settings(tmp_path, open_fake, slow=hanging_list(tmp_path / "slow.log"))
    started = time.monotonic()
    message = await failure_of(client, settings, "Think", ["slow.*"], within_s=240)
    elapsed = time.monotonic() - started
    assert "MCP server 'slow' answered initialize but not tools/list within 20s" in message, message
    assert "no worker polls" not in message
    assert elapsed < 60, f"the run failed after {elapsed:.0f}s"


def test_a_stdio_command_that_is_not_installed_is_named_with_the_fix(tmp_path, open_fake):
    from stakeflow.cli.listing import tools_report

    listing = tools_report(mcp_settings(tmp_path, open_fake, ghost={"command": "no-such-mcp-server"}))
    assert listing.problems == [
        "MCP server ghost: MCP server 'ghost' could not be started: command 'no-such-mcp-server' not found: "
        "install it on this worker, or fix [mcp.ghost] command"
    ]


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed (Node 20 brings it)")
def test_a_fresh_checkout_installs_the_npm_servers_itself(tmp_path):
    """The README's test command is all a fresh machine runs: the servers install from the lock file on first
    use, and a broken lock file fails with npm's own words (not a skip)."""
    fresh = tmp_path / "mcp_servers"
    fresh.mkdir()
    for name in ("package.json", "package-lock.json"):
        shutil.copy(Path(__file__).with_name("mcp_servers") / name, fresh / name)
    assert install_npm_servers(fresh) is None
    assert (fresh / "node_modules" / ".bin" / "mcp-server-filesystem").exists()

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "package.json").write_text('{"name": "x", "dependencies": {"left-pad": "1.3.0"}}')
    failure = install_npm_servers(broken)  # no lock file: npm ci refuses
    assert failure and "package-lock" in failure.lower()
