"""What stakeflow installs: one top-level import package, beside the ecosystem's own.

The repository's rooms (agents/, activities/, workflows/, workers/) are subpackages of ``stakeflow`` through
symbolic links in stakeflow/, so the wheel holds ``stakeflow.agents`` and no ``agents``: openai-agents, which
``temporalio.contrib.openai_agents`` uses, installs ``agents`` and both must work in one environment. The
wheel is built from the checkout and installed (not editable) into a fresh virtual environment, as a team's
deployment would, and runs a scripted task there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer
from tests.support import EXAMPLE_WORKSPACE, REPO, free_port, open_endpoint_env

ROOMS = ("agents", "activities", "workflows", "workers")


def test_each_room_is_a_stakeflow_subpackage_through_a_link():
    for room in ROOMS:
        link = REPO / "stakeflow" / room
        assert link.is_symlink() and os.readlink(link) == f"../{room}", f"stakeflow/{room} must link to ../{room}"


@pytest.mark.parametrize("room", ROOMS)
def test_a_room_imported_by_its_bare_name_refuses(room):
    # From the repository's root the folder is importable as plain `agents`: that would be a second copy of
    # the same code (other classes, other registries), under a name openai-agents owns.
    out = subprocess.run([sys.executable, "-c", f"import {room}"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode != 0
    assert f"import stakeflow.{room}, not {room}" in out.stderr


# Left out of the copy the wheel is built from: what is not source, and setuptools' own build folder, whose stale
# build/lib (a module deleted since the last in-tree build) would go into the wheel.
NOT_SOURCE = (".git", ".venv", "build", "*.egg-info", "__pycache__", "node_modules", ".pytest_cache", ".mypy_cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source") / "stakeflow"
    # pip builds in the tree it is given: a copy, so nothing is written into the checkout and nothing left there
    # by an earlier build is packaged.
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    [path] = out.glob("stakeflow-*.whl")
    return path


def test_the_wheel_has_one_top_level_package_and_every_subpackage(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.startswith("stakeflow-")} == {"stakeflow"}
    [top_level] = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["stakeflow"]
    packages = {
        f"{Path(folder).relative_to(REPO)}/__init__.py"
        for folder, _, files in os.walk(REPO / "stakeflow", followlinks=True)
        if "__init__.py" in files
    }
    assert len(packages) > 10
    assert packages - set(names) == set()


def test_the_wheel_holds_only_modules_of_the_checkout(wheel):
    """Nothing from an earlier build: a module deleted from the source is gone from the wheel."""
    modules = [n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("stakeflow/") and n.endswith(".py")]
    assert len(modules) > 100
    assert [m for m in modules if not (REPO / m).is_file()] == []


@pytest.fixture(scope="module")
def fresh_env(wheel, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(wheel), "openai-agents", "temporalio[openai-agents]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr
    return venv


def test_installed_beside_openai_agents_both_import(fresh_env):
    probe = (
        "import agents, stakeflow.agents, stakeflow.workers.main\n"
        "from agents import Agent, Runner\n"
        "from temporalio.contrib.openai_agents import OpenAIAgentsPlugin\n"
        "from stakeflow.workflows.agent_task import AgentTaskWorkflow\n"
        "OpenAIAgentsPlugin()\n"
        "print(agents.__file__)\n"
        "print(stakeflow.agents.__file__)\n"
    )
    out = subprocess.run([str(fresh_env / "bin" / "python"), "-c", probe], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    theirs, ours = out.stdout.split()
    assert theirs.endswith("site-packages/agents/__init__.py")
    assert ours.endswith("site-packages/stakeflow/agents/__init__.py")
    shown = subprocess.run([str(fresh_env / "bin" / "pip"), "show", "-f", "stakeflow"], capture_output=True, text=True)
    files = [line.strip() for line in shown.stdout.split("Files:", 1)[1].splitlines() if line.strip()]
    tops = {f.split("/")[0] for f in files if not f.startswith(("..", "stakeflow-"))}
    assert tops == {"stakeflow"}


def test_installed_beside_openai_agents_completes_a_scripted_run(fresh_env, tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STAKEFLOW_", "ANTHROPIC_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{fresh_env / 'bin'}:{env.get('PATH', '')}"
    with FakeOpenAIServer(model="qwen-test") as server:
        env.update(
            STAKEFLOW_HOME=str(home),
            STAKEFLOW_TEMPORAL_PORT=str(free_port()),
            STAKEFLOW_UI_PORT=str(free_port()),
            **open_endpoint_env(server.url),
        )
        server.script(
            agent(
                plan(("Read the notes", "read_file")),
                {1: call("read_file", path="notes.txt")},
                answer="Revenue grew 12% over Q2.",
            )
        )
        stakeflow = str(fresh_env / "bin" / "stakeflow")
        try:
            ran = subprocess.run(
                [stakeflow, "run", "--json", "--workspace", str(EXAMPLE_WORKSPACE), "How did revenue grow?"],
                env=env,
                capture_output=True,
                text=True,
                timeout=240,
                cwd=tmp_path,
            )
        finally:
            subprocess.run([stakeflow, "down"], env=env, capture_output=True, timeout=60, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    out = json.loads(ran.stdout)
    assert out["status"] == "completed"
    assert out["answer"] == "Revenue grew 12% over Q2."
    assert [s["tools"] for s in out["steps"]] == [["read_file"]]
