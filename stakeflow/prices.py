"""Model prices: the built-in Anthropic table, overrides from config, and the cost of one call.

Units. Token prices are USD per million tokens ("per Mtok"); GPU time is USD per hour. Arithmetic is
done in ``decimal.Decimal`` (exact for token prices), and every USD figure returned is a float
rounded to 1e-9 USD (a nano-dollar), so costs are exact to well below the micro-dollar.

Usage. ``agents.types.Usage`` uses Anthropic's meaning: ``input_tokens`` is the *uncached* input
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
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

from pydantic import BaseModel

from agents.types import Usage
from stakeflow.core.errors import ConfigError
from stakeflow.settings import EMBEDDED_MODEL_ID, PriceConfig, Settings

Source = Literal["builtin", "config", "local"]

BUILTIN_VERSION = "builtin-2026-11-28"
BUILTIN_SOURCE = (
    "genai-prices 0.2.3 (https://github.com/pydantic/genai-prices), provider 'anthropic', "
    "standard rates, read 2026-11-28; upstream refs: https://www.anthropic.com/pricing#api"
)
_READ = "2026-11-28"  # the date the figures were read: the effective date where the source gives none

# model id, input, output, cache write (5 min), cache read: USD per million tokens; effective date.
# "effective" is the earliest date the price is known to apply: the provider's start date where the
# source records one, else the date we read it.
BUILTIN_PRICES: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("claude-fable-5-2", "8", "40", "10", "0.2", _READ),
    ("claude-fable-5-1", "10", "50", "12.5", "0.25", _READ),
    ("claude-fable-5", "10", "50", "12.5", "1", _READ),
    ("claude-mythos-5-2", "8", "40", "10", "0.2", _READ),
    ("claude-opus-5-5", "4", "20", "5", "0.2", _READ),
    ("claude-opus-5", "5", "25", "6.25", "0.5", _READ),
    ("claude-sonnet-5-5", "2", "10", "2.5", "0.1", _READ),
    ("claude-sonnet-5", "2", "10", "2.5", "0.2", _READ),
    ("claude-haiku-5-5", "0.1", "0.5", "0.125", "0.01", _READ),  # long context: see below
    ("claude-opus-4-8", "5", "25", "6.25", "0.5", _READ),
    ("claude-opus-4-7", "5", "25", "6.25", "0.5", _READ),
    ("claude-opus-4-6", "5", "25", "6.25", "0.5", "2026-03-13"),  # flat since then (was tiered)
    ("claude-opus-4-5", "5", "25", "6.25", "0.5", _READ),
    ("claude-sonnet-4-6", "3", "15", "3.75", "0.3", "2026-03-13"),  # flat since then (was tiered)
    ("claude-sonnet-4-5", "3", "15", "3.75", "0.3", _READ),  # long context: see below
    ("claude-haiku-4-5", "1", "5", "1.25", "0.1", _READ),
    ("claude-opus-4-1", "15", "75", "18.75", "1.5", _READ),
    ("claude-opus-4-0", "15", "75", "18.75", "1.5", _READ),
    ("claude-opus-4", "15", "75", "18.75", "1.5", _READ),  # claude-opus-4-20250514
    ("claude-sonnet-4-0", "3", "15", "3.75", "0.3", _READ),
    ("claude-sonnet-4", "3", "15", "3.75", "0.3", _READ),  # claude-sonnet-4-20250514
    ("claude-3-7-sonnet", "3", "15", "3.75", "0.3", _READ),
    ("claude-3-5-sonnet", "3", "15", "3.75", "0.3", _READ),
    ("claude-3-5-haiku", "0.8", "4", "1", "0.08", _READ),
    ("claude-3-opus", "15", "75", "18.75", "1.5", _READ),
    ("claude-3-sonnet", "3", "15", "3.75", "0.3", _READ),
    ("claude-3-haiku", "0.25", "1.25", "0.3", "0.03", _READ),
)

# model id -> (prompt tokens above which every token is billed at these rates; input, output,
# cache write, cache read per Mtok). Sonnet 4.5's tier only describes requests made before its 1M
# context beta was retired (2026-04-30); larger requests now fail.
BUILTIN_LONG_CONTEXT: dict[str, tuple[int, str, str, str, str]] = {
    "claude-haiku-5-5": (100_000, "0.5", "2.5", "0.625", "0.05"),
    "claude-sonnet-4-5": (200_000, "6", "22.5", "7.5", "0.6"),
}

PRICE_RULES = (
    "Token prices are USD per million tokens; gpu_hour is USD per hour of GPU time.\n"
    "cost = uncached input x input + cache write x cache write + cache read x cache read + output x output;\n"
    "a GPU-priced model costs gpu_hour x call seconds / 3600 / concurrency.\n"
    'A [prices."<model id>"] table in stakeflow.toml replaces the built-in entry for that model;\n'
    "without cache prices it charges cache tokens at its input price. Models with no entry are unpriced."
)

_MTOK = Decimal(1_000_000)
_NANO = Decimal("1e-9")
_SNAPSHOT = re.compile(r"[-@](\d{8}|\d{4}-\d{2}-\d{2}|latest)")


@dataclass(frozen=True)
class LongContextTier:
    """Rates that apply to every token of a request whose prompt exceeds ``above_prompt_tokens``."""

    above_prompt_tokens: int
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_write_per_mtok: Decimal
    cache_read_per_mtok: Decimal


@dataclass(frozen=True)
class PriceEntry:
    """One model's price: per-Mtok token prices, or GPU time (``gpu_hour_usd``), never both."""

    model: str
    input_per_mtok: Decimal | None = None
    output_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None  # None: charged at input_per_mtok
    cache_read_per_mtok: Decimal | None = None  # None: charged at input_per_mtok
    gpu_hour_usd: Decimal | None = None
    concurrency: Decimal = Decimal(1)
    effective: str | None = None
    version: str = BUILTIN_VERSION
    source: Source = "builtin"
    long_context: LongContextTier | None = None

    @property
    def gpu_priced(self) -> bool:
        return self.gpu_hour_usd is not None


