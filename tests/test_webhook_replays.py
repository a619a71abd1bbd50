"""Replays and hostile bodies (issue 17, items 8 and 10): a captured signed body starts one run at most,
whatever delivery id it is re-sent under, on whichever server process; a body nested too deep is 400.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus

from stakeflow.config import load_settings
from stakeflow.webhooks.signatures import seal_id_for, workflow_id_for
from stakeflow.webhooks.temporal import SEAL_WORKFLOW
from tests.webhook_support import (  # noqa: F401  (fixtures are used by name)
    SECRET,
    assert_not_started,
    hook,
    http,
    issue_body,
    new_delivery,
    open_fake,
    serve_process,
    server,
    settings,
    signed,
    terminate,
)


def with_delivery(headers: dict[str, str], header: str, delivery: str) -> dict[str, str]:
    """The same captured headers (signature included) under another delivery id: what a replayer sends."""
    return {**headers, header: delivery}


# --- item 8: replays -----------------------------------------------------------------------------


async def test_a_replayed_github_body_with_a_fresh_delivery_id_starts_nothing(tmp_path, client, server, http):
    original = new_delivery()
    body = issue_body(title="Replay-MARKER")
    captured = signed(body, original, github=True, event="issues")
    first = await http.post(f"{server.url}/hooks/gh", content=body, headers=captured)
    assert first.status_code == 202 and first.json()["duplicate"] is False, first.text
    run = first.json()

    replay = new_delivery()
    again = await http.post(
        f"{server.url}/hooks/gh", content=body, headers=with_delivery(captured, "X-GitHub-Delivery", replay)
    )
    assert again.status_code == 202, again.text
    assert again.json() == {**run, "duplicate": True}
    await assert_not_started(client, f"hook-gh-{replay}")

    # After the run has ended, and on another server process (which shares nothing with this one but
    # Temporal), the same body is still known.
    await terminate(client, run["workflow_id"])
    toml = '[hooks.gh]\nsecret_env = "HOOK_SECRET"\ngoal = "Triage this issue: {payload.issue.title}"\nstakes = "low"\n'
    later = new_delivery()
    async with serve_process(tmp_path / "other-server", client, http, toml, HOOK_SECRET=SECRET) as (url, _):
        other = await http.post(
            f"{url}/hooks/gh", content=body, headers=with_delivery(captured, "X-GitHub-Delivery", later)
        )
    assert other.status_code == 202, other.text
    assert (other.json()["workflow_id"], other.json()["run_id"], other.json()["duplicate"]) == (
        run["workflow_id"],
        run["run_id"],
        True,
    )
    await assert_not_started(client, f"hook-gh-{later}")


@pytest.mark.parametrize("first_id, replay_id", [(True, False), (False, True)])
async def test_a_replay_with_or_without_a_delivery_id_is_the_first_run(client, server, http, first_id, replay_id):
    # Without a delivery id the workflow id derives from the body: that must not be a way around the seal.
    body = issue_body()
    captured = signed(body, new_delivery() if first_id else None, github=True)
    first = await http.post(f"{server.url}/hooks/gh", content=body, headers=captured)
    assert first.status_code == 202 and first.json()["duplicate"] is False, first.text
    replay_headers = {k: v for k, v in captured.items() if k != "X-GitHub-Delivery"}
    if replay_id:
        replay_headers["X-GitHub-Delivery"] = new_delivery()
    again = await http.post(f"{server.url}/hooks/gh", content=body, headers=replay_headers)
    assert again.status_code == 202 and again.json() == {**first.json(), "duplicate": True}, again.text
    other = workflow_id_for("gh", replay_headers.get("X-GitHub-Delivery"), body)
    await assert_not_started(client, other)
    await terminate(client, first.json()["workflow_id"])


async def test_concurrent_replays_under_different_delivery_ids_start_one_run(client, server, http):
    body = issue_body()
    captured = signed(body, new_delivery(), github=True)
    deliveries = [new_delivery() for _ in range(8)]
    answers = await asyncio.gather(
        *[
            http.post(f"{server.url}/hooks/gh", content=body, headers=with_delivery(captured, "X-GitHub-Delivery", d))
            for d in deliveries
        ]
    )
    assert [r.status_code for r in answers] == [202] * 8, [r.text for r in answers]
    assert sorted(r.json()["duplicate"] for r in answers) == [False] + [True] * 7
    winner = next(r.json() for r in answers if not r.json()["duplicate"])
    assert {r.json()["workflow_id"] for r in answers} == {winner["workflow_id"]}
    for d in deliveries:
        if f"hook-gh-{d}" != winner["workflow_id"]:
            await assert_not_started(client, f"hook-gh-{d}")
    await terminate(client, winner["workflow_id"])


async def test_a_seal_is_a_workflow_no_worker_ever_runs(client, server, http):
    body = issue_body()
    headers = signed(body, new_delivery())
    r = await http.post(f"{server.url}/hooks/gh", content=body, headers=headers)
    assert r.status_code == 202, r.text
    seal = client.get_workflow_handle(seal_id_for("gh", headers["X-Stakeflow-Signature-256"].removeprefix("sha256=")))
    desc = await seal.describe()
    assert desc.workflow_type == SEAL_WORKFLOW and desc.status == WorkflowExecutionStatus.RUNNING
    assert await desc.memo_value("run") == r.json()["workflow_id"]
    # Open for twice the tolerance (300 s by default), and never a workflow task: nothing can run it.
    assert desc.raw_description.execution_config.workflow_execution_timeout.ToSeconds() == 600
    assert [e.event_type for e in (await seal.fetch_history()).events] == [
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    ]
    await terminate(client, r.json()["workflow_id"])


async def test_a_closed_seal_still_refuses_the_replay(client, server, http):
    body = issue_body()
    captured = signed(body, new_delivery(), github=True)
    first = await http.post(f"{server.url}/hooks/brief", content=body, headers=captured)
    assert first.status_code == 202, first.text
    seal = client.get_workflow_handle(seal_id_for("brief", captured["X-Hub-Signature-256"].removeprefix("sha256=")))
    for _ in range(100):  # open for 2 s (twice the 1 s tolerance)
        if (await seal.describe()).status == WorkflowExecutionStatus.TIMED_OUT:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the seal never closed")
    replay = new_delivery()
    again = await http.post(
        f"{server.url}/hooks/brief", content=body, headers=with_delivery(captured, "X-GitHub-Delivery", replay)
    )
    assert again.status_code == 202 and again.json() == {**first.json(), "duplicate": True}, again.text
    await assert_not_started(client, f"hook-brief-{replay}")
    await terminate(client, first.json()["workflow_id"])


async def test_a_replayed_timestamped_body_within_the_tolerance_starts_nothing(client, server, http):
    original, replay = new_delivery(), new_delivery()
    body = issue_body()
    captured = signed(body, original)  # X-Stakeflow-Timestamp: now
    first = await http.post(f"{server.url}/hooks/stamped", content=body, headers=captured)
    assert first.status_code == 202 and first.json()["duplicate"] is False, first.text
    again = await http.post(
        f"{server.url}/hooks/stamped", content=body, headers=with_delivery(captured, "X-Stakeflow-Delivery", replay)
    )
    assert again.status_code == 202 and again.json() == {**first.json(), "duplicate": True}
    await assert_not_started(client, f"hook-stamped-{replay}")
    await terminate(client, first.json()["workflow_id"])


async def test_a_sender_retry_signed_again_is_still_one_run(client, server, http):
    # The delivery id keeps deduplicating what a sender re-signs with a new timestamp.
    delivery = new_delivery()
    body = issue_body()
    now = int(time.time())
    first = await http.post(
        f"{server.url}/hooks/gh", content=body, headers=signed(body, delivery, timestamp=str(now - 1))
    )
    retry = await http.post(f"{server.url}/hooks/gh", content=body, headers=signed(body, delivery, timestamp=str(now)))
    assert (first.status_code, retry.status_code) == (202, 202), retry.text
    assert retry.json() == {**first.json(), "duplicate": True}
    await terminate(client, first.json()["workflow_id"])


async def test_stakeflow_signatures_need_a_timestamp_unless_the_hook_turns_it_off(client, server, http):
    assert hook().require_timestamp is True
    body = issue_body()
    refused = await http.post(
        f"{server.url}/hooks/gh", content=body, headers=signed(body, d1 := new_delivery(), stamp=False)
    )
    assert refused.status_code == 401, refused.text
    assert "requires X-Stakeflow-Timestamp" in refused.json()["error"]
    assert "require_timestamp = false" in refused.json()["error"]
    await assert_not_started(client, f"hook-gh-{d1}")

    # require_timestamp = false: accepted, and a replay under a new delivery id is still refused.
    captured = signed(body, new_delivery(), stamp=False)
    first = await http.post(f"{server.url}/hooks/unstamped", content=body, headers=captured)
    assert first.status_code == 202 and first.json()["duplicate"] is False, first.text
    replay = await http.post(
        f"{server.url}/hooks/unstamped",
        content=body,
        headers=with_delivery(captured, "X-Stakeflow-Delivery", d2 := new_delivery()),
    )
    assert replay.status_code == 202 and replay.json()["duplicate"] is True
    await assert_not_started(client, f"hook-unstamped-{d2}")
    await terminate(client, first.json()["workflow_id"])


def test_timestamp_config(tmp_path, monkeypatch):
    home = tmp_path / "h"
    home.mkdir()
    monkeypatch.setenv("STAKEFLOW_HOME", str(home))
    base = '[hooks.x]\nsecret_env = "S"\ngoal = "g"\n'
    (home / "stakeflow.toml").write_text(base + "require_timestamp = false\n")
    assert load_settings().hooks["x"].require_timestamp is False
    (home / "stakeflow.toml").write_text(base)
    assert load_settings().hooks["x"].require_timestamp is True


# --- item 10: nesting ----------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [100_000, 150])
async def test_a_body_nested_too_deep_is_400(client, server, http, depth):
    body = b"[" * depth + b"]" * depth
    delivery = new_delivery()
    r = await http.post(f"{server.url}/hooks/gh", content=body, headers=signed(body, delivery))
    assert r.status_code == 400, r.text
    assert "nests deeper than 100 levels" in r.json()["error"]
    await assert_not_started(client, f"hook-gh-{delivery}")


async def test_a_body_nested_within_the_limit_is_accepted(client, server, http):
    deep: object = "leaf"
    for _ in range(95):
        deep = [deep]
    body = json.dumps({"issue": {"title": "Deep", "body": deep}}).encode()
    r = await http.post(f"{server.url}/hooks/gh", content=body, headers=signed(body, new_delivery()))
    assert r.status_code == 202, r.text
    await terminate(client, r.json()["workflow_id"])
