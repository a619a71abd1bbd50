"""Every benchmark still runs its scenario, at the smallest size: exit 0 and its table printed.

Benchmarks check their own runs (the right answer, the counts of model calls, tool calls and activities) and stop
when one goes wrong, but nothing ran them between measurements: when the answer check began re-asking
overhead.py's scripted answer ("the answer" to a "Compute ..." goal), the benchmark stopped on its own check and
nobody knew until the next measurement. No figure is asserted here (benchmarks measure, tests do not time).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# At collection, not inside the test: a module first imported while a workflow thread of an earlier test's worker
# compiles sandbox code can fail with CPython 3.11's "SystemError: AST constructor recursion depth mismatch" (CI of
# 9b923e4, when this test imported bench.overhead and with it pydantic-ai's Temporal integration). No worker runs yet.
from bench.overhead_report import Variant, spread_line

REPO = Path(__file__).resolve().parents[1]

SMALLEST = [
    ("overhead.py", ["--runs", "1", "--warmup", "0", "--steps", "2"], "with (fc) on stakeflow's sandbox too"),
    (
        "overhead.py",
        ["--runs", "1", "--warmup", "0", "--steps", "2", "--traced"],
        "spans reached the trace store",
    ),
    (
        "concurrency.py",
        [
            "--n",
            "2",
            "--latency",
            "0.05",
            "--calls",
            "3",
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--variants",
            "sf,pai,floor",
        ],
        "(sf) stakeflow, 1 worker process",
    ),
    ("segments.py", ["--runs", "1", "--warmup", "0", "--steps", "2"], "Temporal: act run - body"),
    ("model_request.py", ["--calls", "5", "--warmup", "1", "--rounds", "1"], "bare openai client"),
    ("traces.py", ["--spans", "2000", "--big", "0", "--repeat", "1"], "failed runs' cost"),
    ("budgets.py", ["--runs", "3", "--budget-runs", "2", "--latency", "0.05"], "0.0192"),
    ("stream.py", ["--only", "scripted", "--runs", "1"], "stream signals"),
    ("shadow.py", ["--rounds", "1", "--latency", "0.05"], "median difference"),
    ("webhooks.py", ["--rounds", "1", "--n", "5"], "direct-start rate"),
    ("report.py", ["--spans", "2000", "--repeat", "1"], "page size"),
    ("prompt_cache.py", ["--steps", "3"], "uncached"),
    ("tasks.py", ["--verify"], "every expected answer agrees with the data"),
]


@pytest.mark.parametrize(
    ("script", "args", "printed"), SMALLEST, ids=[s + (" --traced" if "--traced" in a else "") for s, a, _ in SMALLEST]
)
def test_the_benchmark_runs_its_scenario(script: str, args: list[str], printed: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # temporal, stakeflow
        "STAKEFLOW_HOME": str(tmp_path / "home"),
        "TMPDIR": str(tmp_path),
    }
    env.pop("ANTHROPIC_API_KEY", None)
    done = subprocess.run(
        [sys.executable, f"bench/{script}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert printed in output, output[-4000:]


def test_the_overhead_verdict_shows_how_far_its_rounds_agree() -> None:
    """One invocation's wall ratio spans 0.28-0.83 for the same code (bench/README.md): the verdict shows its rounds'."""
    variants = {key: Variant(key, key, "") for key in ("b", "fb", "c", "fc")}
    variants["b"].totals_ms, variants["fb"].totals_ms = [300.0, 200.0], [100.0, 100.0]
    variants["c"].totals_ms, variants["fc"].totals_ms = [200.0, 130.0], [100.0, 100.0]  # rounds: 0.50 and 0.30
    assert spread_line(variants) == (
        "  each round's ratio: 0.30 to 0.50, median 0.40 (2 rounds; a verdict is only as good as this spread)"
    )
