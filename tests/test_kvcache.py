"""The HBM budget after the weights: KV bytes per token, tokens that fit, and the published capacities."""

from __future__ import annotations

import json

import pytest

from gdslab import kvcache
from gdslab.coldstart import model_bytes
from gdslab.kvcache import Attention, kv_bytes_per_token, tokens_that_fit

L405 = Attention.of_preset("llama-3.1-405b")


VALUES = 2 * 126 * 8 * 128  # K and V × layers × KV heads × head dim, Llama 3.1 405B (config.json)
H200_BYTES = 143_771 * 2**20  # one H200 as nvidia-smi / torch.cuda.mem_get_info report it


def test_kv_bytes_per_token_of_llama_405b():
    assert kv_bytes_per_token(L405, "bf16") == VALUES * 2 == 516_096
    assert kv_bytes_per_token(L405, "fp8") == 516_096 / 2
    assert kv_bytes_per_token(L405, "bf16", tp=8) == 516_096  # 8 ranks, one KV head each


# Compressed KV as published, overheads counted per value for a sequence of `context` tokens, worked out by hand:
# KIVI (Liu et al. 2024): groups of 32 values share an fp16 scale and zero point (32 bits → +1 bit a value),
# the most recent 128 tokens stay fp16. TurboQuant (Zandieh et al. 2025): ~3.5 bits a value plus each
# 128-value head vector's norm (fp16 assumed: +16/128 bits).
FORMATS = [
    ("kivi-4bit", 131072, ((131072 - 128) * (4 + 1) + 128 * 16) / 131072),
    ("kivi-4bit", 1024, ((1024 - 128) * 5 + 128 * 16) / 1024),
    ("kivi-4bit", 100, 16.0),  # shorter than the residual: all fp16
    ("kivi-2bit", 131072, ((131072 - 128) * (2 + 1) + 128 * 16) / 131072),
    ("turboquant-3.5bit", 131072, 3.5 + 16 / 128),
    ("turboquant-3.5bit", 1024, 3.5 + 16 / 128),  # no residual: the same at any length
    ("turboquant-2.5bit", 4096, 2.5 + 16 / 128),
]


@pytest.mark.parametrize("name,context,bits", FORMATS, ids=[f"{f}@{c}" for f, c, _ in FORMATS])
def test_compressed_kv_counts_its_overheads_per_token(name, context, bits):
    assert kvcache.KV_FORMATS[name].bits_per_value(128, context) == pytest.approx(bits)
    assert kv_bytes_per_token(L405, name, 8, context) == pytest.approx(VALUES * bits / 8)
    assert bits > kvcache.KV_FORMATS[name].bits  # never the bare code width


def test_a_bad_context_is_refused():
    with pytest.raises(ValueError, match="context"):
        kvcache.KV_FORMATS["kivi-4bit"].bits_per_value(128, 0)
    with pytest.raises(ValueError, match="unknown KV format"):
        kv_bytes_per_token(L405, "3bit")


def test_ranks_beyond_the_kv_heads_replicate_them():
    l8 = Attention.of_preset("llama-3.1-8b")  # 8 KV heads
    assert kv_bytes_per_token(l8, "bf16", tp=16) == 2 * kv_bytes_per_token(l8, "bf16", tp=8)
    assert kvcache.kv_heads_per_rank(l8, 16) == 1 and kvcache.kv_heads_per_rank(l8, 2) == 4


