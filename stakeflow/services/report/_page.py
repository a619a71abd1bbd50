"""The dashboard as ONE self-contained HTML page: styles, chart specs and the Vega scripts inline.

The page asks no other host for anything when opened (file:// or served): the Vega, Vega-Lite and
vega-embed scripts are the bundle ``vl-convert-python`` ships (``javascript_bundle``, built offline from
the versions it vendors), and each chart's data is inside its spec. Figures a reader or a test checks
carry ``data-figure`` / ``data-value`` with the unrounded number the query returned.
"""

from __future__ import annotations

import functools
import json
from html import escape
from typing import Any

from stakeflow.services.report import _charts, _tables
from stakeflow.services.report._data import ReportData
from stakeflow.services.report._tables import days_text, figure, usd

# The Vega-Lite version altair's specs are written for (altair.SCHEMA_VERSION, v6.4.x).
VEGA_LITE = "6.4"
EMBED = """
const specs = JSON.parse(document.getElementById("stakeflow-specs").textContent);
for (const [id, spec] of Object.entries(specs)) {
  const el = document.getElementById(id);
  vegaEmbed(el, spec, {renderer: "svg", actions: false})
    .then(() => { el.dataset.rendered = "true"; })
    .catch((e) => { el.dataset.rendered = "error"; el.textContent = "this chart failed to draw: " + e; });
}
"""
STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2327; margin: 0;
  background: #f6f7f9; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 0 0 4px; }
