"""What the MCP tests share: settings with MCP servers, and the official reference servers from npm.

The npm servers (``@modelcontextprotocol/server-everything``, ``server-filesystem``, ``server-memory``) are
pinned by tests/mcp_servers/package-lock.json. The first test that needs one installs them with ``npm ci``
(the README's test command is all a fresh machine runs; .ci/run installs them beforehand, once per lock file).
Without node a test that needs one is skipped, saying why; an install that fails fails the test with npm's
own words and the command to run by hand: never a silent skip.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from stakeflow.config import McpServerConfig, Settings
from tests.support import make_settings

NPM_PREFIX = Path(__file__).with_name("mcp_servers")
NPM_BIN = NPM_PREFIX / "node_modules" / ".bin"


def npm_server(name: str) -> str:
    """The path of an npm reference server's command (``mcp-server-filesystem``)."""
    if shutil.which("node") is None:
        pytest.skip(
            f"node is not installed, so the npm MCP server {name} cannot run: install Node 20 (apt-get install nodejs npm)"
        )
    path = NPM_BIN / name
    if not path.exists():
        failure = install_npm_servers(NPM_PREFIX)
        if failure or not path.exists():
            pytest.fail(
                f"{name} is not installed ({failure or 'npm ci did not install it'}): run `npm ci --prefix tests/mcp_servers`"
            )
    return str(path)


@functools.cache
def install_npm_servers(prefix: Path) -> str | None:
    """``npm ci`` in ``prefix`` (the lock file's exact versions, from the registry or npm's cache), once per
    session; None when it worked, else npm's first words (not its log's path)."""
    if shutil.which("npm") is None:
        return "npm is not installed"
    try:
        done = subprocess.run(
            ["npm", "ci", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error"],
            capture_output=True,
            text=True,
            timeout=600,
        )
    except subprocess.TimeoutExpired:
        return "npm ci ran past 600 s"
    if done.returncode == 0:
        return None
    said = [line for line in done.stderr.splitlines() if line.strip() and "complete log of this run" not in line]
    return " / ".join(said[:3]) or f"npm ci exited {done.returncode}"


def mcp_settings(tmp_path: Path, open_fake, frontier_fake=None, **mcp: dict) -> Settings:
    """Settings for a run on the scripted open model (and frontier, if given) with these MCP servers."""
    extra = {}
    if frontier_fake is not None:
        extra = dict(
            anthropic_api_key="sk-ant-test-mcp", anthropic_base_url=frontier_fake.url, frontier_model="claude-test"
        )
    servers = {name: McpServerConfig(**cfg) for name, cfg in mcp.items()}
    return make_settings(
        tmp_path, open_base_url=open_fake.url, open_model="qwen-test", open_dialect="vllm", mcp=servers, **extra
    )


def server_pids(marker: str) -> list[int]:
    """Live processes whose command line or environment names ``marker`` (a test's own tmp path): the
    servers that test started, found without matching anyone else's by name."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not _alive(int(entry.name)):
            continue
        try:
            seen = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in seen and b"parent_death.py" not in (entry / "cmdline").read_bytes():
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by its parent, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_gone(pid: int, seconds: float) -> bool:
    """Whether ``pid`` stopped running within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)
