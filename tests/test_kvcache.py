"""The HBM budget after the weights: KV bytes per token, tokens that fit, and the published capacities."""

from __future__ import annotations

import json

import pytest

from gdslab import kvcache
from gdslab.coldstart import model_bytes
from gdslab.kvcache import Attention, kv_bytes_per_token, tokens_that_fit

L405 = Attention.of_preset("llama-3.1-405b")


def test_kv_bytes_per_token_of_llama_405b():
    # 2 (K, V) × 126 layers × 8 KV heads × 128 head dim × 2 bytes
    assert kv_bytes_per_token(L405, "bf16") == 2 * 126 * 8 * 128 * 2 == 516_096
    assert kv_bytes_per_token(L405, "fp8") == 516_096 / 2
    assert kv_bytes_per_token(L405, "4bit") == 2 * 126 * 8 * 128 * (4 + 32 / 64) / 8  # group scales counted
    assert kv_bytes_per_token(L405, "3bit") == 516_096 * 3 / 16
    assert kv_bytes_per_token(L405, "bf16", tp=8) == 516_096  # 8 ranks, one KV head each


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


def test_the_budget_adds_up_and_names_its_reserve():
    b = tokens_that_fit("llama-3.1-405b", "fp8_e4m3", "bf16", "p5en", "vllm-default")
    assert b.weights + b.reserved + b.kv_cache == pytest.approx(b.hbm)
    assert b.reserved == pytest.approx(0.10 * 8 * 141e9)
    assert b.reserve.name == "vLLM default" and "gpu_memory_utilization" in b.reserve.source
    # pre-sharded: each rank holds 1/8 of the matrices and a copy of the norms
    norms = 126 * 2 * 16384 * 2 + 16384 * 2
    assert b.weights == pytest.approx(model_bytes("llama-3.1-405b", "fp8_e4m3") + 7 * norms)
    assert b.tokens == int(b.kv_cache // b.kv_per_token)
    bf16 = tokens_that_fit("llama-3.1-405b", "bf16", "bf16", "p5en", "vllm-default")
    assert bf16.tokens < b.tokens  # bf16 weights leave less room


def test_weights_that_do_not_fit_leave_no_tokens():
    b = tokens_that_fit("llama-3.1-405b", "bf16", "bf16", "p5", "vllm-default")  # 811 GB of weights, 640 GB of HBM
    assert b.kv_cache == 0 and b.tokens == 0


@pytest.mark.parametrize("published", kvcache.PUBLISHED, ids=lambda p: p.kv)
def test_the_published_p5en_capacities_within_ten_percent(published):
    projected = kvcache.published_basis(published.kv).tokens
    assert projected == pytest.approx(published.tokens, rel=0.10), (projected, published)
    if published.bound == "over":
        assert projected > published.tokens


def test_with_the_models_own_kv_heads_the_cache_per_token_is_sixteen_times_smaller():
    published = kvcache.published_basis("bf16")
    gqa = tokens_that_fit("llama-3.1-405b", "fp8_e4m3", "bf16", "p5en", "none")
    assert published.kv_per_token == 16 * gqa.kv_per_token == L405.gqa_factor * gqa.kv_per_token
    assert gqa.tokens == pytest.approx(16 * published.tokens, rel=1e-4)


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


def test_the_budget_table_labels_itself_a_projection():
    table = kvcache.budget_table(kvcache.budgets())
    assert "projection" in table and "fp8_e4m3 weights, 3bit KV" in table
