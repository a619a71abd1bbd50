"""The dashboard over a 1M-span store: how long `stakeflow report` takes, query by query, against `costs`.

1. Builds the store with bench/traces.py's span generator and exporter (runs of a plan, three steps and
   an answer over the last 30 days; 14 spans a run) and ingests it.
2. Times ``cost_report --by model`` (what bench/traces.py reports) and each query the page runs, then
   the whole page: ``gather`` (every query) and ``render_page`` (altair specs, HTML), with the Vega
   script bundle built once per process beforehand (its cold cost is printed apart).

    python bench/report.py                  # 1M spans; ~3 min on 2 cores, most of it building the store
    python bench/report.py --spans 100000   # a quick look

Every timing opens its own read-only connections, as the CLI does; medians of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import duckdb

from bench.traces import export_all, timed
from stakeflow.services.report import gather, render_page, vega_scripts
from stakeflow.traces import (
    TraceStore,
    agreement_groups,
    cost_report,
    format_table,
    grouped_costs,
    observed_routing,
    route_events,
    run_sql,
    slowest_runs,
    window_start,
)

WINDOW = timedelta(days=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans through the exporter (default 1M)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="stakeflow-bench-report-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"duckdb {duckdb.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs; in {work}")
    try:
        path = work / "traces.duckdb"
        t = time.perf_counter()
        export_all(path, args.spans, 2048)
        store = TraceStore(path)
        store.sync(budget_s=None, wait_s=10)
        print(f"store built in {time.perf_counter() - t:.0f} s")
        rows = measure(store, args.repeat)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(format_table(["what", "spans", "time"], rows, align_left={0}, max_width=80))


def measure(store: TraceStore, repeat: int) -> list[list[str]]:
    spans = run_sql(store, "SELECT count(*) FROM spans")[1][0][0]
    start = window_start(WINDOW)
    t = time.perf_counter()
    vega_scripts()
    bundle_s = time.perf_counter() - t
    cases = [
        ("costs --by model (bench/traces.py's figure)", lambda: cost_report(store, None, "model")),
        ("  page query: cost_report --by day, 30d", lambda: cost_report(store, WINDOW, "day")),
        ("  page query: cost_report --by run, top 10", lambda: cost_report(store, WINDOW, "run", limit=10)),
        ("  page query: grouped_costs day x lane", lambda: grouped_costs(store, ("day", "lane"), WINDOW)),
        ("  page query: agreement_groups day x agent x kind", lambda: agreement_groups(store, ("day", "agent", "kind"), start)),
        ("  page query: route_events", lambda: route_events(store, start)),
        ("  page query: observed_routing", lambda: observed_routing(store, start)),
        ("  page query: slowest_runs", lambda: slowest_runs(store, start)),
    ]  # fmt: skip
    rows = [[name, f"{spans:,}", f"{timed(fn, repeat) * 1000:,.0f} ms"] for name, fn in cases]
    data = gather(store, WINDOW)
    gather_s = timed(lambda: gather(store, WINDOW), repeat)
    render_s = timed(lambda: render_page(data), repeat)
    size = len(render_page(data).encode())
    rows += [
        ["report: gather (every query of the page)", f"{spans:,}", f"{gather_s * 1000:,.0f} ms"],
        ["report: render_page (altair specs, HTML)", f"{spans:,}", f"{render_s * 1000:,.0f} ms"],
        ["report: the whole page (gather + render)", f"{spans:,}", f"{(gather_s + render_s) * 1000:,.0f} ms"],
        ["  once per process: the Vega script bundle", "", f"{bundle_s * 1000:,.0f} ms"],
        ["  page size", "", f"{size / 1e6:.2f} MB"],
    ]
    return rows


if __name__ == "__main__":
    main()
