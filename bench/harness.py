"""What the Temporal benchmarks' ``main()`` does around the measurement: a hermetic environment, the report or the
failure printed, an exit that temporalio cannot crash, and the check that stops a run gone wrong."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn


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
