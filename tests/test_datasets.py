"""Captured calls become fine-tuning data: real runs (dev server, workers, scripted models), then
`stakeflow dataset export`, its lines validated against OpenAI's chat fine-tuning format and TRL's conversational
formats, the split stable as data grows, private rows absent by default, rejected and failed steps left out."""

from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner

from stakeflow.agents.types import ApprovalRequest, ToolCall
from stakeflow.cli import cli
from stakeflow.core.contracts import APPROVE_UPDATE
from stakeflow.services import runs
from tests.agent_script import agent, call, plan
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer
from tests.support import make_settings, running_workers
from tests.test_mcp_tools import wait_for_approval

WRITE = plan(("Read the notes", "read_file"), ("Write the summary", "write_file", "high"))
STEPS = {1: call("read_file", path="notes.txt"), 2: call("write_file", path="summary.txt", content="draft")}
ROLES = {"system", "user", "assistant"}


@pytest.fixture
def fakes():
    with FakeOpenAIServer(model="qwen-test") as open_fake, FakeAnthropicServer() as frontier_fake:
        script = agent(WRITE, STEPS, answer="summary written")
        open_fake.script(script)
        frontier_fake.script(script)
        yield open_fake, frontier_fake


@pytest.fixture
def setup(tmp_path, fakes, monkeypatch):
    open_fake, frontier_fake = fakes
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("Revenue grew 12%.\n")
    settings = make_settings(
        tmp_path,
        open_base_url=open_fake.url,
        open_model="qwen-test",
        open_dialect="vllm",
        anthropic_api_key="sk-ant-dataset",
        anthropic_base_url=frontier_fake.url,
        frontier_model="claude-sonnet-4-6",
    )
    settings.dataset.capture = True
    settings.dataset.include_private = True
    monkeypatch.setenv("STAKEFLOW_HOME", str(settings.home))
    return settings, ws


async def one_run(client, settings, ws, decide, **kw):
    req = runs.build_request(settings, "Summarise notes.txt into summary.txt", workspace=ws, **kw)
    handle = await runs.start_run(client, settings, req)
    await wait_for_approval(handle, 2)
    await handle.execute_update(APPROVE_UPDATE, decide)
    return await handle.result()


def export(tmp_path, name: str, *args: str) -> tuple[dict, list[dict], list[dict]]:
    out = tmp_path / "data" / f"{name}.jsonl"
    ran = CliRunner().invoke(cli, ["dataset", "export", "--out", str(out), "--json", *args], catch_exceptions=False)
    assert ran.exit_code == 0, ran.output
    manifest = json.loads(ran.output)
    lines = [
        [json.loads(line) for line in (out.parent / f"{name}.{part}.jsonl").read_text().splitlines()]
        for part in ("train", "test")
    ]
    return manifest, lines[0], lines[1]


def check_openai_line(line: dict) -> None:
    """OpenAI's chat fine-tuning line (and TRL's conversational one): messages ending with the assistant turn."""
    assert set(line) == {"messages"}
    messages = line["messages"]
    assert messages and all(set(m) == {"role", "content"} and m["role"] in ROLES for m in messages)
    assert all(isinstance(m["content"], str) and m["content"] for m in messages)
    assert messages[-1]["role"] == "assistant" and messages[-2]["role"] == "user"


def check_trl_line(line: dict) -> None:
    """TRL's conversational prompt-completion line."""
    assert set(line) == {"prompt", "completion"}
    assert line["prompt"][-1]["role"] == "user" and [m["role"] for m in line["completion"]] == ["assistant"]


async def test_captured_runs_export_as_fine_tuning_data(client, tmp_path, setup):
    settings, ws = setup
    edited = [ToolCall(tool="write_file", args={"path": "summary.txt", "content": "Revenue grew 12%."})]
    async with running_workers(client, settings):
        approved = await one_run(
            client, settings, ws, ApprovalRequest(step=2, decision="approve", by="ed", tool_calls=edited)
        )
        assert (ws / "summary.txt").read_text() == "Revenue grew 12%."  # the approver's version is what acted
        await one_run(client, settings, ws, ApprovalRequest(step=2, decision="reject", note="wrong", by="ed"))
        await one_run(client, settings, ws, ApprovalRequest(step=2, decision="approve", by="ed"), sensitivity="private")
    assert approved.steps[1].approval.edited_calls == edited

    manifest, train, test = export(tmp_path, "all")
    lines = train + test
    assert lines and manifest["counts"]["train"] == len(train) and manifest["counts"]["test"] == len(test)
    for line in lines:
        check_openai_line(line)
    assert manifest["private_examples"] == 0  # private rows absent by default
    assert manifest["counts"]["excluded"].get("rejected step", 0) >= 1
    assert manifest["counts"]["excluded"].get("private run", 0) >= 1
    # The frontier answered the high-stakes step; the approver changed it: the label is the approved version.
    labelled = [m["messages"][-1]["content"] for m in lines if "write_file" in m["messages"][-1]["content"]]
    assert labelled and all("Revenue grew 12%." in text and "draft" not in text for text in labelled)
    for name, f in manifest["files"].items():
        assert len((tmp_path / "data" / name).read_text().splitlines()) == f["lines"]
    _, trl_train, trl_test = export(tmp_path, "trl", "--format", "trl")
    for line in trl_train + trl_test:
        check_trl_line(line)
    with_private, _, _ = export(tmp_path, "private", "--include-private")
    assert with_private["private_examples"] >= 1


async def test_the_split_is_stable_as_data_grows(client, tmp_path, setup):
    settings, ws = setup
    async with running_workers(client, settings):
        await one_run(client, settings, ws, ApprovalRequest(step=2, decision="approve", by="ed"))
    _, train_before, test_before = export(tmp_path, "before", "--split", "0.5")
    (ws / "notes.txt").write_text("Costs fell 3%.\n")
    async with running_workers(client, settings):
        for n in range(3):
            edited = [ToolCall(tool="write_file", args={"path": "summary.txt", "content": f"version {n}"})]
            await one_run(client, settings, ws, ApprovalRequest(step=2, decision="approve", by="ed", tool_calls=edited))
    _, train_after, test_after = export(tmp_path, "after", "--split", "0.5")
    key = lambda line: json.dumps(line, sort_keys=True)
    assert {key(x) for x in test_before} <= {key(x) for x in test_after}
    assert {key(x) for x in train_before} <= {key(x) for x in train_after}
    assert len(train_after) + len(test_after) > len(train_before) + len(test_before)
    assert not {key(x) for x in test_after} & {key(x) for x in train_after}
    await asyncio.sleep(0)
