"""What the workflow tests share: the scripted model servers as fixtures, a copy of the example workspace, settings
that point at them, and one run of a task on real workers (tests/test_workflow.py and the tests that run tasks the
same way)."""

from __future__ import annotations

import uuid

import pytest

from stakeflow.services import runs
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer
from tests.support import EXAMPLE_WORKSPACE, free_port, make_settings, running_workers

SECRET_KEY = "sk-ant-test-SECRET-9f8e7d"


@pytest.fixture
def open_fake():
    with FakeOpenAIServer(model="qwen-test") as server:
        yield server


@pytest.fixture
def frontier_fake():
    with FakeAnthropicServer() as server:
        yield server


@pytest.fixture
def workspace(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    for f in EXAMPLE_WORKSPACE.iterdir():
        (ws / f.name).write_bytes(f.read_bytes())
    return ws


def settings_for(tmp_path, open_fake, frontier_fake=None, **kw):
    extra = {}
    if frontier_fake is not None:
        extra = {
            "anthropic_api_key": SECRET_KEY,
            "anthropic_base_url": frontier_fake.url,
            "frontier_model": "claude-test",
        }
    values = {"open_base_url": open_fake.url, "open_model": "qwen-test", "open_dialect": "vllm", **extra, **kw}
    return make_settings(tmp_path, **values)


def open_down_settings(tmp_path, frontier_fake, **kw):
    """Settings whose open endpoint nobody listens on (a free port) and whose frontier is ``frontier_fake``, with two
    quick attempts per model call, so the fallback (or the failure) comes at once."""
    values = {
        "open_base_url": f"http://127.0.0.1:{free_port()}/v1",
        "open_model": "qwen-test",
        "open_dialect": "vllm",
        "anthropic_api_key": SECRET_KEY,
        "anthropic_base_url": frontier_fake.url,
        **kw,
    }
    settings = make_settings(tmp_path, **values)
    settings.policy.model_max_attempts = 2
    settings.policy.model_retry_initial_s = 0.1
    return settings


async def run_task(client, settings, goal, **kw):
    req = runs.build_request(settings, goal, **kw)
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req, f"test-{uuid.uuid4().hex[:8]}")
        return await handle.result()
