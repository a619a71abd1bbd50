"""Prices: the built-in table, config overrides, GPU time, frontier equivalents, no double counting.

Expected costs are worked out by hand below, with the per-Mtok prices written as literals, so a silent
change to the built-in table fails here.
"""

from __future__ import annotations

import typing
from types import SimpleNamespace

import pytest

from stakeflow.agents.types import Usage
from stakeflow.config import PriceConfig, Settings
from stakeflow.core.errors import ConfigError
from stakeflow.prices import BUILTIN_VERSION, PriceTable, describe

# A real-shaped Anthropic call: a cached system prompt and tool list being read, a new turn written.
SHAPE = Usage(input_tokens=2_137, cache_write_tokens=15_000, cache_read_tokens=48_211, output_tokens=1_024, requests=1)


def test_sonnet_4_6_with_cache_read_and_write_to_the_micro_dollar():
    cost = PriceTable.builtin().price_call("claude-sonnet-4-6", SHAPE, seconds=4.2)
    # claude-sonnet-4-6: $3 input, $15 output, $3.75 cache write (5 min), $0.30 cache read per Mtok
    assert cost.input_usd == 0.006411  # 2,137 x 3 / 1e6
    assert cost.cache_write_usd == 0.05625  # 15,000 x 3.75 / 1e6
    assert cost.cache_read_usd == 0.0144633  # 48,211 x 0.30 / 1e6
    assert cost.output_usd == 0.01536  # 1,024 x 15 / 1e6
    assert cost.gpu_usd == 0.0
    assert cost.usd == 0.0924843  # 0.006411 + 0.05625 + 0.0144633 + 0.01536
    assert (cost.unpriced, cost.version, cost.source) == (False, BUILTIN_VERSION, "builtin")
    assert cost.priced_as == "claude-sonnet-4-6"


@pytest.mark.parametrize(
    ("model", "inp", "out", "write", "read"),
    [
        ("claude-opus-4-8", 5, 25, 6.25, 0.5),
        ("claude-haiku-4-5", 1, 5, 1.25, 0.1),
        ("claude-opus-4-1", 15, 75, 18.75, 1.5),
        ("claude-sonnet-5-5", 2, 10, 2.5, 0.1),
        ("claude-3-5-haiku", 0.8, 4, 1, 0.08),
    ],
)
def test_builtin_prices_per_mtok(model, inp, out, write, read):
    table = PriceTable.builtin()
    one_mtok = 1_000_000
    assert table.price_call(model, Usage(input_tokens=one_mtok), 0).usd == inp
    assert table.price_call(model, Usage(output_tokens=one_mtok), 0).usd == out
    assert table.price_call(model, Usage(cache_write_tokens=one_mtok), 0).usd == write
    assert table.price_call(model, Usage(cache_read_tokens=one_mtok), 0).usd == read


def test_cache_tokens_are_not_counted_twice():
    # input_tokens is the uncached input only. Were it taken to include the cache tokens (OTel's
    # meaning), a call that is all cache read would also be charged input, or go negative.
    table = PriceTable.builtin()
    all_cached = table.price_call("claude-sonnet-4-6", Usage(cache_read_tokens=1_000_000), 0)
    assert (all_cached.usd, all_cached.input_usd, all_cached.cache_read_usd) == (0.3, 0.0, 0.3)
    # The uncached input is charged on its own figure, however large the cache figures are.
    mixed_usage = Usage(input_tokens=100, cache_read_tokens=900_000, cache_write_tokens=50_000)
    mixed = table.price_call("claude-sonnet-4-6", mixed_usage, 0)
    assert mixed.input_usd == 0.0003  # 100 x 3 / 1e6, not (100 + 950,000) x 3 / 1e6
    assert mixed.usd == 0.4578  # 0.0003 + 900,000 x 0.30 / 1e6 + 50,000 x 3.75 / 1e6 = 0.0003 + 0.27 + 0.1875


def test_dated_snapshot_ids_match_their_model():
    table = PriceTable.builtin()
    for snapshot, entry in [
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-3-7-sonnet-20250219", "claude-3-7-sonnet"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),  # Vertex spelling
        ("claude-opus-5-5-20261001", "claude-opus-5-5"),  # the longest match, not claude-opus-5
    ]:
        cost = table.price_call(snapshot, SHAPE, 1.0)
        assert (cost.priced_as, cost.model) == (entry, snapshot)
    assert table.price_call("claude-sonnet-4-5-20250929", SHAPE, 1.0).usd == 0.0924843  # same prices as 4.6


