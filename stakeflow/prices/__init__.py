"""Model prices: the built-in Anthropic table, overrides from config, and the cost of one call.

Units. Token prices are USD per million tokens ("per Mtok"); GPU time is USD per hour. Arithmetic is
done in ``decimal.Decimal`` (exact for token prices), and every USD figure returned is a float
rounded to 1e-9 USD (a nano-dollar), so costs are exact to well below the micro-dollar.

Usage. ``stakeflow.agents.types.Usage`` uses Anthropic's meaning: ``input_tokens`` is the *uncached* input
only; ``cache_read_tokens`` and ``cache_write_tokens`` are separate. So a call costs, each token
counted exactly once::

    input_tokens       x input_per_mtok
  + cache_write_tokens x cache_write_per_mtok   (the 5-minute cache write rate)
  + cache_read_tokens  x cache_read_per_mtok
  + output_tokens      x output_per_mtok        all / 1,000,000

Long context. Some models bill every token of a request at a higher rate when its prompt (uncached
+ cache read + cache write) exceeds a threshold (Claude Haiku 5.5: 100,000 tokens). A Usage summing
several requests is judged by its mean prompt per request (exact for one request, an estimate for
more; ``CallCost.note`` says so).

The built-in table is data (``BUILTIN_PRICES``), copied from genai-prices (see ``BUILTIN_SOURCE``)
and versioned ``BUILTIN_VERSION``; it is never fetched at run time. Only Anthropic's standard
(non-batch) rates; models genai-prices does not know are left out rather than guessed.

Config. A ``[prices."<model id>"]`` table in stakeflow.toml REPLACES the built-in entry for that id
entirely (no field-by-field merge), with version ``config.version or "config"``. It is either

* per-Mtok: ``input_per_mtok`` and ``output_per_mtok`` (both required); cache tokens are charged at
  ``cache_read_per_mtok`` / ``cache_write_per_mtok`` when given, else AT THE INPUT PRICE (the safe
  over-estimate: overriding an Anthropic model without cache prices charges cache reads 10x), or
* GPU time, for a self-hosted model: ``gpu_hour_usd`` x measured call seconds / 3600 / ``concurrency``
  (how many calls share the GPU at once); the token counts do not matter.

Setting both, or neither, is a ConfigError. Open models are priced only from config.

Model ids match exactly first, then by the longest table id that the model id extends with a
snapshot tag: ``-YYYYMMDD``, ``-YYYY-MM-DD``, ``-latest`` (or ``@`` instead of ``-``), so
"claude-sonnet-4-5-20250929" is priced as "claude-sonnet-4-5". A bare prefix is not enough:
"claude-opus-5-5" must never be priced as "claude-opus-5". A model with no entry is UNPRICED: its
cost is None, never 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Decimal

from stakeflow.agents.types import Usage
from stakeflow.config import EMBEDDED_MODEL_ID, PriceConfig, Settings
from stakeflow.core.errors import ConfigError
from stakeflow.prices.builtin import (
    BUILTIN_LONG_CONTEXT,
    BUILTIN_PRICES,
    BUILTIN_SOURCE,
    BUILTIN_VERSION,
)
from stakeflow.prices.cost import (
    SNAPSHOT,
    CallCost,
    LongContextTier,
    PriceEntry,
    PriceRow,
    Source,
    cache_prices,
    check_usage,
    cost,
    dec,
    plain,
    to_float,
    token_cost,
    unpriced,
)

PRICE_RULES = (
    "Token prices are USD per million tokens; gpu_hour is USD per hour of GPU time.\n"
    "cost = uncached input x input + cache write x cache write + cache read x cache read + output x output;\n"
    "a GPU-priced model costs gpu_hour x call seconds / 3600 / concurrency.\n"
    'A [prices."<model id>"] table in stakeflow.toml replaces the built-in entry for that model;\n'
    "without cache prices it charges cache tokens at its input price. Models with no entry are unpriced."
)


def builtin_entries() -> tuple[PriceEntry, ...]:
    """The built-in table as entries."""
    entries = []
    for model, inp, out, write, read, effective in BUILTIN_PRICES:
        tier = None
        if model in BUILTIN_LONG_CONTEXT:
            above, t_in, t_out, t_write, t_read = BUILTIN_LONG_CONTEXT[model]
            tier = LongContextTier(above, Decimal(t_in), Decimal(t_out), Decimal(t_write), Decimal(t_read))
        entries.append(
            PriceEntry(
                model=model,
                input_per_mtok=Decimal(inp),
                output_per_mtok=Decimal(out),
                cache_write_per_mtok=Decimal(write),
                cache_read_per_mtok=Decimal(read),
                effective=effective,
                long_context=tier,
            )
        )
    return tuple(entries)


LOCAL_VERSION = "builtin-local"


def local_entries() -> tuple[PriceEntry, ...]:
    """The model stakeflow runs on this machine itself (the embedded default): $0, labelled local.

    It runs on the CPU the user already has, so there is no bill to show; a ``[prices."<id>"]`` table
    (e.g. to charge the machine's time) replaces this entry like any other.
    """
    zero = Decimal(0)
    return (
        PriceEntry(
            model=EMBEDDED_MODEL_ID,
            input_per_mtok=zero,
            output_per_mtok=zero,
            cache_write_per_mtok=zero,
            cache_read_per_mtok=zero,
            version=LOCAL_VERSION,
            source="local",
        ),
    )


def config_entry(model: str, config: PriceConfig, where: str = "stakeflow.toml") -> PriceEntry:
    """A config table as an entry; raises ConfigError when it sets both kinds of price, or neither."""
    head = f'[prices."{model}"] in {where}'
    per_mtok = {
        name: getattr(config, name)
        for name in ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok")
        if getattr(config, name) is not None
    }
    if config.gpu_hour_usd is not None and per_mtok:
        raise ConfigError(
            f"{head} sets both gpu_hour_usd and {', '.join(per_mtok)}: keep one "
            "(gpu_hour_usd for a self-hosted model, per-Mtok prices for an API)"
        )
    if config.gpu_hour_usd is None and (config.input_per_mtok is None or config.output_per_mtok is None):
        raise ConfigError(
            f"{head} needs input_per_mtok and output_per_mtok (USD per million tokens), "
            "or gpu_hour_usd for a self-hosted model"
        )
    if config.effective is not None:
        try:
            date.fromisoformat(config.effective)
        except ValueError:
            bad = f'effective = "{config.effective}"'
            raise ConfigError(f'{head}: {bad} is not an ISO date: write it like "2026-11-01"') from None
    return PriceEntry(
        model=model,
        input_per_mtok=dec(config.input_per_mtok),
        output_per_mtok=dec(config.output_per_mtok),
        cache_write_per_mtok=dec(config.cache_write_per_mtok),
        cache_read_per_mtok=dec(config.cache_read_per_mtok),
        gpu_hour_usd=dec(config.gpu_hour_usd),
        concurrency=Decimal(str(config.concurrency)),
        effective=config.effective,
        version=config.version or "config",
        source="config",
    )


class PriceTable:
    """Prices by model id: the built-in table with config entries replacing built-in ones."""

    def __init__(self, entries: Iterable[PriceEntry]) -> None:
        self._entries: dict[str, PriceEntry] = {}
        for entry in entries:
            self._entries[entry.model] = entry  # later entries replace earlier ones

    @classmethod
    def builtin(cls) -> PriceTable:
        return cls(builtin_entries())

    @classmethod
    def from_config(cls, prices: Mapping[str, PriceConfig], where: str = "stakeflow.toml") -> PriceTable:
        """The built-in table, then each config entry replacing the built-in one for its model."""
        configured = (config_entry(model, cfg, where) for model, cfg in prices.items())
        return cls([*builtin_entries(), *local_entries(), *configured])

    @classmethod
    def from_settings(cls, settings: Settings) -> PriceTable:
        return cls.from_config(settings.prices, where=str(settings.config_path))

    @property
    def entries(self) -> tuple[PriceEntry, ...]:
        return tuple(self._entries[m] for m in sorted(self._entries))

    def lookup(self, model: str) -> PriceEntry | None:
        """The entry for ``model``: exact id, else the longest id it extends with a snapshot tag."""
        if model in self._entries:
            return self._entries[model]
        best: PriceEntry | None = None
        for known, entry in self._entries.items():
            extends = model.startswith(known) and SNAPSHOT.fullmatch(model[len(known) :])
            if extends and (best is None or len(known) > len(best.model)):
                best = entry
        return best

    def price_call(self, model: str, usage: Usage, seconds: float) -> CallCost:
        """What one call to ``model`` cost: its token usage, or ``seconds`` of GPU time (measured)."""
        check_usage(usage)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"call seconds must be a finite number >= 0, got {seconds!r}")
        entry = self.lookup(model)
        if entry is None:
            return unpriced(model)
        if entry.gpu_hour_usd is not None:
            gpu = entry.gpu_hour_usd * Decimal(str(seconds)) / Decimal(3600) / entry.concurrency
            zero = Decimal(0)
            return cost(model, entry, zero, zero, zero, zero, gpu, long_context=False, note="")
        return token_cost(model, entry, usage)

    def frontier_equivalent(self, frontier_model: str, usage: Usage, *, uncached: bool = False) -> CallCost:
        """What ``frontier_model`` would have charged for the same tokens.

        Each Usage field is priced at the frontier's rate for it, so an open call that reports no cache
        figures counts all its input as uncached input; one that does (a vLLM prefix-cache hit) is
        priced as an Anthropic cache read. ``uncached=True`` counts all input as uncached instead.
        A GPU-priced or unknown frontier model gives an unpriced result.
        """
        check_usage(usage)
        if uncached:
            usage = Usage(
                input_tokens=usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens,
                output_tokens=usage.output_tokens,
                requests=usage.requests,
            )
        entry = self.lookup(frontier_model)
        if entry is None:
            return unpriced(frontier_model)
        if entry.gpu_priced:
            return CallCost(
                model=frontier_model,
                priced_as=entry.model,
                note=f"{entry.model} is priced by GPU time, so it has no per-token equivalent",
            )
        return token_cost(frontier_model, entry, usage)


def describe(table: PriceTable) -> list[dict[str, str | float | None]]:
    """Rows for a ``stakeflow prices`` listing, sorted by model id: ``PriceRow`` fields as plain dicts
    (keys in column order), ready for a table or JSON."""
    rows = []
    for e in table.entries:
        tier = ""
        if e.long_context is not None:
            t = e.long_context
            rates = " / ".join(
                plain(p) for p in (t.input_per_mtok, t.output_per_mtok, t.cache_read_per_mtok, t.cache_write_per_mtok)
            )
            tier = f"above {t.above_prompt_tokens:,} prompt tokens: {rates}"
        token_priced = not e.gpu_priced
        write, read = cache_prices(e)  # what is charged: the input price where a config entry has none
        rows.append(
            PriceRow(
                model=e.model,
                input_per_mtok=to_float(e.input_per_mtok),
                output_per_mtok=to_float(e.output_per_mtok),
                cache_read_per_mtok=to_float(read) if token_priced else None,
                cache_write_per_mtok=to_float(write) if token_priced else None,
                gpu_hour_usd=to_float(e.gpu_hour_usd),
                concurrency=float(e.concurrency) if e.gpu_priced else None,
                long_context=tier,
                effective=e.effective,
                version=e.version,
                source=e.source,
            ).model_dump()
        )
    return rows


__all__ = [
    "BUILTIN_SOURCE",
    "BUILTIN_VERSION",
    "LOCAL_VERSION",
    "PRICE_RULES",
    "CallCost",
    "PriceEntry",
    "PriceRow",
    "PriceTable",
    "Source",
    "builtin_entries",
    "config_entry",
    "describe",
    "local_entries",
]
