"""`stakeflow codec-server`: Temporal's remote codec protocol, bearer auth, CORS for the Web UI; read by
Temporal's own CLI and by the Web UI in headless Chromium.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import shutil
import subprocess
import uuid

import httpx
import pytest

from stakeflow.codec_server import create_app
from stakeflow.core.errors import ConfigError
from stakeflow.services import runs
from stakeflow.temporal.codec import EncryptionCodec, data_converter, parse_keys
from tests.agent_script import agent, plan, think
from tests.fakes import FakeOpenAIServer
from tests.support import free_port, make_settings, running_workers
from tests.test_codec import GOAL_MARK, KEYS_ENV, _key, codec_settings, sealed_client
from tests.webhook_support import ServerThread

TOKEN = "codec-token-test-3e2d1c"  # scanned for in every history (tests/test_histories_replay.py)
UI_ORIGIN = "http://127.0.0.1:8233"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def server_settings(tmp_path, **kw):
    values = dict(codec_keys=KEYS_ENV, codec_auth_tokens=f"other-token,{TOKEN}")
    values.update(kw)
    return make_settings(tmp_path, **values)


@pytest.fixture
def codec_server(tmp_path):
    with ServerThread(create_app(server_settings(tmp_path))) as s:
        yield s


def payloads_json(payloads) -> dict:
    return {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                "data": base64.b64encode(p.data).decode(),
            }
            for p in payloads
        ]
    }


async def test_decode_and_encode_with_a_bearer_token(codec_server, caplog):
    caplog.set_level(logging.INFO)
    converter = data_converter(make_settings_keys())
    sealed = await converter.encode([GOAL_MARK])
    auth = {"Authorization": f"Bearer {TOKEN}", "X-Namespace": "default"}
    async with httpx.AsyncClient(base_url=codec_server.url, timeout=10) as http:
        r = await http.post("/decode", json=payloads_json(sealed), headers=auth)
        assert r.status_code == 200, r.text
        [plain] = r.json()["payloads"]
        assert json.loads(base64.b64decode(plain["data"])) == GOAL_MARK
        assert base64.b64decode(plain["metadata"]["encoding"]) == b"json/plain"
        # Mounted under any prefix: only the last path segment counts (the protocol's rule).
        assert (await http.post("/ns/default/decode", json=payloads_json(sealed), headers=auth)).status_code == 200
        # /encode gives what a worker would have written (a signal or update sent from the UI).
        r = await http.post("/encode", json={"payloads": [plain]}, headers=auth)
        assert base64.b64decode(r.json()["payloads"][0]["metadata"]["encoding"]) == b"binary/encrypted"
        assert await converter.decode([_payload(r.json()["payloads"][0])]) == [GOAL_MARK]

        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            r = await http.post("/decode", json=payloads_json(sealed), headers=headers)
            assert r.status_code == 401 and "STAKEFLOW_CODEC_AUTH_TOKENS" in r.json()["error"]
        r = await http.post("/decode", content=b"{not json", headers=auth)
        assert r.status_code == 400
        # Encrypted with a key this server does not hold: 400 with the reason, not a 500.
        stranger = EncryptionCodec(parse_keys(f"2025-06 {_key('gone')}", "elsewhere"))
        r = await http.post(
            "/decode",
            json=payloads_json([stranger.encrypt(converter.payload_converter.to_payloads(["x"])[0])]),
            headers=auth,
        )
        assert r.status_code == 400 and "key id '2025-06', which is not configured here" in r.json()["error"]
    assert GOAL_MARK not in caplog.text and TOKEN not in caplog.text  # payloads and tokens are never logged
    assert any("POST /decode 200" in m and "payloads=1" in m for m in caplog.messages)


def make_settings_keys():
    from stakeflow.config import Settings

    return Settings(codec_keys=KEYS_ENV)


def _payload(obj: dict):
    from temporalio.api.common.v1 import Payload

    return Payload(
        metadata={k: base64.b64decode(v) for k, v in obj["metadata"].items()}, data=base64.b64decode(obj["data"])
    )


async def test_the_8_mb_limit_counts_the_bytes_read_also_of_a_chunked_body(codec_server):
    """A body without Content-Length (chunked) is refused once 8 MB have been read, never decoded whole."""
    from stakeflow.codec_server import MAX_BODY

    converter = data_converter(make_settings_keys())
    sealed = await converter.encode(["x" * 1_000_000 for _ in range(12)])  # ~16 MB of protobuf JSON
    body = json.dumps(payloads_json(sealed)).encode()
    assert len(body) > MAX_BODY
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def chunks():
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    async with httpx.AsyncClient(base_url=codec_server.url, timeout=30) as http:
        r = await http.post("/decode", content=chunks(), headers=auth)
        assert r.status_code == 413 and f"at most {MAX_BODY} bytes" in r.json()["error"]
        r = await http.post("/decode", content=body, headers=auth)  # with Content-Length: refused before reading
        assert r.status_code == 413


async def test_cors_answers_only_the_web_ui_origin(codec_server):
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
    }
    async with httpx.AsyncClient(base_url=codec_server.url, timeout=10) as http:
        ok = await http.options("/decode", headers={"Origin": UI_ORIGIN, **preflight})
        assert ok.status_code == 204
        assert ok.headers["access-control-allow-origin"] == UI_ORIGIN
        assert "Authorization" in ok.headers["access-control-allow-headers"]
        assert ok.headers["access-control-allow-credentials"] == "true"
        other = await http.options("/decode", headers={"Origin": "http://evil.example", **preflight})
        assert other.status_code == 403 and "access-control-allow-origin" not in other.headers
        # The answer to an allowed origin carries the header the browser checks; another origin's does not.
        body = payloads_json([])
        r = await http.post("/decode", json=body, headers={"Origin": UI_ORIGIN, "Authorization": f"Bearer {TOKEN}"})
        assert r.headers["access-control-allow-origin"] == UI_ORIGIN
        r = await http.post(
            "/decode", json=body, headers={"Origin": "http://evil.example", "Authorization": f"Bearer {TOKEN}"}
        )
        assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"codec_auth_tokens": None}, "needs bearer tokens: set STAKEFLOW_CODEC_AUTH_TOKENS"),
        ({"codec_keys": None}, "has no keys: set STAKEFLOW_CODEC_KEYS_FILE"),
    ],
)
def test_it_refuses_to_start_without_tokens_or_keys(tmp_path, kw, needle):
    with pytest.raises(ConfigError) as e:
        create_app(server_settings(tmp_path, **kw))
    assert needle in str(e.value)


async def sealed_run(client, tmp_path, goal: str) -> str:
    """A completed run whose history is encrypted; its workflow id."""
    with FakeOpenAIServer(model="qwen-test") as open_fake:
        open_fake.script(agent(plan(("Think", None)), {1: think("thought")}, answer="decoded answer"))
        settings = codec_settings(
            tmp_path, client, open_base_url=open_fake.url, open_model="qwen-test", open_dialect="vllm"
        )
        sealed = await sealed_client(settings)
        async with running_workers(sealed, settings):
            handle = await runs.start_run(sealed, settings, runs.build_request(settings, goal))
            await handle.result()
    return handle.id


async def test_temporal_cli_reads_a_sealed_history_through_the_codec_server(client, tmp_path, codec_server):
    goal = f"{GOAL_MARK} {uuid.uuid4().hex[:6]}"
    wf_id = await sealed_run(client, tmp_path, goal)
    show = [
        "temporal",
        "workflow",
        "show",
        "--workflow-id",
        wf_id,
        "--address",
        client.service_client.config.target_host,
        "--output",
        "json",
    ]
    plain = subprocess.run(show, capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0, plain.stderr
    assert goal not in plain.stdout
    decoded = subprocess.run(
        [*show, "--codec-endpoint", codec_server.url, "--codec-auth", f"Bearer {TOKEN}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert decoded.returncode == 0, decoded.stderr
    assert not any(
        goal in t for t in payload_texts(plain.stdout)
    )  # without the codec server: ciphertext (search attributes aside)
    texts = payload_texts(decoded.stdout)
    assert any(goal in t for t in texts) and any("decoded answer" in t for t in texts)


def payload_texts(history_json: str) -> list[str]:
    """The text of every json/plain payload in a `temporal workflow show --output json` history."""
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            metadata = node.get("metadata")
            encoding = metadata.get("encoding") if isinstance(metadata, dict) else None
            if "data" in node and isinstance(encoding, str) and base64.b64decode(encoding) == b"json/plain":
                found.append(base64.b64decode(node["data"]).decode(errors="replace"))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(history_json))
    return found


# --- the Web UI ------------------------------------------------------------------------------------


@pytest.fixture
async def ui_server():
    """A dev server whose Web UI is told the codec endpoint (`--ui-codec-endpoint`), as an operator would."""
    from temporalio.testing import WorkflowEnvironment

    from stakeflow.local.services import dev_server_args

    codec_port, ui_port = free_port(), free_port()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=shutil.which("temporal"),
        ip="127.0.0.1",
        ui=True,
        ui_port=ui_port,
        dev_server_extra_args=dev_server_args(log_level="error", ui_codec_endpoint=f"http://127.0.0.1:{codec_port}"),
    )
    try:
        yield env, codec_port, ui_port
    finally:
        await env.shutdown()


async def page_text(url: str, codec_url: str, token: str | None, expect: str | None = None) -> str:
    """The rendered page's text in the system's Chromium (Playwright drives it; no browser is downloaded).

    With ``token``, the browser adds ``Authorization: Bearer <token>`` to its codec requests, as the Web UI
    does for a signed-in user when "pass access token" is on (the dev server's UI has no sign-in).
    """
    from playwright.async_api import TimeoutError as PlaywrightTimeout
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = await browser.new_page()
            if token:

                async def add_token(route):
                    headers = {**route.request.headers, "authorization": f"Bearer {token}"}
                    await route.continue_(headers=headers)

                await page.route(f"{codec_url}/**", add_token)
            await page.goto(url)
            await page.wait_for_load_state("networkidle")
            await asyncio.sleep(1.5)
            if expect is not None:  # the decoded text can take longer to show on a loaded machine
                with contextlib.suppress(PlaywrightTimeout):
                    await page.get_by_text(expect).first.wait_for(timeout=20_000)
            return await page.inner_text("body")
        finally:
            await browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
async def test_the_web_ui_shows_the_decoded_goal_to_those_allowed(tmp_path, ui_server, caplog):
    env, codec_port, ui_port = ui_server
    caplog.set_level(logging.INFO, logger="stakeflow.codec_server")
    settings = server_settings(tmp_path, codec_cors_origins=[f"http://127.0.0.1:{ui_port}"])
    goal = f"{GOAL_MARK} {uuid.uuid4().hex[:6]}"
    wf_id = await sealed_run(env.client, tmp_path, goal)
    codec_url = f"http://127.0.0.1:{codec_port}"
    url = f"http://127.0.0.1:{ui_port}/namespaces/default/workflows/{wf_id}"

    server = ServerThread(create_app(settings))
    server.port = server.server.config.port = codec_port  # the port the dev server's UI was told
    with server:
        allowed = await page_text(url, codec_url, TOKEN, expect=goal)
        refused = await page_text(url, codec_url, None)
    (tmp_path / "allowed.txt").write_text(allowed)
    (tmp_path / "refused.txt").write_text(refused)
    assert goal in allowed, "the Web UI did not show the decoded goal (see allowed.txt)"
    assert wf_id in refused and goal not in refused
    decodes = [m for m in caplog.messages if "/decode" in m]
    assert any(" 200 " in m and f"origin=http://127.0.0.1:{ui_port}" in m for m in decodes)
    assert any(" 401 " in m for m in decodes)  # the visit without a token was refused


def test_stakeflow_up_s_dev_server_tells_its_web_ui_the_codec_endpoint(tmp_path, monkeypatch):
    """STAKEFLOW_UI_CODEC_ENDPOINT: the local Web UI decodes through `stakeflow codec-server` (its own settings say so)."""
    from stakeflow.config import load_settings
    from stakeflow.local import services

    monkeypatch.setenv("STAKEFLOW_TEMPORAL_PORT", str(free_port()))
    monkeypatch.setenv("STAKEFLOW_UI_PORT", str(free_port()))
    monkeypatch.setenv("STAKEFLOW_UI_CODEC_ENDPOINT", "http://127.0.0.1:8081")
    settings = load_settings()
    try:
        services.ensure_temporal(settings)
        ui = httpx.get(f"http://127.0.0.1:{settings.ui_port}/api/v1/settings", timeout=10).json()
    finally:
        services.stop_all(settings)
    assert ui["Codec"]["Endpoint"] == "http://127.0.0.1:8081"