.sub { color: #5f6b73; margin: 0 0 18px; }
.cards { display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; margin-bottom: 18px; }
.card { background: #fff; border-radius: 8px; padding: 12px 14px; box-shadow: 0 1px 2px #0001; }
.card .big { font-size: 22px; font-weight: 600; } .card .what { color: #5f6b73; font-size: 12px; }
section { background: #fff; border-radius: 8px; padding: 16px 18px; margin-bottom: 16px; box-shadow: 0 1px 2px #0001; }
.reading { margin: 0 0 10px; } .empty { color: #5f6b73; font-style: italic; margin: 6px 0; }
.warn { background: #fff4e5; border-left: 4px solid #f4a261; padding: 8px 12px; border-radius: 4px; margin: 0 0 14px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin-top: 8px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eceff1; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 12px; background: #f1f3f5; padding: 1px 4px; border-radius: 3px; }
details summary { cursor: pointer; color: #5f6b73; margin-top: 6px; }
.two { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
footer { color: #8a949b; font-size: 12px; }
"""


@functools.cache
def vega_scripts() -> str:
    """vega, vega-lite and vega-embed bundled with the page's own ``EMBED`` code as one script (~0.9 MB),
    built once per process (~1 s). The bundle is the same for every page: the data is in the specs."""
    import vl_convert

    return vl_convert.javascript_bundle(EMBED, vl_version=VEGA_LITE)


def render_page(data: ReportData, *, title: str = "stakeflow: cost and quality") -> str:
    """The whole page for ``data``."""
    specs: dict[str, dict[str, Any]] = {}
    body = "\n".join(
        [
            _header(data, title),
            _spend(data, specs),
            _quality(data, specs),
            _events(data, specs),
            _tables.routing_section(data),
            _tables.runs_section(data),
            _budgets(data, specs),
            f"<footer>Built by <code>stakeflow report</code> at {escape(data.generated_at.isoformat(timespec='seconds'))}"
            " from the trace store; every figure is the one <code>stakeflow costs</code> and <code>stakeflow evals"
            "</code> print for the same window.</footer>",
        ]
    )
    spec_json = json.dumps(specs, separators=(",", ":")).replace("</", "<\\/")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body><main>\n{body}\n</main>\n"
        f'<script type="application/json" id="stakeflow-specs">{spec_json}</script>\n'
        f"<script>{vega_scripts()}</script>\n</body></html>\n"
    )


def _chart(specs: dict[str, dict[str, Any]], name: str, spec: dict[str, Any] | None, empty: str) -> str:
    if spec is None:
        return f'<p class="empty" data-empty="{name}">{escape(empty)}</p>'
    specs[f"chart-{name}"] = spec
    return f'<div class="chart" id="chart-{name}" data-chart="{name}"></div>'


def _header(data: ReportData, title: str) -> str:
    c = data.costs
    window = f"the last {days_text(data.since)}" if data.since else "all time"
    who = f" · agent <b>{escape(data.agent)}</b>" if data.agent else ""
    equivalent, saved = c["frontier_equivalent_usd"], c["saved_usd"]
    share = saved / equivalent if equivalent else 0.0
    agreement = data.agreement
    low, high = agreement.interval
    quality = (
        f"{figure('agreement', agreement.rate, f'{agreement.rate:.0%}')}"
        f'<div class="what">open-path agreement ({low:.0%}–{high:.0%}, n={figure("agreement_n", agreement.n)})</div>'
        if agreement.n
        else '<span class="big">–</span><div class="what">agreement not measured: set [evals] shadow_rate</div>'
    )
    spent = (
        f"{figure('total_usd', c['total_usd'], usd(c['total_usd']))}"
        if c["priced_calls"] or not c["calls"]
        else '<span class="big" data-figure="total_usd" data-value="">unpriced</span>'
    )
    cards = [
        f'<div class="card"><div class="big">{spent}</div><div class="what">spent: open '
        f"{figure('open_usd', c['open_usd'], usd(c['open_usd']))} · frontier "
        f"{figure('frontier_usd', c['frontier_usd'], usd(c['frontier_usd']))}</div></div>",
        f'<div class="card"><div class="big">{figure("frontier_equivalent_usd", equivalent, usd(equivalent))}</div>'
        '<div class="what">if every call had gone to the frontier</div></div>',
        f'<div class="card"><div class="big">{figure("saved_usd", saved, usd(saved))}</div><div class="what">saved '
        f"({share:.0%} of all-frontier)</div></div>",
        f'<div class="card"><div class="big">{quality}</div></div>',
    ]
    notes = []
    if c["unpriced_calls"]:
        notes.append(
            f'<p class="warn">{figure("unpriced_calls", c["unpriced_calls"])} model calls have no price and are in no '
            'total here: add [prices."&lt;model id&gt;"] to stakeflow.toml (input_per_mtok/output_per_mtok, or '
            "gpu_hour_usd).</p>"
        )
    if c["shadow_calls"]:
        notes.append(
            f'<p class="sub">Shadow evaluation spent {figure("shadow_usd", c["shadow_usd"], usd(c["shadow_usd"]))} '
            f"on {figure('shadow_calls', c['shadow_calls'])} calls, not in the totals above.</p>"
        )
    return (
        f"<h1>{escape(title)}</h1>"
        f'<p class="sub">{window}{who} · {figure("calls", c["calls"])} model calls · '
        f"built {escape(data.generated_at.strftime('%Y-%m-%d %H:%M UTC'))}</p>"
        f'<div class="cards">{"".join(cards)}</div>{"".join(notes)}'
    )


def _spend(data: ReportData, specs: dict[str, dict[str, Any]]) -> str:
    c = data.costs
    if not c["calls"] and not c["shadow_calls"]:
        reading = "No model calls in this window."
    else:
        equivalent = c["frontier_equivalent_usd"]
        share = c["saved_usd"] / equivalent if equivalent else 0.0
        dearest = max(data.spend_days, key=lambda g: g.cost_usd or 0.0, default=None)
        reading = (
            f"Runs cost {usd(c['total_usd'])} where all-frontier would have cost {usd(equivalent)}: "
            f"saved {usd(c['saved_usd'])} ({share:.0%})."
        )
        if dearest is not None and dearest.cost_usd:
            reading += f" The dearest day was {dearest.key[0]} ({usd(dearest.cost_usd)})."
    chart = _chart(specs, "spend", _charts.spend_chart(data), "No model calls in this window: nothing to chart.")
    return (
        '<section id="spend"><h2>Spend per day by route, against all-frontier</h2>'
        f'<p class="reading">{escape(reading)}</p>{chart}{_tables.spend_table(data)}</section>'
    )


def _quality(data: ReportData, specs: dict[str, dict[str, Any]]) -> str:
    empty = "No shadow comparisons in this window: set [evals] shadow_rate to measure the open path."
    rows = _charts.saving_rows(data)
    if rows:
        worst = min(rows, key=lambda r: r["agreement"])
        a = data.agreement
        low, high = a.interval
        reading = (
            f"Open path agreed with the frontier on {a.rate:.0%} of {a.n} comparisons ({low:.0%}–{high:.0%}); "
            f"lowest: {worst['group']} at {worst['agreement']:.0%} (n={worst['n']})."
        )
    else:
        reading = empty
    return (
        '<section id="quality"><h2>Open-path agreement over time, and the saving it earned</h2>'
        f'<p class="reading">{escape(reading)}</p>'
        f"{_chart(specs, 'agreement', _charts.agreement_chart(data), empty)}"
        f"{_chart(specs, 'saving', _charts.saving_chart(data), '')}{_tables.agreement_table(data)}</section>"
    )


def _events(data: ReportData, specs: dict[str, dict[str, Any]]) -> str:
    totals: dict[str, int] = {}
    for e in data.events:
        totals[e.kind] = totals.get(e.kind, 0) + e.count
    if totals:
        reading = ", ".join(f"{n} × {kind}" for kind, n in sorted(totals.items(), key=lambda kv: -kv[1])) + "."
    else:
        reading = "No escalations, fallbacks or downgrades in this window: every step ran where its stakes sent it."
    notes = ""
    if not data.answer_checks_recorded:
        notes = '<p class="empty" data-empty="answer-checks">Unsupported answers: answer checks not recorded yet.</p>'
    chart = _chart(specs, "events", _charts.events_chart(data), "Nothing to chart.")
    return (
        '<section id="events"><h2>Escalations, fallbacks, downgrades and unsupported answers</h2>'
        f'<p class="reading">{escape(reading)}</p>{chart}{notes}{_tables.events_table(data)}</section>'
    )


def _budgets(data: ReportData, specs: dict[str, dict[str, Any]]) -> str:
    if not data.budgets:
        return (
            '<section id="budgets"><h2>Frontier budgets</h2>'
            '<p class="empty" data-empty="budgets">No budgets configured.</p></section>'
        )
    tightest = min(data.budgets, key=lambda b: b.left_usd / b.limit_usd if b.limit_usd else 1.0)
    reading = (
        f"Tightest: {tightest.name}, {usd(tightest.left_usd)} left of {usd(tightest.limit_usd)} "
        f"({usd(tightest.settled_usd)} settled, {usd(tightest.reserved_usd)} reserved)."
    )
    chart = _chart(specs, "budgets", _charts.budget_chart(data), "")
    return (
        '<section id="budgets"><h2>Frontier budgets</h2>'
        f'<p class="reading">{escape(reading)}</p>{chart}{_tables.budget_table(data)}</section>'
    )
