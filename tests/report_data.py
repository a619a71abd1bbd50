"""A realistic trace store for the dashboard: a few weeks of runs across agents, sources and routes.

Spans go through the real ``DuckDBSpanExporter`` and shadow evaluations through the real ``RecordWriter``,
then the store ingests them, as workers and readers do. What a team's store holds after some weeks:
three agents (and runs without one), open and frontier steps by stakes, escalations when the open
model's output failed validation, an open-endpoint outage with fallbacks, a day without a frontier key
(downgrades), a model nobody priced, shadow comparisons whose agreement improves over time.

    python -m tests.report_data OUT_DIR [--days 21]   # OUT_DIR/traces.duckdb, report.html, report.png

The page is built by `stakeflow report` itself and photographed in the system's headless Chromium
(docs/dashboard.png in the README comes from here).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from stakeflow.core import semconv as sc
from stakeflow.traces import DuckDBSpanExporter, TraceStore, spool_dir_for
from stakeflow.traces._records import RecordWriter

AGENTS = ("triage", "analyst", "support", "")
SOURCES = ("cli", "github-issues", "slack")
TOOLS = ("read_file", "sql_query", "http_get", "write_file", "calculator")
HIGH_STAKES_TOOLS = ("write_file",)
OPEN_MODEL, FRONTIER_MODEL, UNPRICED_MODEL = "qwen3-8b", "claude-sonnet-4-6", "llama-3.3-70b"
# Shadow agreement per (agent, kind) at the start of the window; each improves a little per week.
AGREEMENT = {"triage": 0.93, "analyst": 0.78, "support": 0.88, "": 0.85}
_RESOURCE = Resource.create({"service.name": "stakeflow"})


class _Writer:
    """Builds one run's spans with ids from one seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.spans: list[ReadableSpan] = []

    def span(
        self, name: str, trace: int, parent: int | None, start: datetime, seconds: float, attrs: dict, span_id: int = 0
    ) -> int:
        span_id = span_id or self.rng.getrandbits(63) | 1
        t0 = int(start.timestamp() * 1e9)
        self.spans.append(
            ReadableSpan(
                name=name,
                context=SpanContext(trace, span_id, is_remote=False, trace_flags=TraceFlags(1)),
                parent=SpanContext(trace, parent, is_remote=False) if parent else None,
                attributes=attrs,
                kind=SpanKind.CLIENT if name.startswith("chat ") else SpanKind.INTERNAL,
                start_time=t0,
                end_time=t0 + int(seconds * 1e9),
                resource=_RESOURCE,
                status=Status(StatusCode.UNSET),
            )
        )
        return span_id


def _call(route: str, model: str, rng: random.Random, unpriced: bool) -> dict:
    """A model call's usage and price attributes, as activities/model_trace.py records them."""
    tokens_in, tokens_out = rng.randrange(800, 4000), rng.randrange(60, 700)
    frontier_cost = (tokens_in * 3 + tokens_out * 15) / 1e6  # claude-sonnet-4-6, $ per token
    attrs = {
        sc.GEN_AI_OPERATION: "chat",
        sc.GEN_AI_PROVIDER: "anthropic" if route == "frontier" else "vllm",
        sc.GEN_AI_REQUEST_MODEL: model,
        sc.GEN_AI_RESPONSE_MODEL: model,
        sc.GEN_AI_INPUT_TOKENS: tokens_in,
        sc.RAW_INPUT_TOKENS: tokens_in,
        sc.GEN_AI_OUTPUT_TOKENS: tokens_out,
        sc.GEN_AI_CACHE_READ: 0,
        sc.GEN_AI_CACHE_WRITE: 0,
        sc.UNPRICED: unpriced,
        sc.STATUS: "ok",
        sc.ATTEMPT: 1,
    }
    if not unpriced:
        cost = frontier_cost if route == "frontier" else frontier_cost / rng.uniform(9, 14)
        attrs[sc.COST_USD] = round(cost, 9)
        attrs[sc.FRONTIER_EQUIVALENT_USD] = round(frontier_cost, 9)
        attrs[sc.PRICE_VERSION] = "builtin-2026-11-28" if route == "frontier" else "config"
    return attrs


