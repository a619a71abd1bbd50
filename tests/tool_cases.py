"""What the tool tests share: a workspace, a home ledger folder, one direct run_tool call, a refusal, limits.

Imported by name into the test modules that use them (fixtures included), not put in conftest.py:
a reader of a test sees where each of these comes from.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stakeflow.activities.tools import ToolActivities
from stakeflow.agents.types import ToolRequest, ToolResult
from stakeflow.config import HttpGetConfig, ReadFileConfig, SqlQueryConfig, ToolsConfig, WriteFileConfig


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """An empty workspace folder."""
    folder = tmp_path / "ws"
    folder.mkdir()
    return folder


@pytest.fixture
def home_ledger(tmp_path: Path) -> Path:
    """The previous release's per-host ledger folder ($STAKEFLOW_HOME/ledger); not there until a test makes it."""
    return tmp_path / "home" / "ledger"


async def run(
    tool: str,
    args: dict,
    *,
    workspace: Path | str = "",
    key: str = "",
    config: ToolsConfig | None = None,
    home_ledger: Path | None = None,
) -> ToolResult:
    """One run_tool call, made directly on a fresh ToolActivities with the built-in tools."""
    acts = ToolActivities(config or ToolsConfig(), home_ledger or Path("/nonexistent-ledger"))
    req = ToolRequest(run_id="run-1", tool=tool, args=args, workspace=str(workspace), idempotency_key=key)
    return await acts.run_tool(req)


def refused(result: ToolResult) -> str:
    """The error of a result that must be a refusal."""
    assert result.ok is False, result
    assert result.output == ""
    assert result.error is not None
    return result.error


def tools_config(
    *,
    read_file: int | None = None,
    write_file: int | None = None,
    sql_rows: int | None = None,
    sql_timeout: float | None = None,
    http: HttpGetConfig | None = None,
) -> ToolsConfig:
    """Default tool limits, but for the ones given."""
    config = ToolsConfig()
    if read_file is not None:
        config.read_file = ReadFileConfig(max_bytes=read_file)
    if write_file is not None:
        config.write_file = WriteFileConfig(max_bytes=write_file)
    if sql_rows is not None or sql_timeout is not None:
        config.sql_query = SqlQueryConfig(max_rows=sql_rows or 200, timeout_s=sql_timeout or 20.0)
    if http is not None:
        config.http_get = http
    return config
