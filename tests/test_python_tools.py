"""A team's own Python functions as tools: refused at start-up with the fix when they cannot be tools; routed,
approved and made exactly-once like built-in tools when they can. Real dev server and workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stakeflow.activities.python_tools import PythonToolbox, load
from stakeflow.agents.types import ApprovalRequest, ToolRequest
from stakeflow.core.contracts import APPROVE_UPDATE
from stakeflow.core.errors import ConfigError
from stakeflow.services import runs
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer
from tests.support import make_settings, running_workers
from tests.test_mcp_tools import wait_for_approval

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "spec, message",
    [
        ("tests.team_tools:undeclared", "declares no risk: decorate it with @stakeflow.tool.tool"),
        ("tests.team_tools:untyped", "lacks a type hint for 'text': annotate every argument"),
        ("tests.no_such_module:f", "cannot be imported"),
        ("tests.team_tools", 'write it as "package.module:function"'),
    ],
)
def test_a_function_that_cannot_be_a_tool_is_refused_with_the_fix(spec, message):
    with pytest.raises(ConfigError) as refused:
        load([spec])
    assert message in str(refused.value)


def test_the_worker_refuses_to_start_with_such_a_function(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text('[tools]\npython = ["tests.team_tools:untyped"]\n')
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STAKEFLOW_")},
        "STAKEFLOW_HOME": str(home),
        "STAKEFLOW_TEMPORAL_ADDRESS": "127.0.0.1:1",
        "PYTHONPATH": str(REPO),
    }
    ran = subprocess.run(
        [sys.executable, "-m", "stakeflow", "worker"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert ran.returncode == 1
    assert "lacks a type hint for 'text'" in ran.stderr and "Traceback" not in ran.stderr


def test_a_declared_function_is_described_from_its_signature_and_docstring():
    tools = load(["tests.team_tools:word_count", "tests.team_tools:post_update"])
    count = tools["word_count"].view()
    assert count.description.startswith("Count the words of a text file")
    assert set(count.args_schema["properties"]) == {"path", "min_length"}  # the workspace is injected
    assert count.args_schema["required"] == ["path"]
    post = tools["post_update"].view()
    assert (post.risk, post.open_world, post.idempotent, post.source) == ("side_effect", True, False, "python")


@pytest.fixture
def open_fake():
    with FakeOpenAIServer(model="qwen-test") as server:
        yield server


async def test_python_tools_run_routed_and_approved_like_built_ins(client, tmp_path, open_fake):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("one two three four\n")
    open_fake.script(
        agent(
            plan(("Count the words", "word_count"), ("Post the count", "post_update")),
            {1: call("word_count", path="notes.txt"), 2: call("post_update", message="4 words")},
            answer="4 words, posted",
        )
    )
    settings = make_settings(tmp_path, open_base_url=open_fake.url, open_model="qwen-test", open_dialect="vllm")
    settings.tools.python = ["tests.team_tools:word_count", "tests.team_tools:post_update"]
    req = runs.build_request(settings, "Count the words of notes.txt and post it", workspace=ws)
    assert [t.kind for t in req.toolsets] == ["python"]
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req)
        waiting = await wait_for_approval(handle, 2)
        assert waiting.steps[0].tool_results[0].output == "4"
        assert waiting.steps[1].stakes == "high" and "post_update has side effects" in waiting.steps[1].reason
        await handle.execute_update(APPROVE_UPDATE, ApprovalRequest(step=2, decision="approve", by="tester"))
        result = await handle.result()
    assert json.loads(result.steps[1].tool_results[0].output) == {"posted": "4 words"}


async def test_a_side_effecting_python_tool_acts_once_per_key(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    box = PythonToolbox(load(["tests.team_tools:post_update"]))
    req = ToolRequest(tool="post_update", args={"message": "hi"}, workspace=str(ws), idempotency_key="wf/run/2/0")
    first, again = await box.call(req), await box.call(req)
    assert first.ok and not first.replayed
    assert again.ok and again.replayed and again.output == first.output


async def test_a_parameter_typed_as_a_pydantic_model_receives_that_model():
    box = PythonToolbox(load(["tests.team_tools:order_total"]))
    req = ToolRequest(tool="order_total", args={"order": {"item": "beans", "quantity": 4}})
    result = await box.call(req)
    assert (result.ok, result.output, result.error) == (True, "4 x beans = 10", None)


async def test_a_workspace_file_argument_cannot_leave_the_workspace_even_without_the_enum(client, tmp_path, open_fake):
    """Over 200 files the enum is not offered; '..' and a link out are refused by read_file's own confinement."""
    (tmp_path / "outside.txt").write_text("one two three SECRET\n")
    ws = tmp_path / "ws"
    ws.mkdir()
    for i in range(201):
        (ws / f"f{i:03}.txt").write_text("a b\n")
    (ws / "link.txt").symlink_to(tmp_path / "outside.txt")
    open_fake.script(
        agent(
            plan(("Count the words", "word_count"), ("Count them again", "word_count")),
            {1: call("word_count", path="../outside.txt"), 2: call("word_count", path="link.txt")},
            answer="no",
        )
    )
    settings = make_settings(tmp_path, open_base_url=open_fake.url, open_model="qwen-test", open_dialect="vllm")
    settings.tools.python = ["tests.team_tools:word_count"]
    req = runs.build_request(settings, "Count the words of outside.txt", workspace=ws)
    assert req.workspace_paths == []  # too many files for an enum
    async with running_workers(client, settings):
        result = await (await runs.start_run(client, settings, req)).result()
    [up], [link] = (s.tool_results[0:1] for s in result.steps)
    assert not up.ok and "'../outside.txt' leads outside the workspace" in up.error
    assert not link.ok and "'link.txt' leads outside the workspace" in link.error


async def test_an_outward_symlink_is_not_offered_in_the_enum(client, tmp_path, open_fake):
    (tmp_path / "outside.txt").write_text("one two three SECRET\n")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("one two\n")
    (ws / "link.txt").symlink_to(tmp_path / "outside.txt")
    open_fake.script(
        agent(plan(("Count the words", "word_count")), {1: call("word_count", path="notes.txt")}, answer="2")
    )
    settings = make_settings(tmp_path, open_base_url=open_fake.url, open_model="qwen-test", open_dialect="vllm")
    settings.tools.python = ["tests.team_tools:word_count"]
    req = runs.build_request(settings, "Count the words of notes.txt", workspace=ws)
    assert req.workspace_paths == ["notes.txt"] and not any("link.txt" in f for f in req.workspace_files)
    async with running_workers(client, settings):
        result = await (await runs.start_run(client, settings, req)).result()
    assert result.steps[0].tool_results[0].output == "2"
    offered = json.dumps(open_fake.calls[1].body)
    assert '"path": {"const": "notes.txt"' in offered and "link.txt" not in offered  # an enum of one