class CallCost(BaseModel):
    """The cost of one model call (or of its frontier equivalent), in USD.

    ``usd`` is None when the model is unpriced, never 0; then every component is None too.
    Components are each rounded to 1e-9 USD; ``usd`` is their exact sum, rounded once.
    """

    model: str = ""  # the model id asked about
    priced_as: str | None = None  # the table entry that matched (differs for snapshot ids)
    source: Source | None = None
    version: str | None = None  # the price-table version that priced it
    unpriced: bool = True
    usd: float | None = None
    input_usd: float | None = None
    output_usd: float | None = None
    cache_read_usd: float | None = None
    cache_write_usd: float | None = None
    gpu_usd: float | None = None
    long_context: bool = False  # the long-context rates applied
    note: str = ""  # why it is unpriced, or what is estimated


class PriceRow(BaseModel):
    """One line of the ``stakeflow prices`` listing."""

    model: str
    input_per_mtok: float | None = None
    output_per_mtok: float | None = None
    cache_read_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None
    gpu_hour_usd: float | None = None
    concurrency: float | None = None  # only for GPU-priced models
    long_context: str = ""  # "above 100,000 prompt tokens: 0.5 / 2.5 / 0.05 / 0.625" (in/out/read/write)
    effective: str | None = None
    version: str
    source: Source


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
            model=EMBEDDED_MODEL_ID, input_per_mtok=zero, output_per_mtok=zero, cache_write_per_mtok=zero,
            cache_read_per_mtok=zero, version=LOCAL_VERSION, source="local",
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
        input_per_mtok=_dec(config.input_per_mtok),
        output_per_mtok=_dec(config.output_per_mtok),
        cache_write_per_mtok=_dec(config.cache_write_per_mtok),
        cache_read_per_mtok=_dec(config.cache_read_per_mtok),
        gpu_hour_usd=_dec(config.gpu_hour_usd),
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
            extends = model.startswith(known) and _SNAPSHOT.fullmatch(model[len(known) :])
            if extends and (best is None or len(known) > len(best.model)):
                best = entry
        return best

    def price_call(self, model: str, usage: Usage, seconds: float) -> CallCost:
        """What one call to ``model`` cost: its token usage, or ``seconds`` of GPU time (measured)."""
        _check_usage(usage)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"call seconds must be a finite number >= 0, got {seconds!r}")
        entry = self.lookup(model)
        if entry is None:
            return _unpriced(model)
        if entry.gpu_hour_usd is not None:
            gpu = entry.gpu_hour_usd * Decimal(str(seconds)) / Decimal(3600) / entry.concurrency
            zero = Decimal(0)
            return _cost(model, entry, zero, zero, zero, zero, gpu, long_context=False, note="")
        return _token_cost(model, entry, usage)

    def frontier_equivalent(self, frontier_model: str, usage: Usage, *, uncached: bool = False) -> CallCost:
        """What ``frontier_model`` would have charged for the same tokens.

        Each Usage field is priced at the frontier's rate for it, so an open call that reports no cache
        figures counts all its input as uncached input; one that does (a vLLM prefix-cache hit) is
        priced as an Anthropic cache read. ``uncached=True`` counts all input as uncached instead.
        A GPU-priced or unknown frontier model gives an unpriced result.
        """
        _check_usage(usage)
        if uncached:
            usage = Usage(
                input_tokens=usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens,
                output_tokens=usage.output_tokens,
                requests=usage.requests,
            )
        entry = self.lookup(frontier_model)
        if entry is None:
            return _unpriced(frontier_model)
        if entry.gpu_priced:
            return CallCost(
                model=frontier_model,
                priced_as=entry.model,
                note=f"{entry.model} is priced by GPU time, so it has no per-token equivalent",
            )
        return _token_cost(frontier_model, entry, usage)