def test_a_hugging_face_config_gives_the_same_model(tmp_path):
    config = {"num_hidden_layers": 126, "num_attention_heads": 128, "num_key_value_heads": 8,
              "hidden_size": 16384, "intermediate_size": 53248, "vocab_size": 128256, "model_type": "llama"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    from_file = Attention.of_config(tmp_path)
    assert (from_file.layers, from_file.heads, from_file.kv_heads, from_file.head_dim) == (126, 128, 8, 128)
    assert from_file.params == L405.params
    no_gqa = Attention.of_config({k: v for k, v in config.items() if k != "num_key_value_heads"})
    assert no_gqa.kv_heads == 128  # as transformers: no num_key_value_heads means one KV head per query head


def test_a_bad_config_is_named(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    with pytest.raises(ValueError, match=r"config\.json.*missing num_hidden_layers"):
        Attention.of_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json: cannot read"):
        Attention.of_config(tmp_path / "config.json")


def test_the_h200_is_the_byte_count_the_device_reports():
    node = kvcache.NODES["p5en"]
    assert node.hbm_per_gpu == H200_BYTES and round(node.hbm_per_gpu / 1e9, 2) == 150.75
    assert "143,771 MiB" in node.source and "141 GB" in node.source


def test_node_here_says_which_hbm_it_used():
    import torch

    node = kvcache.node_here()
    if torch.cuda.is_available():
        assert node.hbm_per_gpu == torch.cuda.mem_get_info(0)[1] and "mem_get_info" in node.source
    else:
        assert node.hbm_per_gpu == H200_BYTES and "no GPU here" in node.source


def test_the_budget_adds_up_and_names_its_reserve():
    b = tokens_that_fit("llama-3.1-405b", "fp8_e4m3", "bf16", "p5en", "vllm-default")
    assert b.weights + b.reserved + b.kv_cache == pytest.approx(b.hbm)
    assert b.reserved == pytest.approx(0.10 * 8 * H200_BYTES)
    assert b.reserve.name == "vLLM default" and "gpu_memory_utilization" in b.reserve.source
    # pre-sharded: each rank holds 1/8 of the matrices and a copy of the norms
    norms = 126 * 2 * 16384 * 2 + 16384 * 2
    assert b.weights == pytest.approx(model_bytes("llama-3.1-405b", "fp8_e4m3") + 7 * norms)
    assert b.tokens == int(b.kv_cache // b.kv_per_token)
    bf16 = tokens_that_fit("llama-3.1-405b", "bf16", "bf16", "p5en", "vllm-default")
    assert bf16.tokens < b.tokens  # bf16 weights leave less room


def test_the_context_window_is_not_the_nodes_kv_capacity():
    b = tokens_that_fit("llama-3.1-405b", "fp8_e4m3", "bf16", "p5en", "vllm-default")
    assert b.window == 131_072  # Llama 3.1 config.json: max_position_embeddings
    free = 8 * H200_BYTES * 0.9 - b.weights
    assert b.tokens == int(free // 516_096) and b.tokens > 1_000_000  # shared by every sequence in flight
    assert b.full_contexts() == b.tokens // 131_072 == 8
    assert "131,072 tokens (the context window)" in b.describe() and f"{b.tokens:,}" in b.describe()


def test_a_config_gives_its_context_window():
    config = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64, "max_position_embeddings": 8192}
    assert Attention.of_config(config).max_context == 8192


def test_weights_that_do_not_fit_leave_no_tokens():
    b = tokens_that_fit("llama-3.1-405b", "bf16", "bf16", "p5", "vllm-default")  # 811 GB of weights, 684 GB of HBM
    assert b.kv_cache == 0 and b.tokens == 0


FP8_WEIGHTS = 487.23e9 + 7 * (126 * 2 * 16384 * 2 + 16384 * 2)  # Meta's FP8 405B, norms on every rank
EVERY_HEAD = 2 * 126 * 128 * 128  # values per token counting all 128 attention heads (the published basis)

# The published capacities (AWS GDS post), the model's projection on the published basis worked out here
# (FP8 weights, no reserve, every head), and whether it was fitted on the figure.
PUBLISHED = [
    # kv,                  node,   HBM per GPU,  published, bits/value,       fitted, within ±10%
    ("bf16", "p5en", H200_BYTES, 82_000, 16, True, True),
    ("turboquant-3.5bit", "p5en", H200_BYTES, 400_000, 3.5 + 16 / 128, False, True),
    ("turboquant-3.5bit", "p6", 180e9, 660_000, 3.5 + 16 / 128, False, False),
]


@pytest.mark.parametrize("kv,node,hbm,published,bits,fitted,hit", PUBLISHED, ids=[f"{p[1]}-{p[0]}" for p in PUBLISHED])
def test_the_published_capacities_on_their_basis(kv, node, hbm, published, bits, fitted, hit):
    expected = int((8 * hbm - FP8_WEIGHTS) // (EVERY_HEAD * bits / 8))
    row = next(c for c in kvcache.check_published() if c.published.tokens == published)
    assert row.published.fitted == fitted and row.published.kv == kv and row.published.node == node
    assert row.projected == pytest.approx(expected, rel=2e-3)
    assert (abs(row.ratio - 1) <= 0.10) == hit
    # what the published figure needs, all overheads in, on its own basis
    assert row.implied_bits == pytest.approx((8 * hbm - FP8_WEIGHTS) * 8 / (published * EVERY_HEAD), rel=2e-3)


def test_turboquant_as_published_does_not_reach_over_400k_on_the_published_basis():
    tq = next(c for c in kvcache.check_published() if c.published.bound == "over")
    assert tq.projected < tq.published.tokens  # 3.5 bits + a norm: ~384K, not "over 400K"
    assert 3.4 < tq.implied_bits < 3.5 + 16 / 128  # 400K needs ~3.48 bits a value, the norm included
    p6 = next(c for c in kvcache.check_published() if c.published.node == "p6")
    assert p6.implied_bits < 3.0  # 660K needs under 3 bits: the 2.5-bit setting, not the 3.5


def test_with_the_models_own_kv_heads_the_node_holds_over_400k_bf16_tokens():
    published = kvcache.published_basis("bf16")
    gqa = tokens_that_fit("llama-3.1-405b", "fp8_e4m3", "bf16", "p5en", "none")
    assert published.kv_per_token == 16 * gqa.kv_per_token == L405.gqa_factor * gqa.kv_per_token
    assert gqa.tokens == pytest.approx(16 * published.tokens, rel=1e-4)
    assert gqa.tokens > 400_000 and tokens_that_fit("llama-3.1-405b", "fp8_e4m3", "bf16").tokens > 400_000


def test_restore_beats_recompute_beyond_the_crossover():
    slow = 1.0  # GB/s
    t = kvcache.crossover_tokens(L405, slow)
    assert t and t > 1
    assert kvcache.restore_seconds(L405, t, slow) <= kvcache.recompute_seconds(L405, t)
    assert kvcache.restore_seconds(L405, t - 1, slow) > kvcache.recompute_seconds(L405, t - 1)
    assert kvcache.crossover_tokens(L405, 100.0) == 0  # fast storage: restoring wins from the first token
    # a prefill is linear plus quadratic in tokens; reading back is linear
    assert kvcache.prefill_flops(L405, 2000) > 2 * kvcache.prefill_flops(L405, 1000)
    assert kvcache.restore_seconds(L405, 2000, slow) == pytest.approx(2 * kvcache.restore_seconds(L405, 1000, slow))


def test_the_bandwidth_a_restore_must_beat():
    t = 131_072
    kv = t * 516_096
    flops = 2 * L405.params * t + 2 * 126 * 128 * 128 * t * t
    bf16 = flops / (8 * 989.5e12 * 0.5)  # 8× H200, dense BF16, 50% of peak (assumed)
    assert kvcache.breakeven_gbps(L405, t) == pytest.approx(kv / bf16 / 1e9)
    assert kvcache.breakeven_gbps(L405, t, gpu="h200-fp8") == pytest.approx(kv / (bf16 / 2) / 1e9, rel=1e-3)
    rows = kvcache.breakeven_table(L405)
    needed = [r.needed_gbps["h200-bf16"] for r in rows]
    assert needed == sorted(needed, reverse=True)  # longer contexts: a restore needs less bandwidth
    assert 1.4 < needed[-1] < 1.6 and 2.9 < rows[-1].needed_gbps["h200-fp8"] < 3.1
    # FP8 prefill halves the recompute, so at a given restore rate restoring starts to win later
    assert kvcache.crossover_tokens(L405, 1.0, gpu="h200-fp8") > kvcache.crossover_tokens(L405, 1.0) > 0
    assert "restore must beat" in kvcache.format_breakeven(rows)


def test_the_budget_table_labels_itself_a_projection():
    table = kvcache.budget_table(kvcache.budgets())
    assert "projection" in table and "fp8_e4m3 weights, turboquant-3.5bit KV" in table and "131,072" in table
