"""``GET /runs/<id>/events`` on the webhook server (real uvicorn, the suite's dev server, real workers): a run in
progress as Server-Sent Events, a reconnect with Last-Event-ID, a late join, the bearer token, bad ids."""

from __future__ import annotations

import asyncio
import json

import httpx

from stakeflow.agents.types import RunEvent
from stakeflow.services import runs
from stakeflow.webhooks import events as sse_events
from tests.agent_script import agent, call, plan
from tests.support import running_workers, wait_for_approval
from tests.webhook_support import TOKEN, http, open_fake, server, settings  # noqa: F401  (fixtures)

AUTH = {"Authorization": f"Bearer {TOKEN}"}
ANSWER = "Wrote summary.txt with the totals of the quarter, as asked."
WRITES = agent(
    plan(("Read the notes", "read_file"), ("Write the summary", "write_file")),
    {1: call("read_file", path="notes.txt"), 2: call("write_file", path="summary.txt", content="grew 12%\n")},
    answer=ANSWER,
)


async def read_sse(http: httpx.AsyncClient, url: str, headers: dict[str, str], until: str) -> list[RunEvent]:
    """Events of the stream at ``url`` until one of kind ``until`` (then the connection is closed: a client leaving)."""
    got: list[RunEvent] = []
    async with http.stream("GET", url, headers={**AUTH, **headers}) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        async for line in r.aiter_lines():
            if line.startswith(":"):
                continue
            if line:
                key, _, value = line.partition(": ")
                fields[key] = value
                continue
            if fields:
                event = RunEvent.model_validate_json(fields["data"])
                assert (int(fields["id"]), fields["event"]) == (event.offset, event.kind)
                got.append(event)
                fields = {}
                if event.kind == until:
                    return got
    return got


async def test_a_run_in_progress_as_server_sent_events_resumed_with_last_event_id(
    client, settings, server, http, open_fake, tmp_path
):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("Revenue grew 12%.\n")
    open_fake.script(WRITES)
    open_fake.chunk_delay_s = 0.02
    req = runs.build_request(settings, "Summarise notes.txt into summary.txt", workspace=str(ws))
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req, None)
        url = f"{server.url}/runs/{handle.id}/events"
        # Connected while it runs: everything up to the wait for approval, then the client goes away.
        first = await asyncio.wait_for(read_sse(http, url, {}, until="waiting_for_approval"), 60)
        await wait_for_approval(handle, 2)
        await runs.decide_step(client, handle.id, 2, True, "ok", "tester")
        # Back, with the last id it saw: the rest, nothing twice.
        rest = await asyncio.wait_for(read_sse(http, url, {"Last-Event-ID": str(first[-1].offset)}, until="done"), 60)
        # Joined late, after the end, by its Temporal run id: everything.
        run_id = handle.result_run_id or ""
        late = await read_sse(http, f"{server.url}/runs/{run_id}/events", {}, until="done")

    assert [(e.kind, e.step) for e in first][-2:] == [("step_started", 2), ("waiting_for_approval", 2)]
    assert "write_file" in first[-1].what
    assert [e.offset for e in first + rest] == list(range(len(first) + len(rest)))
    assert rest[-1].kind == "done" and rest[-1].text == ANSWER
    assert "".join(e.text for e in rest if e.kind == "answer_delta") == ANSWER
    assert late == first + rest


async def test_the_events_route_wants_the_token_a_known_run_and_a_real_id(client, server, http):
    url = f"{server.url}/runs/no-such-run-xyz/events"
    assert (await http.get(url)).status_code == 401
    assert (await http.get(url, headers={"Authorization": "Bearer wrong"})).status_code == 401
    r = await http.get(url, headers=AUTH)
    assert r.status_code == 404 and "no-such-run-xyz" in r.json()["error"]
    r = await http.get(url, headers={**AUTH, "Last-Event-ID": "abc"})
    assert r.status_code == 400 and "Last-Event-ID" in r.json()["error"]


async def test_open_streams_are_bounded(client, settings, server, http, open_fake, monkeypatch):
    """Past MAX_OPEN streams, the next is refused (429) instead of adding another poller on the workers."""
    monkeypatch.setattr(sse_events, "MAX_OPEN", 0)
    open_fake.script(agent(plan(("Think", None)), {1: {"tool_calls": [], "result": "ok"}}, answer="fine"))
    req = runs.build_request(settings, "Think it over")
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req, None)
        await runs.wait_result(handle)
    r = await http.get(f"{server.url}/runs/{handle.id}/events", headers=AUTH)
    assert r.status_code == 429 and r.headers["retry-after"] == "5"
    assert json.loads(r.text)["error"].startswith("0 event streams are open")
