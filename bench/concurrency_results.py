"""bench/concurrency.py's results: each round's measurements, their medians and spreads, and the printed report."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from bench.histories import Breakdown

LABELS = {
    "sf0": "stakeflow before (--baseline checkout)",
    "sf": "stakeflow, 1 worker process",
    "sf2": "stakeflow, worker --processes 2",
    "sfl": "stakeflow, local model calls",
    "sfl2": "stakeflow, local calls, 2 processes",
    "sfu": "stakeflow, workflow_sandbox = false",
    "pai": "pydantic-ai TemporalDurability",
    "floor": "Temporal floor, stakeflow's shape",
    "floorl": "Temporal floor, local model calls",
}


@dataclass
class Round:
    n: int
    overheads_ms: list[float]  # per run: (wall - calls x latency) / calls
    calls: int
    window_s: float  # first start -> last close (server time)
    worker_cpu_s: float
    server_cpu_s: float
    model_cpu_s: float
    bench_cpu_s: float
    rss_before_mb: float
    rss_peak_mb: float
    breakdown: Any = None  # bench/histories.py's Breakdown, summed over the round's runs
    segments: int = 0  # trace-store segments the worker wrote (stakeflow variants)

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.window_s


@dataclass
class Result:
    rounds: list[Round] = field(default_factory=list)

    def pooled(self) -> list[float]:
        return sorted(x for r in self.rounds for x in r.overheads_ms)

    def median(self, f) -> float:
        return statistics.median(f(r) for r in self.rounds)

    def spread(self, f) -> tuple[float, float]:
        values = [f(r) for r in self.rounds]
        return min(values), max(values)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def report(
    args: argparse.Namespace,
    results: dict[str, dict[int, Result]],
    load_after: dict[str, float],
    load_before: tuple[float, ...],
) -> str:
    calls, lat = args.calls, args.latency
    lines = [
        (
            f"stakeflow concurrency benchmark, {time.strftime('%Y-%m-%d %H:%M')}: N runs started at once, {calls} model "
            f"calls each, scripted model answering after {lat:g} s; {args.rounds} rounds per N after {args.warmup} "
            "warm-up round(s)"
        ),
        (
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; load average "
            f"before {load_before[0]:.2f}, after {load_after['1 min']:.2f} (1 min)"
        ),
        "overhead/call = (run wall time - calls x latency) / calls, runs of all rounds pooled; the other columns are",
        "medians of the rounds [min-max]; CPU ms/call = worker process tree; RSS/run = (peak - before) / N",
        "",
        (
            f"{'variant':<44} {'N':>4} {'p50 ms':>7} {'p95 ms':>7} {'calls/s':>15} {'CPU ms/call':>16} "
            f"{'RSS MB/run':>10} {'server CPU':>10} {'model CPU':>9} {'bench CPU':>9}"
        ),
    ]
    for n in args.n:
        for key in args.variants:
            res = results[key][n]
            pooled = res.pooled()
            lo, hi = res.spread(lambda r: r.calls_per_s)
            clo, chi = res.spread(lambda r: r.worker_cpu_s / r.calls * 1000)
            lines.append(
                f"({key}) {LABELS[key]:<{41 - len(key)}} {n:4d} {pct(pooled, 0.5):7.1f} {pct(pooled, 0.95):7.1f} "
                f"{res.median(lambda r: r.calls_per_s):5.1f} [{lo:4.1f}-{hi:4.1f}] "
                f"{res.median(lambda r: r.worker_cpu_s / r.calls * 1000):5.1f} [{clo:4.1f}-{chi:4.1f}] "
                f"{res.median(lambda r: (r.rss_peak_mb - r.rss_before_mb) / r.n):10.2f} "
                f"{res.median(lambda r: r.server_cpu_s / r.calls * 1000):7.1f} ms {res.median(lambda r: r.model_cpu_s / r.calls * 1000):6.1f} ms "
                f"{res.median(lambda r: r.bench_cpu_s / r.calls * 1000):6.1f} ms"
            )
        lines.append("")
    lines += [
        "where a run's time goes, from the event histories (ms per task, mean over all runs of all rounds):",
        f"{'':<44} {'N':>4} {'WFTs':>5} {'WFT wait':>9} {'WFT run':>8} {'acts':>5} {'act wait':>9} {'act run':>8} {'LAs':>4}",
    ]
    for n in args.n:
        for key in args.variants:
            rounds = results[key][n].rounds
            runs = sum(r.n for r in rounds)
            m = sum((r.breakdown for r in rounds), Breakdown())
            w, a = max(m.wft_count, 1), max(m.act_count, 1)
            lines.append(
                f"({key}) {LABELS[key]:<{41 - len(key)}} {n:4d} {m.wft_count / runs:5.1f} {m.wft_wait / w:9.1f} "
                f"{m.wft_run / w:8.1f} {m.act_count / runs:5.1f} {m.act_wait / a:9.1f} {m.act_run / a:8.1f} "
                f"{m.markers / runs:4.1f}"
            )
    lines.append("")
    if 1 in args.n:
        lines.append("against the same run alone (N=1, p50 overhead/call):")
        for key in args.variants:
            idle = pct(results[key][1].pooled(), 0.5)
            for n in args.n:
                if n == 1:
                    continue
                p95 = pct(results[key][n].pooled(), 0.95)
                lines.append(f"  ({key}) N={n}: p95 {p95:.1f} ms = {p95 / idle:.1f}x the idle {idle:.1f} ms")
    lines += [
        "",
        "server/model CPU = ms of CPU per model call in the dev server / the model server process (both on the same",
        "2 cores as the worker). calls/s = N x calls / (first run start -> last run close, server time).",
    ]
    return "\n".join(lines)
