"""The run's bill as one line: what the memo, the Web UI details, `run` and `status` show.

Pure rendering of a CostSummary, so the workflow (in its sandbox) and the CLI print the same line.
"""

from __future__ import annotations

from stakeflow.agents.types import CostSummary


def usd(value: float) -> str:
    return f"${value:.4f}" if value < 100 else f"${value:,.2f}"


def cost_line(c: CostSummary) -> str:
    """`cost $0.0123 (open 7 calls $0.0009 · frontier 2 calls $0.0114) · cache saved $0.0061 · all-frontier would be
    $0.0411 · saved 70% · open path agreement 94% (89–97%, n=240, last 7d)` (or `· agreement not measured`: see
    agents/evals.py). `cache saved` is what prompt caches took off the bill (shown when it is a cent's hundredth or more).

    Open calls to a model that runs on this machine (the embedded default) say so: `open 4 calls $0.0000, local`.
    Unpriced calls make the total a lower bound (`cost ≥ $0.0114`); when no call has a price there is no
    amount at all, never $0: `cost unpriced (open 3 calls unpriced · frontier 0 calls) · 3 calls UNPRICED: ...`.
    """
    local = ""
    if c.open_local_calls:
        local = ", local" if c.open_local_calls == c.open_calls else f", {c.open_local_calls} local"
    if c.unpriced_calls and c.unpriced_calls >= c.open_calls + c.frontier_calls:
        line = (
            f"cost unpriced (open {c.open_calls} calls{_unpriced_if(c.open_calls)} · "
            f"frontier {c.frontier_calls} calls{_unpriced_if(c.frontier_calls)})"
        )
    else:
        line = (
            f"cost {'≥ ' if c.unpriced_calls else ''}{usd(c.total_usd)} (open {c.open_calls} calls "
            f"{usd(c.open_usd)}{local} · frontier {c.frontier_calls} calls {usd(c.frontier_usd)})"
        )
    if round(c.cache_saved_usd, 4):
        # A provider's prompt cache: reads at a tenth of the input price, writes at 1.25x (prices/builtin.py).
        saved = c.cache_saved_usd
        line += f" · cache saved {usd(saved)}" if saved > 0 else f" · cache writes cost {usd(-saved)} more"
    if c.frontier_equivalent_usd > 0:
        line += f" · all-frontier would be {usd(c.frontier_equivalent_usd)}"
        if not c.unpriced_calls:
            saved = 1 - c.total_usd / c.frontier_equivalent_usd
            # A saving is never shown without the measured quality of the open path that earned it.
            line += f" · saved {saved:.0%} · {c.agreement or 'agreement not measured'}"
    if c.unpriced_calls:
        line += (
            f' · {c.unpriced_calls} calls UNPRICED: add [prices."<model id>"] to stakeflow.toml (see `stakeflow costs`)'
        )
    if c.budgets:
        line += f" · budgets {', '.join(c.budgets)}"
    return line


def _unpriced_if(calls: int) -> str:
    return " unpriced" if calls else ""
