"""Determinism and secrecy over every history the suite produced: each AgentTaskWorkflow history replays
without errors, and no history holds a key or secret the tests used.

Marked ``after_all``: conftest.py runs these after every other collected test, whatever the file names or
the order pytest was given, so the session's dev server holds the histories of all earlier tests.
Some of them are encrypted (tests/test_codec.py, tests/test_topology.py): the replayer decodes with the suite's
test keys, as a worker of that deployment would; histories in clear pass through the codec unchanged.
"""

from __future__ import annotations

import re

import pytest
from temporalio.worker import Replayer

from stakeflow.workflows.agent_task import AgentTaskWorkflow

pytestmark = pytest.mark.after_all

# Every Anthropic-style key the tests hand stakeflow has this shape; none may reach a history.
API_KEY = re.compile(r"sk-ant-[A-Za-z0-9_-]+")


async def test_all_recorded_histories_replay(client):
    histories = []
    async for wf in client.list_workflows("WorkflowType = 'AgentTaskWorkflow' AND ExecutionStatus != 'Running'"):
        histories.append(await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history())
    # Run alone, this file has no histories; in the suite, the workflow tests leave a dozen or more.
    if not histories:
        pytest.skip("no histories on this server: run the whole suite")
    from stakeflow.config import Settings
    from stakeflow.temporal.codec import data_converter
    from tests.test_codec import KEYS_ENV

    replayer = Replayer(workflows=[AgentTaskWorkflow], data_converter=data_converter(Settings(codec_keys=KEYS_ENV)))

    async def each():
        for h in histories:
            yield h

    results = await replayer.replay_workflows(each(), raise_on_replay_failure=False)
    # Named by workflow id (what the test that made the history chose) with the message's end, where core says
    # which event and command disagree: enough to find the test that made the history.
    workflow_of = {h.run_id: h.workflow_id for h in histories}
    failures = {
        f"{workflow_of.get(run_id, '?')} ({run_id})": str(err)[-400:] for run_id, err in results.replay_failures.items()
    }
    assert failures == {}
    assert len(histories) >= 10


async def test_no_secret_in_any_history(client):
    """Every history the suite left on the dev server, scanned for the keys and webhook secrets it used."""
    from tests.test_codec import KEY_SECRETS
    from tests.test_codec_server import TOKEN as CODEC_TOKEN
    from tests.test_connection import API_KEY as TEMPORAL_API_KEY
    from tests.test_doctor import HOOK_SECRET as DOCTOR_HOOK_SECRET
    from tests.test_traces_e2e import SECRET as TRACE_KEY
    from tests.test_webhooks import SECRET as HOOK_SECRET
    from tests.workflow_support import SECRET_KEY

    secrets = [SECRET_KEY, TRACE_KEY, HOOK_SECRET, DOCTOR_HOOK_SECRET, *KEY_SECRETS, CODEC_TOKEN, TEMPORAL_API_KEY]
    scanned = 0
    async for wf in client.list_workflows():
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        text = history.to_json()
        scanned += 1
        leaked = [s for s in secrets if s in text] + API_KEY.findall(text)
        assert leaked == [], f"{wf.id} history contains a secret"
    if scanned == 0:
        pytest.skip("no histories on this server: run the whole suite")
    assert scanned >= 10