def test_a_bare_prefix_is_not_a_match():
    # claude-opus-5 is in the table; claude-opus-5-9 (no such entry) must not be priced as it.
    table = PriceTable.builtin()
    for model in ["claude-opus-5-9", "claude-sonnet-4-6-fast", "claude-opus-4-10", "claude-sonnet"]:
        assert table.lookup(model) is None, model


def test_unknown_model_is_unpriced_not_free():
    cost = PriceTable.builtin().price_call("smollm2-135m-instruct", SHAPE, 3.0)
    assert cost.unpriced is True
    assert cost.usd is None and cost.input_usd is None and cost.gpu_usd is None
    assert cost.version is None
    assert '[prices."smollm2-135m-instruct"]' in cost.note


def test_every_model_pydantic_ai_lists_is_priced():
    from pydantic_ai.models.anthropic import LatestAnthropicModelNames

    table = PriceTable.builtin()
    for model in typing.get_args(LatestAnthropicModelNames):
        assert table.price_call(model, SHAPE, 1.0).usd, model


def test_config_entry_replaces_the_builtin_entry_entirely():
    table = PriceTable.from_config(
        {"claude-sonnet-4-6": PriceConfig(input_per_mtok=2, output_per_mtok=12, version="negotiated-2026")}
    )
    cost = table.price_call("claude-sonnet-4-6", SHAPE, 1.0)
    # No cache prices in the config entry: cache tokens are charged at its input price ($2), not the
    # built-in $0.30 / $3.75.
    assert cost.input_usd == 0.004274  # 2,137 x 2 / 1e6
    assert cost.cache_write_usd == 0.03  # 15,000 x 2 / 1e6
    assert cost.cache_read_usd == 0.096422  # 48,211 x 2 / 1e6
    assert cost.output_usd == 0.012288  # 1,024 x 12 / 1e6
    assert cost.usd == 0.142984  # 0.004274 + 0.03 + 0.096422 + 0.012288
    assert (cost.version, cost.source) == ("negotiated-2026", "config")
    # Dated snapshots follow the override too; other models keep the built-in table.
    assert table.price_call("claude-sonnet-4-6-20260301", SHAPE, 1.0).version == "negotiated-2026"
    assert table.price_call("claude-opus-4-8", SHAPE, 1.0).version == BUILTIN_VERSION


def test_config_entry_with_cache_prices_and_default_version():
    config = PriceConfig(input_per_mtok=3, output_per_mtok=15, cache_write_per_mtok=3.75, cache_read_per_mtok=0.3)
    cost = PriceTable.from_config({"claude-sonnet-4-6": config}).price_call("claude-sonnet-4-6", SHAPE, 1.0)
    assert (cost.usd, cost.version) == (0.0924843, "config")


def test_open_model_priced_by_gpu_time():
    settings = Settings(prices={"qwen3-8b": PriceConfig(gpu_hour_usd=2.40, concurrency=4, version="gpu-a10-2026")})
    table = PriceTable.from_settings(settings)
    cost = table.price_call("qwen3-8b", Usage(input_tokens=5_000, output_tokens=700), seconds=3.0)
    assert cost.usd == 0.0005  # 2.40 $/h x 3.0 s / 3600 s/h / 4 calls sharing the GPU
    assert (cost.gpu_usd, cost.input_usd, cost.output_usd) == (0.0005, 0.0, 0.0)
    assert (cost.unpriced, cost.version, cost.source) == (False, "gpu-a10-2026", "config")
    # Tokens do not matter, seconds do.
    assert table.price_call("qwen3-8b", Usage(), seconds=90.0).usd == 0.015  # 2.40 x 90 / 3600 / 4