def describe(table: PriceTable) -> list[dict[str, str | float | None]]:
    """Rows for a ``stakeflow prices`` listing, sorted by model id: ``PriceRow`` fields as plain dicts
    (keys in column order), ready for a table or JSON."""
    rows = []
    for e in table.entries:
        tier = ""
        if e.long_context is not None:
            t = e.long_context
            rates = " / ".join(
                _plain(p) for p in (t.input_per_mtok, t.output_per_mtok, t.cache_read_per_mtok, t.cache_write_per_mtok)
            )
            tier = f"above {t.above_prompt_tokens:,} prompt tokens: {rates}"
        token_priced = not e.gpu_priced
        write, read = _cache_prices(e)  # what is charged: the input price where a config entry has none
        rows.append(
            PriceRow(
                model=e.model,
                input_per_mtok=_float(e.input_per_mtok),
                output_per_mtok=_float(e.output_per_mtok),
                cache_read_per_mtok=_float(read) if token_priced else None,
                cache_write_per_mtok=_float(write) if token_priced else None,
                gpu_hour_usd=_float(e.gpu_hour_usd),
                concurrency=float(e.concurrency) if e.gpu_priced else None,
                long_context=tier,
                effective=e.effective,
                version=e.version,
                source=e.source,
            ).model_dump()
        )
    return rows


# --- arithmetic ----------------------------------------------------------------------------------


def _token_cost(model: str, entry: PriceEntry, usage: Usage) -> CallCost:
    # config_entry() guarantees input and output prices on every entry that is not GPU-priced
    in_p = entry.input_per_mtok if entry.input_per_mtok is not None else Decimal(0)
    out_p = entry.output_per_mtok if entry.output_per_mtok is not None else Decimal(0)
    write_p = entry.cache_write_per_mtok if entry.cache_write_per_mtok is not None else in_p
    read_p = entry.cache_read_per_mtok if entry.cache_read_per_mtok is not None else in_p
    long_context, note = False, ""
    tier = entry.long_context
    if tier is not None:
        prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
        requests = max(usage.requests, 1)
        if Decimal(prompt) / requests > tier.above_prompt_tokens:
            long_context = True
            in_p, out_p = tier.input_per_mtok, tier.output_per_mtok
            write_p, read_p = tier.cache_write_per_mtok, tier.cache_read_per_mtok
        if requests > 1:
            note = (
                f"{requests} requests summed: the long-context rate (prompts over "
                f"{tier.above_prompt_tokens:,} tokens) was judged on the mean prompt, an estimate"
            )
    return _cost(
        model,
        entry,
        input_=usage.input_tokens * in_p / _MTOK,
        output=usage.output_tokens * out_p / _MTOK,
        cache_read=usage.cache_read_tokens * read_p / _MTOK,
        cache_write=usage.cache_write_tokens * write_p / _MTOK,
        gpu=Decimal(0),
        long_context=long_context,
        note=note,
    )


def _cache_prices(entry: PriceEntry) -> tuple[Decimal | None, Decimal | None]:
    """(cache write, cache read) per Mtok: a config entry without them charges its input price."""
    write = entry.cache_write_per_mtok if entry.cache_write_per_mtok is not None else entry.input_per_mtok
    read = entry.cache_read_per_mtok if entry.cache_read_per_mtok is not None else entry.input_per_mtok
    return write, read


def _cost(
    model: str,
    entry: PriceEntry,
    input_: Decimal,
    output: Decimal,
    cache_read: Decimal,
    cache_write: Decimal,
    gpu: Decimal,
    *,
    long_context: bool,
    note: str,
) -> CallCost:
    total = input_ + output + cache_read + cache_write + gpu
    return CallCost(
        model=model,
        priced_as=entry.model,
        source=entry.source,
        version=entry.version,
        unpriced=False,
        usd=_round(total),
        input_usd=_round(input_),
        output_usd=_round(output),
        cache_read_usd=_round(cache_read),
        cache_write_usd=_round(cache_write),
        gpu_usd=_round(gpu),
        long_context=long_context,
        note=note,
    )


def _unpriced(model: str) -> CallCost:
    return CallCost(
        model=model,
        note=(
            f'no price for model "{model}": add [prices."{model}"] to stakeflow.toml '
            "(input_per_mtok and output_per_mtok, or gpu_hour_usd for a self-hosted model)"
        ),
    )


def _check_usage(usage: Usage) -> None:
    counts = (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens)
    if min(counts) < 0:
        raise ValueError(f"token counts must be >= 0, got {usage!r}")


def _round(value: Decimal) -> float:
    return float(value.quantize(_NANO, rounding=ROUND_HALF_EVEN))


def _dec(value: float | None) -> Decimal | None:
    # str() gives the shortest decimal that round-trips, so 0.3 becomes Decimal("0.3"), not 0.299999...
    return None if value is None else Decimal(str(value))


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")
