"""The webhook server: real uvicorn on a free port, the session's dev server, real workers."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import uuid

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from stakeflow.agents.types import TaskResult
from stakeflow.config import MissingField, TemplateError, load_settings, render_goal, template_fields
from stakeflow.core.errors import ConfigError
from stakeflow.webhooks import create_app, sign, workflow_id_for
from tests.agent_script import agent, call, plan, think
from tests.support import free_port, make_settings, running_workers
from tests.webhook_support import (  # noqa: F401  (fixtures are used by name)
    ENVIRON,
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


# --- bad input -----------------------------------------------------------------------------------


async def test_unknown_hook_is_404(server, http):
    body = issue_body()
    r = await http.post(f"{server.url}/hooks/nope", content=body, headers=signed(body, new_delivery()))
    assert r.status_code == 404 and "[hooks.nope]" in r.json()["error"] and r.json()["request_id"]


@pytest.mark.parametrize("how", ["missing", "wrong secret", "malformed", "tampered body"])
async def test_bad_signature_is_401_and_starts_nothing(client, server, http, how):
    delivery = new_delivery()
    body = issue_body()
    headers = signed(body, delivery)
    if how == "missing":
        del headers["X-Stakeflow-Signature-256"]
    elif how == "wrong secret":
        headers = signed(body, delivery, secret="not-the-secret")
    elif how == "malformed":
        headers["X-Stakeflow-Signature-256"] = "sha1=abc"
    else:
        body = issue_body(title="something else")
    r = await http.post(f"{server.url}/hooks/gh", content=body, headers=headers)
    assert r.status_code == 401, r.text
    assert "signature" in r.json()["error"]
    await assert_not_started(client, f"hook-gh-{delivery}")


async def test_unset_secret_refuses_deliveries(server, http):
    body = issue_body()
    r = await http.post(f"{server.url}/hooks/unset", content=body, headers=signed(body, new_delivery()))
    assert r.status_code == 503 and "NOT_SET_ANYWHERE is not set" in r.json()["error"]


async def test_invalid_json_is_400(client, server, http):
    body = b'{"issue": {"title": '
    delivery = new_delivery()
    r = await http.post(f"{server.url}/hooks/gh", content=body, headers=signed(body, delivery))
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    await assert_not_started(client, f"hook-gh-{delivery}")


async def test_missing_template_field_is_422_naming_it(client, server, http):
    body = json.dumps({"issue": {"title": "no body here"}}).encode()
    delivery = new_delivery()
    r = await http.post(f"{server.url}/hooks/gh", content=body, headers=signed(body, delivery))
    assert r.status_code == 422
    assert "'issue.body'" in r.json()["error"]
    await assert_not_started(client, f"hook-gh-{delivery}")


async def test_body_over_the_limit_is_413(client, server, http):
    body = issue_body(body="x" * 2000)
    delivery = new_delivery()
    r = await http.post(f"{server.url}/hooks/small", content=body, headers=signed(body, delivery))
    assert r.status_code == 413 and "1000 bytes" in r.json()["error"]
    await assert_not_started(client, f"hook-small-{delivery}")


def _raw_exchange(port: int, head: bytes, body_part: bytes) -> bytes:
    """Send a request head and only part of its body, then read whatever the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + body_part)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_413_is_sent_before_the_declared_body_arrives(server):
    # Claims 50 MB, sends 10 bytes: the answer comes without waiting for the rest.
    head = (
        b"POST /hooks/gh HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Stakeflow-Signature-256: sha256=" + b"0" * 64 + b"\r\nContent-Length: 50000000\r\n\r\n"
    )
    answer = _raw_exchange(server.port, head, b'{"issue": ')
    assert answer.startswith(b"HTTP/1.1 413")


