"""The real Temporal Web UI, served by the dev server, rendered in headless Chromium.

A run must be readable there without opening a payload: its summary (the goal), the activity
summaries (step · route · model · tool) and stakeflow's search attributes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from stakeflow.services import runs
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer
from tests.support import UI_PORT, make_settings, running_workers

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def render(url: str, tmp_path, screenshot: bool = False) -> str:
    """The page's DOM after its scripts ran (the flags from ../shared/DESIGN.md)."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",
        "--window-size=1600,2400",
    ]
    if screenshot:
        args += [f"--screenshot={tmp_path / 'workflow.png'}", url]
    else:
        args += ["--dump-dom", url]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
async def test_run_is_readable_in_the_web_ui(client, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("Revenue grew 12%.\n")
    with FakeOpenAIServer(model="qwen-test") as open_fake:
        open_fake.script(
            agent(
                plan(("Read the notes", "read_file"), ("Write the summary", "write_file")),
                {1: call("read_file", path="notes.txt"), 2: call("write_file", path="s.txt", content="12%")},
                answer="done",
            )
        )
        settings = make_settings(tmp_path, open_base_url=open_fake.url, open_model="qwen-test", open_dialect="vllm")
        req = runs.build_request(
            settings, "Summarise the quarterly notes for the board", workspace=ws, auto_approve=True
        )
        async with running_workers(client, settings):
            handle = await runs.start_run(client, settings, req)
            await handle.result()

    url = f"http://127.0.0.1:{UI_PORT}/namespaces/default/workflows/{handle.id}"
    dom = render(url, tmp_path)
    render(url, tmp_path, screenshot=True)  # for debugging: tmp_path/workflow.png
    assert handle.id in dom
    assert "Summarise the quarterly notes for the board" in dom  # the static summary
    assert "step 1/2 · open · qwen-test · read_file" in dom  # an activity summary
    run_id = handle.result_run_id or handle.run_id
    attributes = render(f"{url}/{run_id}/search-attributes", tmp_path)
    (tmp_path / "search-attributes.html").write_text(attributes)
    text = " ".join(re.sub(r"<[^>]+>", " ", attributes).split())
    assert '"StakeflowStakes" : "high"' in text  # the write step made the run high-stakes
    assert '"StakeflowOpenSteps" : 2' in text and '"StakeflowSource" : "cli"' in text
    assert '"StakeflowAwaitingApproval" : false' in text
