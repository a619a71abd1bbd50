"""The webhook server: real uvicorn on a free port, the session's dev server, real workers."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import pytest

from stakeflow.agents.types import TaskResult
from stakeflow.config import MissingField, TemplateError, load_settings, render_goal, template_fields
from stakeflow.core.errors import ConfigError
from stakeflow.webhooks import create_app, workflow_id_for
from tests.agent_script import agent, call, plan, think
from tests.support import running_workers
from tests.webhook_support import (  # noqa: F401  (fixtures are used by name)
    GOAL,
    SECRET,
    TOKEN,
    ServerThread,
    assert_not_started,
    hook,
    hook_settings,
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

# --- the happy path ------------------------------------------------------------------------------


async def test_signed_delivery_starts_a_run_that_completes(client, settings, server, http, open_fake, caplog):
    caplog.set_level(logging.DEBUG)
    open_fake.script(agent(plan(("Think about it", None)), {1: think("considered")}, answer="Reply drafted."))
    delivery = new_delivery()
    body = issue_body("Crash on start", "Body-MARKER-31337")

    async with running_workers(client, settings):
        r = await http.post(f"{server.url}/hooks/gh", content=body, headers=signed(body, delivery))
        assert r.status_code == 202, r.text
        out = r.json()
        assert out["workflow_id"] == f"hook-gh-{delivery}"
        assert out["duplicate"] is False and out["run_id"]
        assert out["ui_url"] == settings.ui_url(out["workflow_id"])
        handle = client.get_workflow_handle(out["workflow_id"], run_id=out["run_id"], result_type=TaskResult)
        result = await handle.result()

    assert result.status == "completed" and result.answer == "Reply drafted."
    assert result.goal == "Triage this issue: Crash on start\n\nBody-MARKER-31337"
    history = json.dumps((await handle.fetch_history()).to_json_dict())
    started = (await handle.fetch_history()).events[0].workflow_execution_started_event_attributes
    request = json.loads(started.input.payloads[0].data)
    assert request["source"] == "gh" and request["stakes"] == "low"
    assert SECRET not in history
    # The planner saw the rendered goal.
    assert "Crash on start" in open_fake.calls[0].raw

    # GET /runs/<id> with the API token: the same JSON shape as `stakeflow result --json`.
    r = await http.get(f"{server.url}/runs/{out['workflow_id']}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    run = r.json()
    assert (run["status"], run["answer"], run["run_id"]) == ("completed", "Reply drafted.", out["run_id"])
    assert [s["title"] for s in run["steps"]] == ["Think about it"]
    # ... and by its Temporal run id, which names the same run.
    r = await http.get(f"{server.url}/runs/{out['run_id']}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.json() == run

    assert SECRET not in caplog.text
    # The server's own lines (uvicorn's too) name the delivery, never the body. (Workers log payloads at DEBUG.)
    server_lines = [r.getMessage() for r in caplog.records if r.name.startswith(("stakeflow.webhooks", "uvicorn"))]
    assert not any("Body-MARKER-31337" in line for line in server_lines)
    assert any(delivery in line and " 202 " in line for line in server_lines)


async def test_the_same_delivery_twice_is_one_run(client, server, http):
    delivery = new_delivery()
    body = issue_body()
    first = await http.post(f"{server.url}/hooks/gh", content=body, headers=signed(body, delivery))
    second = await http.post(f"{server.url}/hooks/gh", content=body, headers=signed(body, delivery))
    assert (first.status_code, second.status_code) == (202, 202)
    a, b = first.json(), second.json()
    assert (a["duplicate"], b["duplicate"]) == (False, True)
    assert a["workflow_id"] == b["workflow_id"] and a["run_id"] == b["run_id"]
    # A redelivery after the run has ended is still the same run, not a new one.
    await terminate(client, a["workflow_id"])
    third = await http.post(f"{server.url}/hooks/gh", content=body, headers=signed(body, delivery))
    assert third.status_code == 202 and third.json()["duplicate"] is True
    assert third.json()["run_id"] == a["run_id"]
    runs = [w async for w in client.list_workflows(f'WorkflowId = "{a["workflow_id"]}"')]
    assert len(runs) <= 1  # visibility may lag; never two


async def test_concurrent_redeliveries_start_exactly_one_run(client, server, http):
    delivery = new_delivery()
    body = issue_body()
    answers = await asyncio.gather(
        *[http.post(f"{server.url}/hooks/gh", content=body, headers=signed(body, delivery)) for _ in range(8)]
    )
    assert [r.status_code for r in answers] == [202] * 8
    assert sorted(r.json()["duplicate"] for r in answers) == [False] + [True] * 7
    assert len({r.json()["run_id"] for r in answers}) == 1
    await terminate(client, answers[0].json()["workflow_id"])


async def test_github_signature_and_delivery_header(client, server, http):
    delivery = str(uuid.uuid4())
    body = issue_body()
    r = await http.post(f"{server.url}/hooks/gh-only", content=body, headers=signed(body, delivery, github=True))
    assert r.status_code == 202, r.text
    assert r.json()["workflow_id"] == f"hook-gh-only-{delivery}"
    await terminate(client, r.json()["workflow_id"])
    # That hook accepts only GitHub's header.
    other = new_delivery()
    r = await http.post(f"{server.url}/hooks/gh-only", content=body, headers=signed(body, other))
    assert r.status_code == 401 and "X-Hub-Signature-256" in r.json()["error"]
    await assert_not_started(client, f"hook-gh-only-{other}")


async def test_delivery_without_id_derives_it_from_the_body(client, server, http):
    body = issue_body(title=uuid.uuid4().hex)
    first = await http.post(f"{server.url}/hooks/gh", content=body, headers=signed(body))
    second = await http.post(f"{server.url}/hooks/gh", content=body, headers=signed(body))
    assert first.json()["workflow_id"] == workflow_id_for("gh", None, body)
    assert first.json()["workflow_id"].startswith("hook-gh-body-")
    assert (first.json()["duplicate"], second.json()["duplicate"]) == (False, True)
    await terminate(client, first.json()["workflow_id"])


def test_unsafe_delivery_ids_are_hashed():
    assert workflow_id_for("gh", "abc-123_x.y", b"") == "hook-gh-abc-123_x.y"
    hashed = workflow_id_for("gh", "a/b c", b"")
    assert hashed.startswith("hook-gh-sha256-") and hashed != workflow_id_for("gh", "a_b_c", b"")
    assert workflow_id_for("gh", "x" * 81, b"").startswith("hook-gh-sha256-")


# --- timestamps ----------------------------------------------------------------------------------


async def test_timestamped_signature(client, server, http):
    body = issue_body()
    fresh = await http.post(
        f"{server.url}/hooks/stamped",
        content=body,
        headers=signed(body, new_delivery(), timestamp=str(int(time.time()))),
    )
    assert fresh.status_code == 202, fresh.text
    await terminate(client, fresh.json()["workflow_id"])

    stale_ts = str(int(time.time()) - 3600)
    stale = await http.post(
        f"{server.url}/hooks/stamped", content=body, headers=signed(body, d2 := new_delivery(), timestamp=stale_ts)
    )
    assert stale.status_code == 401 and "X-Stakeflow-Timestamp" in stale.json()["error"]

    # A timestamp changed after signing breaks the signature.
    headers = signed(body, d3 := new_delivery(), timestamp=stale_ts)
    headers["X-Stakeflow-Timestamp"] = str(int(time.time()))
    moved = await http.post(f"{server.url}/hooks/stamped", content=body, headers=headers)
    assert moved.status_code == 401 and "does not match" in moved.json()["error"]

    missing = await http.post(
        f"{server.url}/hooks/stamped", content=body, headers=signed(body, d4 := new_delivery(), stamp=False)
    )
    assert missing.status_code == 401 and "requires X-Stakeflow-Timestamp" in missing.json()["error"]
    for d in (d2, d3, d4):
        await assert_not_started(client, f"hook-stamped-{d}")


# --- /runs ---------------------------------------------------------------------------------------


async def test_runs_need_the_api_token(tmp_path, client, server, http):
    r = await http.get(f"{server.url}/runs/anything")
    assert r.status_code == 401
    r = await http.get(f"{server.url}/runs/anything", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = await http.get(
        f"{server.url}/runs/no-such-run-{uuid.uuid4().hex}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert r.status_code == 404 and "no run" in r.json()["error"]
    assert "searched workflow ids and run ids" in r.json()["error"]
    # Without STAKEFLOW_API_TOKEN on the server, lookups are off and the answer says how to enable them.
    s2 = hook_settings(tmp_path, client)
    with ServerThread(create_app(s2, environ={"HOOK_SECRET": SECRET})) as s:
        r = await http.get(f"{s.url}/runs/anything", headers={"Authorization": "Bearer x"})
        assert r.status_code == 401 and "set STAKEFLOW_API_TOKEN" in r.json()["error"]


async def test_running_run_status(client, server, http):
    body = issue_body()
    r = await http.post(f"{server.url}/hooks/gh", content=body, headers=signed(body, new_delivery()))
    wf = r.json()["workflow_id"]
    got = await http.get(f"{server.url}/runs/{wf}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert got.status_code == 200 and got.json()["status"] == "running"
    await terminate(client, wf)


async def test_approve_a_waiting_step_over_http(client, settings, server, http, open_fake):
    open_fake.script(
        agent(
            plan(("Read the notes", "read_file"), ("Write the summary", "write_file")),
            {1: call("read_file", path="notes.txt"), 2: call("write_file", path="summary.txt", content="grew 12%\n")},
            answer="done",
        )
    )
    ws = settings.default_workspace
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "notes.txt").write_text("Revenue grew 12%.\n")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running_workers(client, settings):
        body = issue_body("Summarise notes.txt into summary.txt")
        r = await http.post(f"{server.url}/hooks/auto", content=body, headers=signed(body, new_delivery()))
        wf = r.json()["workflow_id"]
        approve = f"{server.url}/runs/{wf}/approve"
        for _ in range(300):
            run = (await http.get(f"{server.url}/runs/{wf}", headers=auth)).json()
            if run["steps"] and len(run["steps"]) > 1 and run["steps"][1]["status"] == "awaiting_approval":
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"step 2 never waited for approval: {run}")
        assert not (ws / "summary.txt").exists()

        assert (await http.post(approve, json={"step": 2})).status_code == 401
        bad = await http.post(approve, json={"step": "two"}, headers=auth)
        assert bad.status_code == 422 and "'step'" in bad.json()["error"]
        bad = await http.post(approve, json={"step": 2, "decision": "reject"}, headers=auth)
        assert bad.status_code == 422 and "note" in bad.json()["error"]
        wrong = await http.post(approve, json={"step": 9, "note": "x"}, headers=auth)
        assert wrong.status_code == 409 and "step 9 is not waiting for approval" in wrong.json()["error"]
        missing = await http.post(
            f"{server.url}/runs/no-such-{uuid.uuid4().hex}/approve", json={"step": 1}, headers=auth
        )
        assert missing.status_code == 404

        ok = await http.post(approve, json={"step": 2, "note": "looks right", "by": "alice"}, headers=auth)
        assert ok.status_code == 200, ok.text
        assert (ok.json()["decision"], ok.json()["by"], ok.json()["note"]) == ("approved", "alice", "looks right")
        again = await http.post(approve, json={"step": 2}, headers=auth)
        assert again.status_code == 409 and "already approved" in again.json()["error"]
        result = await client.get_workflow_handle(wf, result_type=TaskResult).result()
    assert (ws / "summary.txt").read_text() == "grew 12%\n"
    assert result.steps[1].approval.by == "alice"


# --- OpenAPI -------------------------------------------------------------------------------------


async def test_openapi_document(server, http):
    doc = (await http.get(f"{server.url}/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/hooks/{name}",
        "/runs/{workflow_id}",
        "/runs/{workflow_id}/approve",
        "/runs/{workflow_id}/events",
        "/healthz",
        "/openapi.json",
        "/dashboard",
        "/dashboard/login",
    }
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert method in ("get", "post") and op["responses"], (path, method)
            for p in op.get("parameters", []):
                assert p["in"] in ("path", "header", "query") and ("schema" in p)
                if p["in"] == "path":
                    assert p["required"] is True and "{" + p["name"] + "}" in path
            for resp in op["responses"].values():
                for media in resp.get("content", {}).values():
                    for ref in _refs(media["schema"]):
                        assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"], ref
    # The deliver operation documents the headers the server reads and every answer it gives.
    deliver = doc["paths"]["/hooks/{name}"]["post"]
    assert {"X-Stakeflow-Event", "X-GitHub-Event", "X-Stakeflow-Timestamp"} <= {
        p["name"] for p in deliver["parameters"]
    }
    assert {"200", "202", "400", "401", "404", "413", "422", "429", "502", "503"} == set(deliver["responses"])
    assert [*_refs(deliver["responses"]["202"])] == ["#/components/schemas/Accepted", "#/components/schemas/Ignored"]


def _refs(node):
    """Every $ref under a schema node, in order."""
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


# --- templates and config ------------------------------------------------------------------------


def test_goal_template_rendering():
    payload = {
        "issue": {"title": "T", "labels": [{"name": "bug"}], "n": 3, "draft": False, "body": None, "meta": {"a": 1}}
    }
    assert render_goal("{payload.issue.title} #{payload.issue.n}", payload) == "T #3"
    assert render_goal("{payload.issue.labels.0.name}", payload) == "bug"
    assert render_goal("{{literal}} {payload.issue.draft} [{payload.issue.body}]", payload) == "{literal} false []"
    assert render_goal("{payload.issue.meta}", payload) == '{"a": 1}'
    assert template_fields(GOAL) == ["issue.title", "issue.body"]
    with pytest.raises(MissingField) as e:
        render_goal("{payload.issue.labels.5.name}", payload)
    assert e.value.path == "issue.labels.5"
    # Only JSON keys are reachable: no attributes, no format-spec tricks.
    with pytest.raises(MissingField):
        render_goal("{payload.issue.__class__}", payload)
    for bad in (
        "{payload.issue.title!r}",
        "{payload.issue.title:>10}",
        "{issue.title}",
        "{payload}",
        "{",
        "}",
        "{payload.a[0]}",
        "{0}",
    ):
        with pytest.raises(TemplateError):
            render_goal(bad, payload)


def test_hooks_in_the_config_file(tmp_path, monkeypatch):
    home = tmp_path / "h"
    home.mkdir()
    monkeypatch.setenv("STAKEFLOW_HOME", str(home))
    (home / "stakeflow.toml").write_text(
        '[hooks.github-issues]\nsecret_env = "GITHUB_WEBHOOK_SECRET"\n'
        'goal = "Triage: {payload.issue.title}"\nstakes = "auto"\nsensitivity = "public"\n'
    )
    h = load_settings().hooks["github-issues"]
    assert (h.secret_env, h.max_body_bytes, h.signature, h.tools) == ("GITHUB_WEBHOOK_SECRET", 1024 * 1024, None, None)
    for extra, word in (
        ('secret = "x"\n', "secret"),
        ('goal = "{payload.x"\n', "goal"),
        ('tools = ["nope"]\n', "nope"),
    ):
        text = '[hooks.x]\nsecret_env = "S"\n' + (extra if "goal" in extra else 'goal = "g"\n' + extra)
        (home / "stakeflow.toml").write_text(text)
        with pytest.raises(ConfigError) as e:
            load_settings()
        assert word in str(e.value)


# --- the command ---------------------------------------------------------------------------------


async def test_stakeflow_serve_command(tmp_path, client, http):
    """`stakeflow serve` reads [hooks.*] from stakeflow.toml and the secret from its environment."""
    toml = (
        '[hooks.github-issues]\nsecret_env = "GITHUB_WEBHOOK_SECRET"\n'
        'goal = "Triage this issue and draft a reply: {payload.issue.title}"\nstakes = "low"\n'
    )
    delivery = new_delivery()
    async with serve_process(tmp_path / "serve-home", client, http, toml, GITHUB_WEBHOOK_SECRET=SECRET) as (url, proc):
        body = issue_body("Served-MARKER")
        r = await http.post(f"{url}/hooks/github-issues", content=body, headers=signed(body, delivery, github=True))
        assert r.status_code == 202, r.text
        assert r.json()["workflow_id"] == f"hook-github-issues-{delivery}"
    await terminate(client, f"hook-github-issues-{delivery}")
    stderr = proc.stderr_text
    assert f"delivery={delivery}" in stderr and " 202 " in stderr
    assert SECRET not in stderr and "Served-MARKER" not in stderr
