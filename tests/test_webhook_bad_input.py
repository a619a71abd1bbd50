"""The webhook server and input it must refuse: each bad request gets its 4xx, says what is wrong and starts
nothing, and no input at all (a fuzz of bodies, signatures and headers) gets a 5xx. Real uvicorn on a free port, the
session's dev server."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from stakeflow.webhooks import create_app, sign
from tests.support import free_port, make_settings
from tests.webhook_support import (  # noqa: F401  (fixtures are used by name)
    ENVIRON,
    SECRET,
    TOKEN,
    ServerThread,
    assert_not_started,
    hook,
    http,
    issue_body,
    new_delivery,
    open_fake,
    server,
    settings,
    signed,
)

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


# --- fuzzing ------------------------------------------------------------------------------------


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
