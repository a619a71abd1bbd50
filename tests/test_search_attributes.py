"""A namespace without stakeflow's search attributes: workers refuse to start (instead of runs hanging),
and `stakeflow admin setup-search-attributes` fixes it, idempotently."""

from __future__ import annotations

import asyncio
import shutil

from click.testing import CliRunner
from temporalio.testing import WorkflowEnvironment

from stakeflow.cli import cli
from stakeflow.core.contracts import SEARCH_ATTRIBUTES
from stakeflow.local.services import dev_server_command


async def test_worker_refuses_then_admin_registers(tmp_path, monkeypatch):
    bare = await WorkflowEnvironment.start_local(
        dev_server_existing_path=shutil.which("temporal"),
        ip="127.0.0.1",
        dev_server_extra_args=["--log-level", "error"],
    )
    try:
        monkeypatch.setenv("STAKEFLOW_TEMPORAL_ADDRESS", bare.client.service_client.config.target_host)
        runner = CliRunner()

        def invoke(*args):  # in a thread: the CLI runs its own event loop
            return runner.invoke(cli, list(args), catch_exceptions=False)

        refused = await asyncio.to_thread(invoke, "worker")
        assert refused.exit_code == 1
        assert "has wrong search attributes (StakeflowStakes is missing;" in refused.output
        assert "stakeflow admin setup-search-attributes" in refused.output

        added = await asyncio.to_thread(invoke, "admin", "setup-search-attributes")
        assert added.exit_code == 0, added.output
        assert added.output.startswith("added ") and all(name in added.output for name in SEARCH_ATTRIBUTES)
        again = await asyncio.to_thread(invoke, "admin", "setup-search-attributes")
        assert again.exit_code == 0 and "already present" in again.output
    finally:
        await bare.shutdown()


async def test_a_mistyped_search_attribute_is_refused_by_type(tmp_path, monkeypatch):
    """Registered under the right name but the wrong type, it would still fail every workflow task."""
    flags = [
        f
        for name, kind in SEARCH_ATTRIBUTES.items()
        for f in ("--search-attribute", f"{name}={'Keyword' if name == 'StakeflowCostUsd' else kind}")
    ]
    bare = await WorkflowEnvironment.start_local(
        dev_server_existing_path=shutil.which("temporal"),
        ip="127.0.0.1",
        dev_server_extra_args=["--log-level", "error", *flags],
    )
    try:
        monkeypatch.setenv("STAKEFLOW_TEMPORAL_ADDRESS", bare.client.service_client.config.target_host)
        refused = await asyncio.to_thread(CliRunner().invoke, cli, ["worker"], catch_exceptions=False)
        assert refused.exit_code == 1
        assert "StakeflowCostUsd is Keyword, not Double" in refused.output
    finally:
        await bare.shutdown()


async def test_a_worker_that_cannot_check_the_attributes_refuses_clearly(client, monkeypatch):
    """When the server will not say (here: the namespace does not exist), the worker does not guess."""
    monkeypatch.setenv("STAKEFLOW_TEMPORAL_ADDRESS", client.service_client.config.target_host)
    monkeypatch.setenv("STAKEFLOW_TEMPORAL_NAMESPACE", "no-such-namespace")
    refused = await asyncio.to_thread(CliRunner().invoke, cli, ["worker"], catch_exceptions=False)
    assert refused.exit_code == 1
    assert "cannot check stakeflow's search attributes on namespace no-such-namespace" in refused.output
    assert "STAKEFLOW_CHECK_SEARCH_ATTRIBUTES=false" in refused.output


def test_up_registers_attributes_an_older_dev_server_database_lacks(tmp_path):
    """`temporal server start-dev` registers its --search-attribute flags only when it creates the database,
    so a database from an earlier release lacks attributes added since: `up` adds them (idempotently)."""
    import os
    import subprocess
    import sys
    import time

    from tests.support import free_port

    home = tmp_path / "home"
    home.mkdir()
    port, ui = free_port(), free_port()
    older = [
        f
        for name, kind in SEARCH_ATTRIBUTES.items()
        if name != "StakeflowAgent"
        for f in ("--search-attribute", f"{name}={kind}")
    ]
    server = subprocess.Popen(
        [
            *dev_server_command(
                port, ui_port=ui, db_file=home / "temporal.db", log_level="error", search_attributes=False
            ),
            *older,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(3)
    server.terminate()
    server.wait(30)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAKEFLOW_")}
    env.update(
        STAKEFLOW_HOME=str(home),
        STAKEFLOW_TEMPORAL_PORT=str(port),
        STAKEFLOW_UI_PORT=str(ui),
        STAKEFLOW_OPEN_BASE_URL="http://127.0.0.1:9/v1",
    )
    cmd = [sys.executable, "-m", "stakeflow"]
    try:
        # The open endpoint is unreachable, so `up` fails after Temporal: enough to see the registration.
        subprocess.run([*cmd, "up"], env=env, capture_output=True, text=True, timeout=120)
        listed = subprocess.run(
            [shutil.which("temporal"), "operator", "search-attribute", "list", "--address", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        subprocess.run([*cmd, "down"], env=env, capture_output=True, text=True, timeout=60)
    assert "StakeflowAgent" in listed.stdout, listed.stdout + listed.stderr