def write_dataset(
    path: Path,
    *,
    days: int = 21,
    runs_per_day: int = 40,
    routes: tuple[str, ...] = ("open", "frontier"),
    unpriced_share: float = 0.03,
    shadow_rate: float = 0.2,
    now: datetime | None = None,
    seed: int = 26,
) -> TraceStore:
    """Write ``days`` days of runs ending at ``now`` into the store at ``path``, ingest them, return the store."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    exporter = DuckDBSpanExporter(path)
    evals: list[dict] = []
    outage_day, no_key_day = days // 3, days - 4
    for day in range(days):
        day_start = (now - timedelta(days=days - day)).replace(hour=0, minute=0, second=0, microsecond=0)
        for n in range(rng.randrange(runs_per_day // 2, runs_per_day + 1)):
            start = day_start + timedelta(seconds=rng.randrange(8 * 3600, 20 * 3600))
            start = min(start, now - timedelta(minutes=5))
            w = _Writer(rng)
            _one_run(
                w,
                f"run-{day:02d}-{n:03d}",
                start,
                day,
                days,
                routes,
                unpriced_share,
                shadow_rate,
                evals,
                outage=day == outage_day,
                no_key=day == no_key_day,
            )
            exporter.export(w.spans)
    if evals:
        RecordWriter(spool_dir_for(path), "evals").write(evals)
    exporter.shutdown()
    store = TraceStore(path)
    store.sync(budget_s=None)
    return store


def _one_run(w, run_id, start, day, days, routes, unpriced_share, shadow_rate, evals, *, outage, no_key) -> None:
    rng = w.rng
    agent = rng.choice(AGENTS)
    trace = rng.getrandbits(127) | 1
    run_attrs = {sc.RUN_ID: run_id, sc.SOURCE: rng.choice(SOURCES), sc.SENSITIVITY: "public", sc.AGENT: agent}
    run_span_id = rng.getrandbits(63) | 1
    t = start
    kinds = ["plan"] + ["step"] * rng.randrange(1, 4) + ["answer"]
    counts = {"open": 0, "frontier": 0, "escalations": 0, "cost": 0.0}
    for step, kind in enumerate(kinds):
        tool = rng.choice(TOOLS) if kind == "step" else ""
        high = tool in HIGH_STAKES_TOOLS or (kind == "step" and rng.random() < 0.15)
        route, reason = "open", "read-only tool, planner assessed low stakes"
        if high:
            side_effects = tool in HIGH_STAKES_TOOLS
            reason = f"tool {tool} has side effects" if side_effects else "planner assessed high stakes"
            route = "frontier"
        if kind != "step":
            reason = f"{kind}: low stakes"
        escalated = route == "open" and rng.random() < 0.05
        if escalated:
            route, reason = "frontier", f"{reason}; escalated: open output failed validation twice"
        if route == "open" and outage and rng.random() < 0.6:
            route, reason = "frontier", f"{reason}; fallback: open model endpoint unavailable"
        if route == "frontier" and no_key and not escalated:
            route = "open"
            reason = f"{reason}; frontier not configured (ANTHROPIC_API_KEY unset), so downgraded to the open model"
        if route not in routes:
            route = routes[0]
        unpriced = route == "open" and rng.random() < unpriced_share
        model = FRONTIER_MODEL if route == "frontier" else UNPRICED_MODEL if unpriced else OPEN_MODEL
        seconds = rng.uniform(0.8, 4.0) if route == "open" else rng.uniform(2.0, 9.0)
        common = {sc.RUN_ID: run_id, sc.STEP: step, sc.PURPOSE: kind, sc.ROUTE: route, sc.REASON: reason}
        step_id = w.span(
            sc.SPAN_STEP,
            trace,
            run_span_id,
            t,
            seconds + 0.5,
            {**common, sc.ESCALATED: escalated, sc.MODEL: model, sc.STAKES: "high" if high else "low"},
        )
        call = _call(route, model, rng, unpriced)
        call.update(common, **{sc.AGENT: agent, sc.SOURCE: run_attrs[sc.SOURCE], sc.STAKES: "high" if high else "low"})
        call[sc.ESCALATED] = escalated
        w.span(f"chat {model}", trace, step_id, t, seconds, call)
        if tool:
            w.span(
                f"execute_tool {tool}",
                trace,
                step_id,
                t + timedelta(seconds=seconds),
                0.3,
                {sc.GEN_AI_OPERATION: "execute_tool", sc.GEN_AI_TOOL_NAME: tool, sc.RUN_ID: run_id, sc.STEP: step},
            )
        counts[route] += 1
        counts["escalations"] += escalated
        counts["cost"] += call.get(sc.COST_USD, 0.0)
        if route == "open" and not unpriced and rng.random() < shadow_rate:
            _shadow(w, evals, trace, step_id, t, run_id, step, kind, tool, agent, day, days)
        t += timedelta(seconds=seconds + rng.uniform(0.2, 1.5))
    run_attrs.update(
        {
            sc.STATUS: "failed" if rng.random() < 0.04 else "ok",
            sc.STEP_COUNT: len(kinds) - 2,
            sc.OPEN_STEPS: counts["open"],
            sc.FRONTIER_STEPS: counts["frontier"],
            sc.ESCALATIONS: counts["escalations"],
            sc.STAKES: "high" if counts["frontier"] else "low",
            sc.COST_USD: round(counts["cost"], 9),
        }
    )
    w.span(sc.SPAN_RUN, trace, None, start, (t - start).total_seconds(), run_attrs, span_id=run_span_id)


def _shadow(w, evals, trace, step_id, t, run_id, step, kind, tool, agent, day, days) -> None:
    """A shadow comparison of an open call: the frontier's call (source ``shadow``) and its verdict."""
    rng = w.rng
    call = _call("frontier", FRONTIER_MODEL, rng, False)
    call.update({sc.RUN_ID: run_id, sc.STEP: step, sc.PURPOSE: kind, sc.ROUTE: "frontier", sc.SOURCE: "shadow"})
    call[sc.AGENT] = agent
    w.span(f"chat {FRONTIER_MODEL}", trace, step_id, t, 3.0, call)
    rate = min(0.99, AGREEMENT[agent] + 0.05 * day / max(days, 1) - (0.08 if kind == "answer" else 0.0))
    agree = rng.random() < rate
    evals.append(
        {
            "eval_id": f"{run_id}/{step}/{kind}",
            "recorded_at": (t + timedelta(seconds=5)).replace(tzinfo=None).isoformat(),
            "run_id": run_id,
            "step": step,
            "kind": kind,
            "tool": tool,
            "agent": agent,
            "open_model": OPEN_MODEL,
            "frontier_model": FRONTIER_MODEL,
            "verdict": rng.choice(["agree", "agree", "tie"]) if agree else "frontier_better",
            "method": "exact" if tool and rng.random() < 0.6 else "judge",
            "reason": "same tool calls with the same arguments" if agree else "the open answer missed a figure",
            "open_cost_usd": 0.0009,
            "frontier_cost_usd": call[sc.COST_USD],
            "judge_cost_usd": 0.004,
            "open_latency_ms": rng.uniform(800, 3000),
            "frontier_latency_ms": rng.uniform(2000, 8000),
            "source": "shadow",
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--days", type=int, default=21)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    traces, page = args.out / "traces.duckdb", args.out / "report.html"
    for stale in (traces, Path(f"{traces}.wal")):
        stale.unlink(missing_ok=True)
    write_dataset(traces, days=args.days)
    env = {**os.environ, "STAKEFLOW_TRACES": str(traces), "STAKEFLOW_HOME": str(args.out / "home")}
    command = [sys.executable, "-m", "stakeflow", "report", "--html", str(page), "--since", f"{args.days + 9}d"]
    subprocess.run(command, env=env, check=True)
    asyncio.run(_screenshot(page, args.out / "report.png"))


async def _screenshot(page: Path, png: Path) -> None:
    from tests.browser import browse, wait_for_charts

    async with browse(width=1200, height=900) as (browser_page, visit):
        await browser_page.goto(page.resolve().as_uri())
        await wait_for_charts(browser_page)
        await browser_page.screenshot(path=str(png), full_page=True)
    if visit.refused or visit.errors:
        raise SystemExit(f"the page misbehaved: {visit.refused} {visit.errors}")
    print(f"screenshot: {png}")


if __name__ == "__main__":
    main()
