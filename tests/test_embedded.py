"""One whole task on the real embedded model (llama.cpp + SmolLM2-135M), no fakes at all.

This is the README's first command: no GPU, no API key, no internet. Decoding is greedy, so the run is
deterministic for a given llama.cpp build, and the README installs the portable one everywhere. It must do
the task right: read notes.txt (the plan starts with the file the goal names, the path is an enum of the
workspace's files) and answer with facts from it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stakeflow.agents.claims import declines
from tests.support import EXAMPLE_WORKSPACE, free_port

pytestmark = pytest.mark.embedded


def embedded_env(home: Path) -> dict[str, str]:
    """A fresh stakeflow on the embedded default: its own home and ports, no key, no endpoint of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STAKEFLOW_", "ANTHROPIC_"))}
    env.update(
        STAKEFLOW_HOME=str(home),
        STAKEFLOW_TEMPORAL_PORT=str(free_port()),
        STAKEFLOW_UI_PORT=str(free_port()),
        STAKEFLOW_EMBEDDED_PORT=str(free_port()),
    )
    return env


def run_json(tmp_path: Path, *args: str) -> dict:
    """``stakeflow run --json --workspace examples/workspace ARGS`` on a fresh stakeflow (stopped after): its JSON."""
    env = embedded_env(tmp_path / "home")
    cmd = [sys.executable, "-m", "stakeflow"]
    try:
        ran = subprocess.run(
            [*cmd, "run", "--json", "--workspace", str(EXAMPLE_WORKSPACE), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        subprocess.run([*cmd, "down"], env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)


def test_readme_task_runs_on_the_embedded_model(tmp_path):
    home = tmp_path / "home"
    env = embedded_env(home)
    cmd = [sys.executable, "-m", "stakeflow"]
    try:
        ran = subprocess.run(
            [
                *cmd,
                "run",
                "--json",
                "--workspace",
                str(EXAMPLE_WORKSPACE),
                "Summarise the file notes.txt in the workspace",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert ran.returncode == 0, ran.stderr
        out = json.loads(ran.stdout)
        models = subprocess.run([*cmd, "models", "--json"], env=env, capture_output=True, text=True, timeout=60)
    finally:
        down = subprocess.run([*cmd, "down"], env=env, capture_output=True, text=True, timeout=60)
    assert out["status"] == "completed"
    reads = [r for s in out["steps"] for r in s["tool_results"] if r["tool"] == "read_file"]
    assert reads and all(r["ok"] for r in reads), out["steps"]
    assert out["steps"][0]["tools"] == ["read_file"]
    facts = [f for f in ("12%", "Nordic", "December", "94%", "8%") if f in out["answer"]]
    assert len(facts) >= 2, f"the answer states {facts} of notes.txt's facts: {out['answer']!r}"
    # plan, the step's rounds (read, then finish), the answer: 3 calls or more, all open and free
    assert re.match(r"cost \$0\.0000 \(open ([3-9]|\d\d) calls \$0\.0000, local", out["cost"]["line"]), out["cost"][
        "line"
    ]
    assert "UNPRICED" not in out["cost"]["line"]
    assert {s["route"] for s in out["steps"]} == {"open"}
    assert {s["model"] for s in out["steps"]} == {"smollm2-135m-instruct"}
    assert out["usage"]["requests"] >= 3 and out["usage"]["output_tokens"] > 0
    [open_entry, frontier_entry] = json.loads(models.stdout)
    assert open_entry["embedded"] and open_entry["reachable"]
    assert open_entry["served_models"] == ["smollm2-135m-instruct"]
    assert not frontier_entry["configured"]
    assert "embedded-model" in down.stdout
    assert list((home / "run").glob("*.pid")) == []
    assert Path(home / "logs" / "embedded-model.log").exists()


def test_a_question_about_a_file_the_workspace_lacks_is_never_answered_confidently(tmp_path):
    """Tried as a new user would: SmolLM2 answered such questions from another file (bench/tasks.py's
    ro-missing-invoices). The run must decline or flag its answer, naming the missing file."""
    goal = "What are the three largest amounts in invoices.csv?"
    # A question: the read-only tools (with write_file offered, SmolLM2 plans a write that waits for approval)
    out = run_json(tmp_path, "--tools", "read_file,sql_query,calculator", goal)
    assert out["status"] == "completed"
    if out["answer_supported"]:
        assert declines(out["answer"]), out["answer"]
    else:
        assert "invoices.csv: no such file in the workspace" in out["unsupported_claims"], out


def test_a_written_out_expression_is_computed_by_the_calculator(tmp_path):
    """Tried as a new user would: SmolLM2 planned "What is 17 * 23?" as reading notes.txt and summarising it, and
    answered 408. The plan now starts with the calculator (the goal writes out an expression), whose operands
    may be only the goal's figures; the answer gives its result, or is flagged — never a confident wrong figure."""
    out = run_json(tmp_path, "What is 17 * 23?")
    assert out["status"] == "completed"
    assert out["steps"][0]["tools"] == ["calculator"], out["steps"]
    results = [r for s in out["steps"] for rnd in s["rounds"] for r in rnd["results"]]
    computed = [r["output"] for r in results if r["tool"] == "calculator" and r["ok"]]
    assert any(c.endswith("= 391") for c in computed), computed
    if out["answer_supported"]:
        assert "391" in out["answer"].replace(",", ""), out["answer"]
    else:
        assert out["unsupported_claims"], out
