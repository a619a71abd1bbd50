"""What the tests share besides fixtures: paths, ports, settings, and real workers (in-process or spawned).

Imported by the test modules that need them (``from tests.support import ...``); tests/conftest.py keeps only
the fixtures and pytest's hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from pydantic import SecretStr
from temporalio.client import Client

from stakeflow.agents.types import Dialect, Progress
from stakeflow.config import Settings
from stakeflow.core.contracts import PROGRESS_QUERY

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_WORKSPACE = REPO / "examples" / "workspace"


_HANDED_OUT: set[int] = set()


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for ports it picks itself (outgoing connections, binds to port 0)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A free port on 127.0.0.1 for a server a test starts: below the kernel's ephemeral range, and never one this
    session handed out before.

    A port the kernel picked (a bind to port 0, closed again) is ephemeral: until the child process binds it, any
    outgoing connection or another bind to port 0 may take it, and the child fails with "Address already in use"
    (seen in CI: a topology worker's metrics port, tests/test_topology.py).
    """
    low, _ = ephemeral_ports()
    first = max(1024, low - 16384)
    for _ in range(1000):
        port = random.randrange(first, low)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port on 127.0.0.1 in {first}-{low - 1}")


UI_PORT = free_port()  # the session dev server's Web UI (tests/test_web_ui.py opens it in Chromium)


def make_settings(tmp_path: Path, **overrides) -> Settings:
    """Settings for one test: its own home, queue prefix and (usually fake) endpoints."""
    values = dict(home=tmp_path / "home", queue_prefix=f"t{uuid.uuid4().hex[:8]}")
    values.update(overrides)
    return Settings(**values)


def model_activities(tmp_path: Path, open_url: str, dialect: Dialect = "vllm", api_key: str | None = None):
    """call_model's holder from its parameters alone, as a team's own worker builds it (no Settings): the open
    endpoint at ``open_url`` serving ``served-model``, no frontier key."""
    from stakeflow.activities.models import ModelActivities
    from stakeflow.activities.parameters import FrontierEndpoint, ModelParameters, OpenEndpoint
    from stakeflow.prices import PriceTable

    return ModelActivities(
        ModelParameters(
            open=OpenEndpoint(
                url=open_url,
                model="served-model",
                api_key=SecretStr(api_key) if api_key else None,
                dialect=dialect,
                timeout_s=30.0,
                embedded=False,
            ),
            frontier=FrontierEndpoint(model="claude-sonnet-4-6", api_key=None, base_url=None, timeout_s=30.0),
            prices=PriceTable.from_config({}),
            traces_path=tmp_path / "traces.duckdb",
        )
    )


def open_settings(tmp_path: Path, client: Client, open_fake, **overrides) -> Settings:
    """Settings for processes the test starts itself against the test's dev server (``client``'s address, so a
    Client.connect or a webhook server finds it), on the scripted open model ``open_fake``."""
    return make_settings(
        tmp_path,
        temporal_address=client.service_client.config.target_host,
        open_base_url=open_fake.url,
        open_model="qwen-test",
        open_dialect="vllm",
        **overrides,
    )


@contextlib.asynccontextmanager
async def running_workers(client: Client, settings: Settings, roles=("workflows", "open", "frontier", "tools")):
    """Real workers on the settings' queues for the duration of the block: `stakeflow worker`'s own (run_workers: one
    Temporal Worker per queue, each given its role's workflows and activities by StakeflowPlugin)."""
    from stakeflow.workers.main import run_workers

    stop = asyncio.Event()
    task = asyncio.create_task(run_workers(client, settings, roles, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def wait_for_approval(handle, step: int) -> Progress:
    """The run's progress once ``step`` waits for approval (fails the test after 30 s)."""
    import pytest

    for _ in range(300):
        p = await handle.query(PROGRESS_QUERY, result_type=Progress)
        if step in p.awaiting_approval:
            return p
        await asyncio.sleep(0.1)
    pytest.fail(f"step {step} never waited for approval")


def open_endpoint_env(url: str, model: str = "qwen-test") -> dict[str, str]:
    """A worker's variables for a scripted open model at ``url`` (tests/fakes), spoken to as vLLM."""
    return {"STAKEFLOW_OPEN_BASE_URL": url, "STAKEFLOW_OPEN_MODEL": model, "STAKEFLOW_OPEN_DIALECT": "vllm"}


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


def spawn_worker(env: dict[str, str], queues: str | None = None, args: tuple[str, ...] = ()):
    """A real `stakeflow worker` process (all queues, or the comma-separated roles ``queues``), logging to $STAKEFLOW_HOME/logs/test-worker.log.

    Not to a pipe: a busy worker would fill it and block on its own logging.
    """
    log_dir = Path(env["STAKEFLOW_HOME"]) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "test-worker.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "stakeflow", "worker", *(["--queues", queues] if queues else []), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def worker_log(env: dict[str, str]) -> str:
    return (Path(env["STAKEFLOW_HOME"]) / "logs" / "test-worker.log").read_text(errors="replace")