def test_413_for_a_chunked_body_is_counted_while_streaming(server):
    head = (
        b"POST /hooks/small HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"a" * 600
    part = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 2  # 1200 bytes, no terminating chunk
    answer = _raw_exchange(server.port, head, part)
    assert answer.startswith(b"HTTP/1.1 413")


async def test_temporal_unreachable_is_503_with_retry_after(tmp_path, client, http):
    dead = make_settings(tmp_path, temporal_address=f"127.0.0.1:{free_port()}", hooks={"gh": hook()})
    with ServerThread(create_app(dead, environ=ENVIRON)) as s:
        body = issue_body()
        r = await http.post(f"{s.url}/hooks/gh", content=body, headers=signed(body, new_delivery()))
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "5" and "unreachable" in r.json()["error"]
        h = await http.get(f"{s.url}/healthz")
        assert h.status_code == 503 and h.headers["Retry-After"] == "5"


async def test_healthz_with_temporal_up(server, http):
    r = await http.get(f"{server.url}/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


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


# --- OpenAPI and fuzzing -------------------------------------------------------------------------


async def test_openapi_document(server, http):
    doc = (await http.get(f"{server.url}/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/hooks/{name}",
        "/runs/{workflow_id}",
        "/runs/{workflow_id}/approve",
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


_text = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)


@st.composite
def deliveries(draw):
    name = draw(
        st.sampled_from(
            ["gh", "gh-only", "stamped", "unstamped", "small", "issues", "brief", "nope", "%2e%2e", "gh%00"]
        )
    )
    kind = draw(st.sampled_from(["json", "bytes", "issue", "deep"]))
    if kind == "bytes":
        body = draw(st.binary(max_size=1500))
    elif kind == "json":
        body = json.dumps(
            draw(
                st.recursive(
                    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                    max_leaves=10,
                )
            )
        ).encode()
    elif kind == "deep":
        depth = draw(st.integers(min_value=90, max_value=5000))
        body = draw(
            st.sampled_from([b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth, b"[" * depth])
        )
    else:
        issue = draw(
            st.dictionaries(
                st.sampled_from(["title", "body", "x"]), st.none() | st.text(max_size=30) | st.integers(), max_size=3
            )
        )
        action = draw(st.none() | st.sampled_from(["opened", "reopened", "labeled"]) | st.integers())
        body = json.dumps({"issue": issue, **({} if action is None else {"action": action})}).encode()
    headers: dict[str, str] = {}
    sig = draw(st.sampled_from(["valid", "fresh", "github", "random", "none"]))
    timestamp = draw(st.none() | st.sampled_from([str(int(time.time())), "0", "-5", "99999999999999"]) | _text)
    if sig == "fresh":  # what a correct sender sends: a valid signature over the current time
        sig, timestamp = "valid", str(int(time.time()))
    if sig == "valid":
        headers["X-Stakeflow-Signature-256"] = sign(SECRET.encode(), body, timestamp)
    elif sig == "github":
        headers["X-Hub-Signature-256"] = sign(SECRET.encode(), body)
    elif sig == "random":
        headers["X-Stakeflow-Signature-256"] = draw(_text)
    if timestamp is not None:
        headers["X-Stakeflow-Timestamp"] = timestamp
    if draw(st.booleans()):
        headers[draw(st.sampled_from(["X-Stakeflow-Delivery", "X-GitHub-Delivery"]))] = draw(_text) or "x"
    event = draw(st.none() | st.sampled_from(["ping", "issues", "issue_comment"]) | _text)
    if event:
        headers[draw(st.sampled_from(["X-Stakeflow-Event", "X-GitHub-Event"]))] = event
    return name, body, headers


def test_fuzz_no_5xx(settings):
    with ServerThread(create_app(settings, environ=ENVIRON)) as s, httpx.Client(timeout=30) as http:
        started: list[str] = []
        answered: set[str] = set()  # which kinds of 2xx answer the fuzz reached

        @hsettings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(deliveries())
        def check(case):
            name, body, headers = case
            r = http.post(f"{s.url}/hooks/{name}", content=body, headers=headers)
            assert r.status_code < 500, (r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/json")
            if r.status_code == 202 and "workflow_id" in r.json():
                started.append(r.json()["workflow_id"])
            elif r.status_code < 300:
                answered.add("ping" if r.status_code == 200 else "ignored")
            a = http.post(
                f"{s.url}/runs/{name}/approve", content=body, headers={**headers, "Authorization": f"Bearer {TOKEN}"}
            )
            assert a.status_code < 500, (a.status_code, a.text)
            for path in ("/runs/" + name, "/healthz"):
                g = http.get(f"{s.url}{path}", headers={k: v for k, v in headers.items() if k.startswith("X-")})
                assert g.status_code < 500, (path, g.status_code, g.text)

        check()
        assert started, "the fuzz never produced an accepted delivery: the generator is too weak"
        assert answered == {"ping", "ignored"}, f"the fuzz reached only {answered}: the generator is too weak"


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
