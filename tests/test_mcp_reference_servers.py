"""Runs against the official MCP reference servers from npm (tests/mcp_support.py): what their strict argument
validation, their error texts and their tool kinds ask of stakeflow. Real dev server, real workers, real
servers; only the models are scripted."""

from __future__ import annotations

import pytest

from stakeflow import tasks
from stakeflow.activities.model_outputs import step_output_model, to_action
from stakeflow.agents.types import ToolSpecView
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer
from tests.mcp_support import mcp_settings, npm_server
from tests.support import running_workers


@pytest.fixture
def open_fake():
    with FakeOpenAIServer(model="qwen-test") as server:
        yield server


def filesystem(root) -> dict:
    return {"command": npm_server("mcp-server-filesystem"), "args": [str(root)]}


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
    req = tasks.build_request(settings, "Read the notes", workspace=tmp_path, tools=["fs.read_text_file"])
    async with running_workers(client, settings):
        result = await (await tasks.start_run(client, settings, req)).result()
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