def test_open_model_priced_per_mtok():
    table = PriceTable.from_config({"llama-3.3-70b": PriceConfig(input_per_mtok=0.6, output_per_mtok=0.9)})
    usage = Usage(input_tokens=12_345, output_tokens=678, cache_read_tokens=1_000)
    cost = table.price_call("llama-3.3-70b", usage, 9.9)
    assert cost.input_usd == 0.007407  # 12,345 x 0.6 / 1e6
    assert cost.cache_read_usd == 0.0006  # 1,000 x 0.6 / 1e6 (no cache price: the input price)
    assert cost.output_usd == 0.0006102  # 678 x 0.9 / 1e6
    assert cost.usd == 0.0086172
    assert cost.gpu_usd == 0.0


def test_frontier_equivalent_of_an_open_call():
    table = PriceTable.from_config({"qwen3-8b": PriceConfig(gpu_hour_usd=2.40, concurrency=4)})
    open_usage = Usage(input_tokens=5_000, output_tokens=700, requests=1)
    eq = table.frontier_equivalent("claude-sonnet-4-6", open_usage)
    assert eq.usd == 0.0255  # 5,000 x 3 / 1e6 + 700 x 15 / 1e6 = 0.015 + 0.0105
    assert (eq.priced_as, eq.version, eq.unpriced) == ("claude-sonnet-4-6", BUILTIN_VERSION, False)
    # With a reported prefix-cache hit: priced as a cache read, or, on request, as uncached input.
    cached = Usage(input_tokens=1_000, cache_read_tokens=4_000, output_tokens=700)
    # 1,000 x 3 + 4,000 x 0.30 + 700 x 15, / 1e6
    assert table.frontier_equivalent("claude-sonnet-4-6", cached).usd == 0.0147
    assert table.frontier_equivalent("claude-sonnet-4-6", cached, uncached=True).usd == 0.0255
    # An unknown frontier model, or one priced by GPU time, has no equivalent.
    assert table.frontier_equivalent("claude-nonesuch-9", open_usage).usd is None
    gpu_eq = table.frontier_equivalent("qwen3-8b", open_usage)
    assert (gpu_eq.usd, gpu_eq.unpriced) == (None, True)


def test_long_context_rate_applies_to_every_token_above_the_threshold():
    table = PriceTable.builtin()
    # claude-haiku-5-5: $0.10 / $0.50 / $0.125 / $0.01 per Mtok; prompts over 100,000 tokens: 5x all.
    at_usage = Usage(input_tokens=60_000, cache_read_tokens=40_000, output_tokens=1_000, requests=1)
    at = table.price_call("claude-haiku-5-5", at_usage, 0)
    assert (at.usd, at.long_context) == (0.0069, False)  # 60,000 x 0.1 + 40,000 x 0.01 + 1,000 x 0.5, / 1e6
    over_usage = Usage(input_tokens=60_001, cache_read_tokens=40_000, output_tokens=1_000, requests=1)
    over = table.price_call("claude-haiku-5-5", over_usage, 0)
    assert (over.usd, over.long_context) == (0.0345005, True)  # 60,001 x 0.5 + 40,000 x 0.05 + 1,000 x 2.5, / 1e6
    # Two requests of ~60k each: judged per request (an estimate, said in the note).
    two = table.price_call("claude-haiku-5-5", Usage(input_tokens=120_000, output_tokens=2_000, requests=2), 0)
    assert (two.usd, two.long_context) == (0.013, False)  # 120,000 x 0.1 + 2,000 x 0.5, / 1e6
    assert "estimate" in two.note


def test_bad_config_entries_name_the_fix():
    with pytest.raises(ConfigError, match="keep one"):
        PriceTable.from_config({"m": PriceConfig(gpu_hour_usd=1.0, input_per_mtok=0.1)})
    with pytest.raises(ConfigError, match="needs input_per_mtok and output_per_mtok"):
        PriceTable.from_config({"m": PriceConfig(input_per_mtok=0.1)})
    with pytest.raises(ConfigError, match="needs input_per_mtok"):
        PriceTable.from_config({"m": PriceConfig(version="v1")})
    with pytest.raises(ConfigError, match="ISO date"):
        PriceTable.from_config({"m": PriceConfig(gpu_hour_usd=1.0, effective="Nov 2026")})


def test_bad_measurements_are_refused():
    table = PriceTable.builtin()
    with pytest.raises(ValueError):
        table.price_call("claude-sonnet-4-6", SHAPE, -1.0)
    with pytest.raises(ValueError):
        table.price_call("claude-sonnet-4-6", Usage(input_tokens=-5), 1.0)


