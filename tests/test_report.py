"""`stakeflow report --html`: the dashboard file, opened in the system's headless Chromium.

Each page is checked as a person would see it (every chart drawn, no request leaving 127.0.0.1, no
script error), and its figures against `costs --json` / `evals --json` over the same store. Screenshots
stay in the test's tmp dir (the path is printed: `pytest -s` shows it).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from stakeflow.cli import cli
from stakeflow.core import semconv as sc
from stakeflow.services.report import Budget, gather, render_page
from stakeflow.traces import DuckDBSpanExporter, cost_report, grouped_costs, route_events
from tests.browser import CHROMIUM, browse, figures, wait_for_charts
from tests.report_data import write_dataset
from tests.trace_spans import NOW, chat_attributes, make_span

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("STAKEFLOW_HOME", str(home))
    monkeypatch.delenv("STAKEFLOW_TRACES", raising=False)
    return home


def cli_json(*args: str) -> dict:
    out = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def build(tmp_path: Path, *args: str) -> Path:
    page = tmp_path / "report.html"
    out = CliRunner().invoke(cli, ["report", "--html", str(page), *args], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert f"wrote {page}" in out.stdout and "file://" in out.stdout
    return page


async def open_page(url: str, shot: Path) -> tuple[list[dict], dict[str, str], str]:
    """Charts, figures and text of the page at ``url``, after asserting nothing left the machine."""
    async with browse() as (page, visit):
        await page.goto(url)
        charts = await wait_for_charts(page)
        found = await figures(page)
        text = await page.inner_text("body")
        await page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert visit.refused == [], f"requests left 127.0.0.1: {visit.refused[:5]}"
    assert visit.errors == [], visit.errors
    assert visit.requests, "the route guard saw no request at all"
    return charts, found, text


def drawn(charts: list[dict]) -> dict[str, int]:
    assert all(c["rendered"] == "true" for c in charts), charts
    return {c["name"]: c["marks"] for c in charts}


@needs_chromium
async def test_the_file_draws_every_chart_offline_with_the_figures_of_costs_and_evals(home, tmp_path):
    write_dataset(home / "traces.duckdb", days=18, runs_per_day=16)
    page = build(tmp_path, "--since", "30d")
    assert page.stat().st_size < 3_000_000
    charts, found, text = await open_page(page.as_uri(), tmp_path / "report.png")

    marks = drawn(charts)
    assert set(marks) == {"spend", "agreement", "saving", "events"}
    assert all(n > 0 for n in marks.values()), marks
    costs = cli_json("costs", "--since", "30d")
    for name in ("total_usd", "open_usd", "frontier_usd", "frontier_equivalent_usd", "saved_usd", "shadow_usd"):
        assert float(found[name]) == pytest.approx(costs[name], abs=1e-9), name
    for name in ("calls", "unpriced_calls", "shadow_calls"):
        assert int(found[name]) == costs[name], name
    for row in cli_json("costs", "--since", "30d", "--by", "day")["rows"]:
        lanes = [found[f"day:{row['day']}:{lane}"] for lane in ("open", "frontier", "shadow")]
        assert sum(float(v) for v in lanes if v) == pytest.approx(row["cost_usd"], abs=1e-9), row["day"]
    evals = cli_json("evals", "--since", "30d", "--by", "kind")
    assert int(found["agreement_n"]) == evals["total"]["n"]
    assert float(found["agreement"]) == pytest.approx(evals["total"]["agreement"], abs=1e-4)
    for row in evals["rows"]:  # the page's agent · kind rows add up to evals' kinds
        n = sum(int(v) for k, v in found.items() if k.startswith("agreement:") and k.endswith(f" · {row['kind']}:n"))
        assert n == row["n"], row["kind"]
    for row in cli_json("costs", "--since", "30d", "--by", "run")["rows"][:10]:
        assert float(found[f"run:{row['run']}:cost"]) == pytest.approx(row["cost_usd"], abs=1e-9)
    assert "escalated: open output failed validation twice" in text
    assert "fallback: open model endpoint unavailable" in text
    assert "answer checks not recorded yet" in text and "No budgets configured" in text


@needs_chromium
async def test_one_agent_s_page_has_that_agent_s_figures(home, tmp_path):
    write_dataset(home / "traces.duckdb", days=5, runs_per_day=16)
    page = build(tmp_path, "--since", "7d", "--agent", "triage")
    charts, found, text = await open_page(page.as_uri(), tmp_path / "triage.png")
    drawn(charts)
    costs = cli_json("costs", "--since", "7d", "--agent", "triage")
    assert float(found["total_usd"]) == pytest.approx(costs["total_usd"], abs=1e-9)
    assert int(found["calls"]) == costs["calls"] < cli_json("costs", "--since", "7d")["calls"]
    assert "agent triage" in text and "analyst ·" not in text


CASES = {
    "empty store": dict(days=0),
    "a single day": dict(days=1, runs_per_day=6),
    "one route only": dict(days=3, routes=("open",), shadow_rate=0.0),
    "unpriced calls only": dict(days=2, routes=("open",), unpriced_share=1.0, shadow_rate=0.0),
}


@needs_chromium
@pytest.mark.parametrize("case", CASES)
async def test_thin_stores_render(home, tmp_path, case):
    write_dataset(home / "traces.duckdb", **CASES[case])
    page = build(tmp_path)
    charts, found, text = await open_page(page.as_uri(), tmp_path / f"{case.replace(' ', '-')}.png")
    marks = drawn(charts)
    costs = cli_json("costs", "--since", "30d")
    assert int(found["calls"]) == costs["calls"]
    if case == "empty store":
        assert marks == {} and "No model calls in this window" in text
        assert found["total_usd"] == "0.0" and "agreement not measured" in text
    elif case == "unpriced calls only":
        assert found["total_usd"] == "" and "unpriced" in text and costs["priced_calls"] == 0
        assert "model calls have no price" in text and "spend" in marks
    else:
        assert marks["spend"] > 0
    if case == "one route only":
        assert "frontier" not in {r["route"] for r in cli_json("costs", "--since", "30d", "--by", "route")["rows"]}
        assert float(found["frontier_usd"]) == 0.0


@needs_chromium
async def test_budgets_and_answer_checks_appear_when_recorded(tmp_path):
    """Issue 24's budgets (as `budgets --json` lists them) and issue 22's answer_supported, once they exist."""
    store = write_dataset(tmp_path / "traces.duckdb", days=3, runs_per_day=8)
    con = duckdb.connect(str(store.path))  # runs whose answers were checked (issue 22): the dataset has no run spans'
    con.execute("ALTER VIEW runs RENAME TO runs_unchecked")  # attributes, so the view says what they would record
    con.execute(
        "CREATE VIEW runs AS SELECT * REPLACE (run_id NOT LIKE '%-000' AS answer_supported) FROM runs_unchecked"
    )
    con.close()
    budgets = [
        Budget.from_json(
            {
                "name": "frontier_usd_per_day",
                "limit": 5.0,
                "settled": 3.2,
                "reserved": 0.4,
                "left": 1.4,
                "resets_at": "2026-12-07T00:00:00Z",
            }
        ),  # fmt: skip
        Budget.from_json({"name": "agent triage", "limit": 2.0, "settled": 1.9, "reserved": 0.1, "left": 0.0}),
    ]
    html = tmp_path / "budgets.html"
    html.write_text(render_page(gather(store, timedelta(days=30), budgets=budgets)))
    charts, found, text = await open_page(html.as_uri(), tmp_path / "budgets.png")
    marks = drawn(charts)
    assert marks["budgets"] > 0 and float(found["budget:frontier_usd_per_day:left"]) == 1.4
    assert "Tightest: agent triage, $0.0000 left of $2.0000" in text
    assert "unsupported answer" in text and "answer checks not recorded yet" not in text
    assert int(found["events:unsupported answer:answer not supported by its tools"]) == 3  # run-0N-000 of 3 days


def test_grouped_costs_are_the_cost_report_s_figures(tmp_path):
    now = datetime.now(UTC)
    store = write_dataset(tmp_path / "traces.duckdb", days=4, runs_per_day=10, now=now)
    by_day = {r["day"]: r for r in cost_report(store, timedelta(days=30), "day", now=now)["rows"]}
    lanes: dict[str, float] = {}
    for g in grouped_costs(store, ("day", "lane"), timedelta(days=30), now=now):
        lanes[g.key[0]] = lanes.get(g.key[0], 0.0) + (g.cost_usd or 0.0)
        assert g.key[1] in {"open", "frontier", "shadow"}
    assert lanes == pytest.approx({day: r["cost_usd"] for day, r in by_day.items()}, abs=1e-9)
    runs_only = grouped_costs(store, ("route",), None, shadow=False)
    report = cost_report(store, None, "route")
    # the report's totals leave shadow evaluation out; so does shadow=False
    assert {g.key[0]: g.cost_usd for g in runs_only} == pytest.approx(
        {"open": report["open_usd"], "frontier": report["frontier_usd"]}, abs=1e-9
    )


def test_routing_events_are_classified_by_their_recorded_reasons(tmp_path):
    store = write_dataset(tmp_path / "traces.duckdb", days=9, runs_per_day=10)
    events, recorded = route_events(store, None)
    assert recorded is False  # the runs have no answer_supported (recorded by issue 22's answer check)
    kinds = {e.kind for e in events}
    assert kinds == {"escalation", "fallback", "downgrade: no frontier key"}
    with store.reader() as con:
        escalated = con.execute("SELECT count(*) FROM spans WHERE name = 'stakeflow.step' AND escalated").fetchone()[0]
    assert sum(e.count for e in events if e.kind == "escalation") == escalated > 0
    assert {e.reason for e in events if e.kind == "fallback"} == {"fallback: open model endpoint unavailable"}
    assert len({e.day for e in events if e.kind == "fallback"}) == 1  # the outage day (tests/report_data.py)


def test_report_refuses_a_bad_window_and_an_unwritable_path(home, tmp_path):
    runner = CliRunner()
    out = runner.invoke(cli, ["report", "--html", str(tmp_path / "r.html"), "--since", "a while"])
    assert out.exit_code == 1 and "use e.g. 30m, 24h, 7d, 2w, or all" in out.output
    out = runner.invoke(cli, ["report", "--html", str(tmp_path / "no" / "such" / "dir" / "r.html")])
    assert out.exit_code == 1 and "choose a writable path for --html" in out.output


@pytest.mark.parametrize("since", ["99999999999d", "999999d", "99999999h"])
def test_a_window_longer_than_the_calendar_is_refused_with_the_fix(home, tmp_path, since):
    """A hostile --since (or ?since=) must not reach date arithmetic: an InputError naming `all`, not a crash."""
    runner = CliRunner()
    for args in (["report", "--html", str(tmp_path / "r.html"), "--since", since], ["costs", "--since", since]):
        out = runner.invoke(cli, args)
        assert out.exit_code == 1 and "unexpected" not in out.output, out.output
        assert "--since all" in out.output, out.output


@needs_chromium
async def test_hostile_names_in_the_store_stay_text(home, tmp_path):
    """Run ids, reasons and agent names come from spans anyone's worker wrote: escaped in HTML and in the specs."""
    store = write_dataset(home / "traces.duckdb", days=2, runs_per_day=4)
    evil = "</script><script>alert(1)</script><img src=https://example.com/x.png>"
    span = make_span(
        "chat qwen",
        chat_attributes(
            f"run-{evil}", 1, "open", "qwen", **{sc.COST_USD: 0.5, sc.AGENT: evil, sc.REASON: f"x; escalated: {evil}"}
        ),
    )
    span = make_span(span.name, dict(span.attributes), days_ago=(NOW - datetime.now(UTC)).days)
    step = make_span(sc.SPAN_STEP, {sc.RUN_ID: f"run-{evil}", sc.STEP: 1, sc.REASON: f"x; escalated: {evil}"},
                     days_ago=(NOW - datetime.now(UTC)).days)  # fmt: skip
    DuckDBSpanExporter(store.path).export([span, step])
    page = build(tmp_path)
    async with browse() as (browser_page, visit):
        dialogs: list[str] = []
        browser_page.on("dialog", lambda d: dialogs.append(d.message))
        await browser_page.goto(page.as_uri())
        drawn(await wait_for_charts(browser_page))
        text = await browser_page.inner_text("body")
    assert dialogs == [] and visit.errors == [] and visit.refused == []
    assert f"run-{evil}" in text  # shown as text, in the top runs


@needs_chromium
async def test_the_request_guard_refuses_and_records_a_non_local_request(tmp_path):
    """The check behind "no request left 127.0.0.1" can fail: a page that asks another host is caught."""
    page = tmp_path / "leaky.html"
    page.write_text('<html><body><img src="https://example.com/pixel.png"><div>hi</div></body></html>')
    async with browse() as (browser_page, visit):
        await browser_page.goto(page.as_uri())
        await browser_page.wait_for_load_state("load")
    assert visit.refused == ["https://example.com/pixel.png"]
