"""MCP annotations are hints from a server the MCP spec calls untrusted: `[mcp.<server>] trust_annotations = false`
(or an agent's own `trust_annotations = false`) treats every tool of the server as the riskiest kind, and
`stakeflow tools` says which applied (issue 20, "Also from the review").

The server is the fastmcp test server (tests/mcp_test_server.py), whose ``echo`` claims ``readOnlyHint: true,
openWorldHint: false``. Real dev server and workers; only the model is scripted.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from stakeflow.agents.types import ApprovalRequest
from stakeflow.config import AgentConfig, McpServerConfig
from stakeflow.core.contracts import APPROVE_UPDATE
from stakeflow.services import runs
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer
from tests.support import make_settings, running_workers
from tests.test_mcp_tools import calls_in, http_server, wait_for_approval  # noqa: F401 (fixture)

RISKIEST = ("irreversible", True, False)  # risk, open world, idempotent


def tools_json(home, *args: str) -> dict[str, dict]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STAKEFLOW_")}, "STAKEFLOW_HOME": str(home)}
    ran = subprocess.run(
        [sys.executable, "-m", "stakeflow", "tools", "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    return {t["name"]: t for t in json.loads(ran.stdout)["tools"]}


def test_stakeflow_tools_shows_untrusted_annotations_per_server_and_per_agent(tmp_path, http_server):
    url, _ = http_server
    home = tmp_path / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text(
        f'[mcp.trusted]\nurl = "{url}"\n\n[mcp.doubted]\nurl = "{url}"\ntrust_annotations = false\n\n'
        '[mcp.doubted.tools.lookup]\nrisk = "read_only"\n\n'  # the team's own word still wins
        '[agents.careful]\ntools = ["trusted.*"]\ntrust_annotations = false\n'
    )
    tools = tools_json(home)
    echo = tools["trusted.echo"]
    assert (echo["risk"], echo["open_world"], echo["idempotent"], echo["risk_from"]) == (
        "read_only",
        False,
        True,
        "readOnlyHint",
    )
    doubted = tools["doubted.echo"]
    assert (doubted["risk"], doubted["open_world"], doubted["idempotent"]) == RISKIEST
    assert (
        doubted["risk_from"] == "annotations not trusted ([mcp.doubted] trust_annotations = false): the riskiest kind"
    )
    assert (tools["doubted.lookup"]["risk"], tools["doubted.lookup"]["risk_from"]) == ("read_only", "config override")
    careful = tools_json(home, "--agent", "careful")["trusted.echo"]
    assert (careful["risk"], careful["open_world"], careful["idempotent"]) == RISKIEST
    assert (
        careful["risk_from"] == "annotations not trusted (agent careful: trust_annotations = false): the riskiest kind"
    )


@pytest.mark.parametrize("where", ["server", "agent"])
async def test_a_server_claiming_read_only_closed_world_is_not_believed_when_untrusted(
    client, tmp_path, http_server, where
):
    """echo claims read-only and closed-world; untrusted, it is irreversible and open-world: a private run's call
    waits for a person (high stakes, private egress) and nothing reaches the server before."""
    url, log = http_server
    with FakeOpenAIServer(model="qwen-test") as open_fake:
        open_fake.script(agent(plan(("Echo it", "web.echo")), {1: call("web.echo", text="salary 123456")}, answer="ok"))
        server = McpServerConfig(url=url, trust_annotations=where != "server")
        settings = make_settings(
            tmp_path,
            open_base_url=open_fake.url,
            open_model="qwen-test",
            open_dialect="vllm",
            mcp={"web": server},
            agents={"careful": AgentConfig(tools=["web.*"], trust_annotations=where != "agent")},
        )
        req = runs.build_request(
            settings, "Echo the salary", workspace=tmp_path, agent="careful", sensitivity="private"
        )
        async with running_workers(client, settings):
            handle = await runs.start_run(client, settings, req)
            waiting = await wait_for_approval(handle, 1)
            await asyncio.sleep(0.5)
            assert calls_in(log) == [], "an untrusted server's claim let private data out"
            step = waiting.steps[0]
            assert step.stakes == "high" and "tool web.echo is irreversible" in step.reason
            assert "private data to open-world tool web.echo" in step.reason
            await handle.execute_update(APPROVE_UPDATE, ApprovalRequest(step=1, decision="approve", by="dpo"))
            result = await handle.result()
    assert result.steps[0].status == "ok"
    assert calls_in(log) == [{"tool": "echo", "args": {"text": "salary 123456"}}]