def test_describe_lists_builtin_and_config_rows():
    table = PriceTable.from_config(
        {
            "qwen3-8b": PriceConfig(gpu_hour_usd=2.4, concurrency=4, effective="2026-11-01"),
            "llama-3.3-70b": PriceConfig(input_per_mtok=0.6, output_per_mtok=0.9),
        }
    )
    listing = describe(table)
    assert list(listing[0]) == [
        "model", "input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok",
        "gpu_hour_usd", "concurrency", "long_context", "effective", "version", "source",
    ]  # fmt: skip
    assert [r["model"] for r in listing] == sorted(r["model"] for r in listing)
    rows = {r["model"]: SimpleNamespace(**r) for r in listing}
    sonnet = rows["claude-sonnet-4-6"]
    prices = (sonnet.input_per_mtok, sonnet.output_per_mtok, sonnet.cache_read_per_mtok, sonnet.cache_write_per_mtok)
    assert prices == (3, 15, 0.3, 3.75)
    assert (sonnet.effective, sonnet.version, sonnet.source) == ("2026-03-13", BUILTIN_VERSION, "builtin")
    assert sonnet.gpu_hour_usd is None
    assert rows["claude-haiku-5-5"].long_context == "above 100,000 prompt tokens: 0.5 / 2.5 / 0.05 / 0.625"
    qwen = rows["qwen3-8b"]
    assert (qwen.gpu_hour_usd, qwen.concurrency, qwen.input_per_mtok) == (2.4, 4.0, None)
    assert (qwen.source, qwen.version) == ("config", "config")
    assert qwen.cache_read_per_mtok is None
    llama = rows["llama-3.3-70b"]
    assert (llama.cache_read_per_mtok, llama.cache_write_per_mtok) == (0.6, 0.6)  # charged at the input price


def test_prices_from_the_config_file(tmp_path, monkeypatch):
    from stakeflow.config import load_settings

    home = tmp_path / "h"
    home.mkdir()
    (home / "stakeflow.toml").write_text(
        '[prices."qwen3-8b"]\ngpu_hour_usd = 2.40\nconcurrency = 4\nversion = "gpu-2026-11"\n'
        '[prices."claude-haiku-4-5"]\ninput_per_mtok = 1\noutput_per_mtok = 5\ngpu_hour_usd = 1.0\n'
    )
    monkeypatch.setenv("STAKEFLOW_HOME", str(home))
    settings = load_settings()
    with pytest.raises(ConfigError, match=r'\[prices."claude-haiku-4-5"\] in .*stakeflow.toml sets both'):
        PriceTable.from_settings(settings)
    del settings.prices["claude-haiku-4-5"]
    cost = PriceTable.from_settings(settings).price_call("qwen3-8b", Usage(), seconds=3.0)
    assert (cost.usd, cost.version) == (0.0005, "gpu-2026-11")


def test_the_embedded_model_is_local_and_free_unless_configured():
    from stakeflow.config import PriceConfig
    from stakeflow.prices import LOCAL_VERSION

    table = PriceTable.from_config({})
    cost = table.price_call("smollm2-135m-instruct", SHAPE, 3.0)
    assert (cost.usd, cost.unpriced, cost.source, cost.version) == (0.0, False, "local", LOCAL_VERSION)
    configured = PriceTable.from_config({"smollm2-135m-instruct": PriceConfig(gpu_hour_usd=3.6)})
    cost = configured.price_call("smollm2-135m-instruct", SHAPE, 3.0)
    assert cost.source == "config" and cost.usd == 0.003


def test_the_bill_labels_local_open_calls():
    from stakeflow.agents.billing import cost_line
    from stakeflow.agents.types import CallCostRecord, CostSummary

    bill = CostSummary()
    for _ in range(3):
        bill.add("open", CallCostRecord(usd=0.0, frontier_equivalent_usd=0.002, local=True))
    assert cost_line(bill).startswith("cost $0.0000 (open 3 calls $0.0000, local · frontier 0 calls $0.0000)")
    assert "UNPRICED" not in cost_line(bill)
    bill.add("open", CallCostRecord(usd=0.001, frontier_equivalent_usd=0.002))
    assert "(open 4 calls $0.0010, 3 local ·" in cost_line(bill)
