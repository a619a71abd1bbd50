"""What the webhook test modules share: a real uvicorn server in a thread, hooks, signed headers,
and the check that a delivery started nothing in Temporal.

Fixtures are defined here and imported by name into each test module (``from tests.webhook_support
import http, server, settings``), so every module runs against the same kind of server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import uvicorn
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from stakeflow.config import HookConfig
from stakeflow.webhooks import create_app, sign
from tests.fakes import FakeOpenAIServer
from tests.support import free_port, make_settings

SECRET = "whsec-test-SECRET-5c4b3a"
TOKEN = "api-token-test-7d6e5f"
GOAL = "Triage this issue: {payload.issue.title}\n\n{payload.issue.body}"
ENVIRON = {"HOOK_SECRET": SECRET, "STAKEFLOW_API_TOKEN": TOKEN}


class ServerThread:
    """uvicorn serving an app on 127.0.0.1 in its own thread (and event loop)."""

    def __init__(self, app) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_config=None, access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def hook(**kw) -> HookConfig:
    values = dict(secret_env="HOOK_SECRET", goal=GOAL, stakes="low")
    values.update(kw)
    return HookConfig(**values)


def hook_settings(tmp_path, client: Client, **kw):
    hooks = kw.pop("hooks", None) or {
        "gh": hook(),
        "gh-only": hook(signature="github"),
        "stamped": hook(require_timestamp=True, timestamp_tolerance_s=60),
        "unstamped": hook(require_timestamp=False),
        "small": hook(max_body_bytes=1000),
        "unset": hook(secret_env="NOT_SET_ANYWHERE"),
        "auto": hook(stakes="auto"),
        "issues": hook(events=["issues"], actions=["opened", "reopened"]),
        "triage-agent": hook(agent="triage"),
        "brief": hook(timestamp_tolerance_s=1),
    }
    values = dict(temporal_address=client.service_client.config.target_host, hooks=hooks)
    values.update(kw)
    return make_settings(tmp_path, **values)


@pytest.fixture
def open_fake():
    with FakeOpenAIServer(model="qwen-test") as server:
        yield server


@pytest.fixture
def settings(tmp_path, client, open_fake):
    return hook_settings(tmp_path, client, open_base_url=open_fake.url, open_model="qwen-test", open_dialect="vllm")


@pytest.fixture
def server(settings):
    with ServerThread(create_app(settings, environ=ENVIRON)) as s:
        yield s


@pytest.fixture
async def http():
    async with httpx.AsyncClient(timeout=30) as c:
        yield c


def issue_body(title="Crash on start", body="It crashes.", action="opened", **extra) -> bytes:
    """A new issue's payload. Each call's bytes differ (as real events' do, by their ids): the same
    signed bytes again are a replay, which the server answers as a duplicate of their first run."""
    issue = {"id": uuid.uuid4().int % 10**9, "title": title, "body": body, **extra}
    return json.dumps({"action": action, "issue": issue}).encode()


def signed(
    body: bytes,
    delivery: str | None = None,
    *,
    github=False,
    timestamp: str | None = None,
    stamp: bool = True,
    event: str | None = None,
    secret: str = SECRET,
) -> dict[str, str]:
    """Headers of a correctly signed delivery.

    Stakeflow's scheme is timestamped with the current time unless ``timestamp`` is given or ``stamp``
    is False (hooks require the timestamp by default); GitHub's scheme has none. ``event`` goes in
    X-GitHub-Event or X-Stakeflow-Event, after the scheme.
    """
    headers = {"Content-Type": "application/json"}
    if github:
        headers["X-Hub-Signature-256"] = sign(secret.encode(), body)
    else:
        if timestamp is None and stamp:
            timestamp = str(int(time.time()))
        headers["X-Stakeflow-Signature-256"] = sign(secret.encode(), body, timestamp)
        if timestamp is not None:
            headers["X-Stakeflow-Timestamp"] = timestamp
    if delivery:
        headers["X-GitHub-Delivery" if github else "X-Stakeflow-Delivery"] = delivery
    if event:
        headers["X-GitHub-Event" if github else "X-Stakeflow-Event"] = event
    return headers


def new_delivery() -> str:
    return f"d-{uuid.uuid4().hex[:12]}"


async def assert_not_started(client: Client, workflow_id: str) -> None:
    with pytest.raises(RPCError) as e:
        await client.get_workflow_handle(workflow_id).describe()
    assert e.value.status == RPCStatusCode.NOT_FOUND
    found = [w async for w in client.list_workflows(f'WorkflowId = "{workflow_id}"')]
    assert found == []


async def terminate(client: Client, workflow_id: str) -> None:
    await client.get_workflow_handle(workflow_id).terminate("test cleanup")


@contextlib.asynccontextmanager
async def serve_process(home: Path, client: Client, http: httpx.AsyncClient, toml: str, **env: str):
    """`stakeflow serve` in its own process, configured by ``toml``; yields (url, process).

    Its stderr is collected in ``process.stderr_text`` once it has stopped.
    """
    from tests.support import worker_env

    home.mkdir(parents=True, exist_ok=True)
    (home / "stakeflow.toml").write_text(toml)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stakeflow", "serve", "--port", str(port)],
        env=worker_env(home, client, f"t{uuid.uuid4().hex[:8]}", **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(400):
            try:
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.communicate()
            await asyncio.sleep(0.05)
        yield url, proc
    finally:
        proc.terminate()
        _, proc.stderr_text = proc.communicate(timeout=15)
