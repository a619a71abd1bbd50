"""Runs in flight survive an upgrade: every recorded history of an earlier release replays on today's workflow.

tests/histories/<release>/ holds real histories recorded with that release's code (tests/histories/record.py).
A change that alters the commands a run issues, in kind or order, without `workflow.patched(...)` makes a
replay fail here, before it makes a user's run fail after an upgrade. See docs/versioning.md.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from stakeflow.workflows.agent_task import AgentTaskWorkflow

HISTORIES = sorted(Path(__file__).with_name("histories").glob("*/*.json"))


def test_there_are_recorded_histories_of_an_earlier_release():
    releases = {p.parent.name for p in HISTORIES}
    assert {"0.1.0-bfe805a", "0.2.0-69921be"} <= releases, releases
    assert len(HISTORIES) >= 16


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_a_recorded_history_replays_on_this_code(path: Path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[AgentTaskWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.parent.name}/{path.name}: {result.replay_failure}"


async def test_the_recorder_stops_a_scenario_that_waits_for_what_never_comes():
    """tests/histories/record.py ran over 15 minutes in silence on a scenario whose run waited for an approval the
    scenario never gave; a scenario now has SCENARIO_TIMEOUT_S, and one past it is named, with what to look at."""
    from tests.histories.record import ScenarioTimeout, within_limit

    with pytest.raises(ScenarioTimeout, match="scenario private_tool_failed did not finish within 0.05s"):
        await within_limit("private_tool_failed", asyncio.sleep(3600, result="never"), timeout_s=0.05)
    assert await within_limit("read_and_answer", asyncio.sleep(0, result="wf-1"), timeout_s=5) == "wf-1"
