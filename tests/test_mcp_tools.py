"""MCP servers as tools, end to end: the official mcp-server-git (stdio) on a real repository, and a fastmcp
server over Streamable HTTP (tests/mcp_test_server.py). Real dev server, real workers, scripted models."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stakeflow.agents.types import ApprovalRequest, Progress
from stakeflow.core.contracts import APPROVE_UPDATE, PROGRESS_QUERY
from stakeflow.services import runs
from tests.agent_script import agent, call, plan
from tests.mcp_support import mcp_settings
from tests.support import free_port, running_workers, wait_for_approval
from tests.workflow_support import frontier_fake, open_fake  # noqa: F401  (fixtures are used by name)

SERVER = str(Path(__file__).with_name("mcp_test_server.py"))
GIT = str(Path(sys.executable).parent / "mcp-server-git")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def repo(tmp_path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q")
    (path / "README.md").write_text("hello\n")
    git(path, "add", "README.md")
    git(path, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "first")
    return path


def git_server(repo: Path) -> dict:
    return {"command": GIT, "args": ["--repository", str(repo)]}


def test_stakeflow_tools_lists_git_tools_with_risks_from_their_annotations(tmp_path, repo):
    home = tmp_path / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text(f'[mcp.git]\ncommand = "{GIT}"\nargs = ["--repository", "{repo}"]\n')
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STAKEFLOW_")}, "STAKEFLOW_HOME": str(home)}
    ran = subprocess.run(
        [sys.executable, "-m", "stakeflow", "tools", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    tools = {t["name"]: t for t in json.loads(ran.stdout)["tools"]}
    assert (tools["git.git_status"]["risk"], tools["git.git_status"]["risk_from"]) == ("read_only", "readOnlyHint")
    assert tools["git.git_log"]["risk"] == "read_only"
    assert tools["git.git_commit"]["risk"] == "side_effect" and tools["git.git_commit"]["idempotent"] is False
    assert (tools["git.git_reset"]["risk"], tools["git.git_reset"]["risk_from"]) == ("irreversible", "destructiveHint")
    assert tools["git.git_status"]["source"] == "mcp:git" and tools["read_file"]["source"] == "builtin"
    assert tools["http_get"]["open_world"] is True and tools["git.git_status"]["open_world"] is False


async def test_a_read_only_git_run_stays_on_the_open_model(client, tmp_path, repo, open_fake, frontier_fake):
    open_fake.script(
        agent(
            plan(("Check the status", "git.git_status"), ("Show the log", "git.git_log")),
            {1: call("git.git_status", repo_path=str(repo)), 2: call("git.git_log", repo_path=str(repo))},
            answer="clean, one commit",
        )
    )
    settings = mcp_settings(tmp_path, open_fake, frontier_fake, git=git_server(repo))
    req = runs.build_request(settings, "Is the repository clean?", workspace=tmp_path, tools=["git.*"])
    async with running_workers(client, settings):
        result = await (await runs.start_run(client, settings, req)).result()
    assert [(s.route, s.stakes, s.status) for s in result.steps] == [("open", "low", "ok")] * 2
    assert "nothing to commit" in result.steps[0].tool_results[0].output
    assert "first" in result.steps[1].tool_results[0].output
    assert frontier_fake.calls == []
    # The plan offered git's tools by their qualified names, as an enum.
    assert "git.git_reset" in json.dumps(open_fake.calls[0].body)


async def test_git_reset_is_high_stakes_on_the_frontier_and_waits_before_it_acts(
    client, tmp_path, repo, open_fake, frontier_fake
):
    (repo / "new.txt").write_text("staged\n")
    git(repo, "add", "new.txt")
    script = agent(
        plan(("Unstage everything", "git.git_reset")),
        {1: call("git.git_reset", repo_path=str(repo))},
        answer="unstaged",
    )
    open_fake.script(script)
    frontier_fake.script(script)
    settings = mcp_settings(tmp_path, open_fake, frontier_fake, git=git_server(repo))
    req = runs.build_request(settings, "Unstage the changes", workspace=tmp_path, tools=["git.*"])
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req)
        waiting = await wait_for_approval(handle, 1)
        assert (waiting.steps[0].route, waiting.steps[0].stakes) == ("frontier", "high")
        assert "tool git.git_reset is irreversible" in waiting.steps[0].reason
        assert "new.txt" in git(repo, "diff", "--cached", "--name-only"), "nothing acted before the approval"
        await handle.execute_update(APPROVE_UPDATE, ApprovalRequest(step=1, decision="approve", by="tester"))
        result = await handle.result()
    assert result.steps[0].status == "ok"
    assert git(repo, "diff", "--cached", "--name-only") == ""


async def test_killing_the_mcp_server_mid_run_does_not_fail_the_run(client, tmp_path, repo, open_fake):
    steps = {i: call("git.git_status", repo_path=str(repo)) for i in (1, 2)}
    open_fake.script(
        agent(plan(("Status", "git.git_status"), ("Status again", "git.git_status")), steps, answer="still clean")
    )
    settings = mcp_settings(tmp_path, open_fake, git=git_server(repo))
    req = runs.build_request(settings, "Check the repository twice", workspace=tmp_path, tools=["git.*"])
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req)
        for _ in range(300):  # after step 1's tool call, kill the server process
            p = await handle.query(PROGRESS_QUERY, result_type=Progress)
            if p.steps and p.steps[0].status == "ok":
                break
            await asyncio.sleep(0.05)
        killed = subprocess.run(["pkill", "-9", "-f", f"mcp-server-git --repository {repo}"]).returncode
        assert killed == 0, "the stdio server was not running"
        result = await handle.result()
    assert [s.status for s in result.steps] == ["ok", "ok"]
    assert "nothing to commit" in result.steps[1].tool_results[0].output


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def http_server(tmp_path):
    """The fastmcp test server over Streamable HTTP, in its own process; yields (url, call log)."""
    log = tmp_path / "http-calls.log"
    log.touch()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, SERVER, "http", str(log), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while not _port_open(port):
        assert time.monotonic() < deadline and proc.poll() is None, "the MCP HTTP server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp", log
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


def calls_in(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


async def test_an_http_server_works_the_same_and_unannotated_means_riskiest(client, tmp_path, open_fake, http_server):
    url, log = http_server
    open_fake.script(
        agent(
            plan(("Echo it", "web.echo"), ("Try the broken one", "web.broken")),
            {1: call("web.echo", text="hi"), 2: call("web.broken")},
            answer="echoed",
        )
    )
    settings = mcp_settings(tmp_path, open_fake, web={"url": url})
    req = runs.build_request(settings, "Echo hi", workspace=tmp_path, tools=["web.*"])
    async with running_workers(client, settings):
        result = await (await runs.start_run(client, settings, req)).result()
        from stakeflow.cli.listing import tools_report

        listing = await asyncio.to_thread(tools_report, settings)
    assert result.steps[0].tool_results[0].output == "echo: hi"
    broken = result.steps[1].tool_results[0]
    assert not broken.ok and "the directory is down" in broken.error  # isError: back to the model, not a retry
    assert [c["tool"] for c in calls_in(log)].count("broken") == 1
    note = next(t for t in listing.tools if t.name == "web.note")
    assert (note.risk, note.open_world, note.idempotent) == ("irreversible", True, False)
    assert note.risk_from.startswith("no annotations")


async def test_a_server_down_at_plan_time_is_a_named_failure_or_skipped(client, tmp_path, open_fake):
    from temporalio.client import WorkflowFailureError

    open_fake.script(agent(plan(("Think", None)), {1: {"tool_calls": [], "result": "ok"}}, answer="ok"))
    down = {"url": f"http://127.0.0.1:{free_port()}/mcp"}
    settings = mcp_settings(tmp_path, open_fake, web=down)
    async with running_workers(client, settings):
        req = runs.build_request(settings, "Think", workspace=tmp_path, tools=["web.*", "calculator"])
        with pytest.raises(WorkflowFailureError) as failed:
            await (await runs.start_run(client, settings, req)).result()
        assert "MCP server 'web' is unavailable" in failed.value.cause.message
        settings.mcp["web"].on_unavailable = "skip"
        req = runs.build_request(settings, "Think", workspace=tmp_path, tools=["web.*", "calculator"])
        result = await (await runs.start_run(client, settings, req)).result()
    assert result.status == "completed"
    assert any("went on without MCP server 'web'" in n for n in result.notices)
