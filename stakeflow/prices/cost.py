"""A price entry, the cost of one call, and the exact arithmetic between them (see stakeflow.prices)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

from pydantic import BaseModel

from stakeflow.agents.types import Usage
from stakeflow.prices.builtin import BUILTIN_VERSION

Source = Literal["builtin", "config", "local"]

MTOK = Decimal(1_000_000)
_NANO = Decimal("1e-9")
SNAPSHOT = re.compile(r"[-@](\d{8}|\d{4}-\d{2}-\d{2}|latest)")


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


def token_cost(model: str, entry: PriceEntry, usage: Usage) -> CallCost:
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
    return cost(
        model,
        entry,
        input_=usage.input_tokens * in_p / MTOK,
        output=usage.output_tokens * out_p / MTOK,
        cache_read=usage.cache_read_tokens * read_p / MTOK,
        cache_write=usage.cache_write_tokens * write_p / MTOK,
        gpu=Decimal(0),
        long_context=long_context,
        note=note,
    )


def cache_prices(entry: PriceEntry) -> tuple[Decimal | None, Decimal | None]:
    """(cache write, cache read) per Mtok: a config entry without them charges its input price."""
    write = entry.cache_write_per_mtok if entry.cache_write_per_mtok is not None else entry.input_per_mtok
    read = entry.cache_read_per_mtok if entry.cache_read_per_mtok is not None else entry.input_per_mtok
    return write, read


def cost(
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


def unpriced(model: str) -> CallCost:
    return CallCost(
        model=model,
        note=(
            f'no price for model "{model}": add [prices."{model}"] to stakeflow.toml '
            "(input_per_mtok and output_per_mtok, or gpu_hour_usd for a self-hosted model)"
        ),
    )


def check_usage(usage: Usage) -> None:
    counts = (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens)
    if min(counts) < 0:
        raise ValueError(f"token counts must be >= 0, got {usage!r}")


def _round(value: Decimal) -> float:
    return float(value.quantize(_NANO, rounding=ROUND_HALF_EVEN))


def dec(value: float | None) -> Decimal | None:
    # str() gives the shortest decimal that round-trips, so 0.3 becomes Decimal("0.3"), not 0.299999...
    return None if value is None else Decimal(str(value))


def to_float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def plain(value: Decimal) -> str:
    return format(value.normalize(), "f")
