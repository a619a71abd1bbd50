"""The built-in price table: data, copied from genai-prices (``BUILTIN_SOURCE``), never fetched at run time."""

from __future__ import annotations

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
