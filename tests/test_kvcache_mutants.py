"""The KV model where mutation testing found it unchecked (`make mutation`, docs/results/mutation.md).

Every expected value here is independent of `gdslab.kvcache`: a published figure with its unit and
source, a parameter count as transformers' LlamaForCausalLM counts it, or a value worked by hand with
its arithmetic beside it. Where the model is asked about a toy model, the toy is chosen so that the
hand arithmetic is exact (sums of powers of two, bf16 at 2 bytes a value).
"""

from __future__ import annotations

import json
import sys
import types

import pytest

from gdslab import kvcache
from gdslab.kvcache import Attention, Breakeven, Gpu, KVFormat, Node

MIB = 2**20
H200_MIB = 143_771  # one H200 as the device reports it (nvidia-smi memory.total)
# Llama 3.1 405B, config.json: 126 layers, 128 heads, 8 KV heads, head dim 128 (hidden 16,384 / 128),
# intermediate 53,248, vocab 128,256, untied. Parameters by hand: attention 16,384 × 128 × (128 + 16) + 128 × 128
# × 16,384 = 570,425,344; MLP 3 × 16,384 × 53,248 = 2,617,245,696; norms 32,768: 3,187,703,808 a layer, × 126
# = 401,650,679,808; embeddings and head 2 × 128,256 × 16,384 = 4,202,692,608; final norm 16,384.
L405 = Attention("llama-3.1-405b", 126, 128, 8, 128, 405_853_388_800)


# --- Attention.of_config -------------------------------------------------------------------------

# A small Llama as transformers builds it. LlamaForCausalLM(LlamaConfig(num_hidden_layers=2,
# num_attention_heads=4, num_key_value_heads=2, hidden_size=64, intermediate_size=96, vocab_size=100))
# on the meta device has 74,560 parameters (68,160 with tie_word_embeddings=True), counted with
# sum(p.numel() for p in model.parameters()) under transformers 5. By hand: per layer q 64×64, k and v
# 64×32 each, o 64×64 (12,288), MLP 3 × 64 × 96 (18,432), two norms (128): 30,848; × 2 layers = 61,696;
# embeddings 100 × 64 = 6,400, the output head another 6,400 unless tied, the final norm 64.
SMALL = {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 64,
         "intermediate_size": 96, "vocab_size": 100}


def test_a_small_llamas_parameters_as_transformers_counts_them():
    assert Attention.of_config(SMALL).params == 74_560
    assert Attention.of_config({**SMALL, "tie_word_embeddings": True}).params == 68_160
    assert Attention.of_config({**SMALL, "tie_word_embeddings": False}).params == 74_560


def test_missing_sizes_take_transformers_defaults():
    # no intermediate_size: 4 × hidden = 256, MLP 3 × 64 × 256 = 49,152 a layer: (12,288 + 49,152 + 128) × 2
    # = 123,136, + 12,800 embeddings + 64 = 136,000
    no_inter = {k: v for k, v in SMALL.items() if k != "intermediate_size"}
    assert Attention.of_config(no_inter).params == 136_000
    # no vocab_size: no embeddings counted: 61,696 + 64
    no_vocab = {k: v for k, v in SMALL.items() if k != "vocab_size"}
    assert Attention.of_config(no_vocab).params == 61_760


def test_an_explicit_head_dim_wins_over_hidden_over_heads():
    # Gemma-style: head_dim (32) is not hidden / heads (16)
    a = Attention.of_config({**SMALL, "head_dim": 32})
    assert a.head_dim == 32
    assert Attention.of_config(SMALL).head_dim == 16  # 64 / 4


def test_the_name_comes_from_the_argument_the_folder_or_the_model_type(tmp_path):
    folder = tmp_path / "my-llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(SMALL))
    assert Attention.of_config(folder).name == "my-llama"
    assert Attention.of_config(folder, name="given").name == "given"
    # a config file under another name, read as a file (not as a folder)
    other = folder / "llama-small.json"
    other.write_text(json.dumps({**SMALL, "num_hidden_layers": 3}))
    from_file = Attention.of_config(other)
    assert from_file.layers == 3 and from_file.name == "my-llama"
    assert Attention.of_config({**SMALL, "model_type": "llama"}).name == "llama"
    assert Attention.of_config(SMALL).name == "model"
    assert Attention.of_config(SMALL, name="given").name == "given"


def test_a_dict_config_missing_sizes_is_named_in_full():
    with pytest.raises(ValueError) as e:
        Attention.of_config({"vocab_size": 10})
    assert str(e.value) == ("config: not an attention model's config, missing num_hidden_layers, "
                            "num_attention_heads, hidden_size")


@pytest.mark.parametrize("change", [
    {"num_hidden_layers": 0},
    {"num_attention_heads": 0, "num_key_value_heads": 1, "head_dim": 16},  # no division by zero first
    {"hidden_size": 0, "head_dim": 16},
    {"num_key_value_heads": -2},
    {"head_dim": -16},
], ids=lambda c: ",".join(c))
def test_a_size_below_one_is_refused(change):
    with pytest.raises(ValueError, match=r"^config: inconsistent attention sizes"):
        Attention.of_config({**SMALL, **change})


def test_heads_not_a_multiple_of_kv_heads_is_refused_with_both_counts():
    with pytest.raises(ValueError) as e:
        Attention.of_config({**SMALL, "num_key_value_heads": 3})
    assert str(e.value) == "config: inconsistent attention sizes (heads 4, KV heads 3)"


def test_sizes_of_one_are_a_model():
    a = Attention.of_config({"num_hidden_layers": 1, "num_attention_heads": 1, "num_key_value_heads": 1,
                             "hidden_size": 1, "head_dim": 1})
    assert (a.layers, a.heads, a.kv_heads, a.head_dim) == (1, 1, 1, 1)


# --- node_here: a fake CUDA source ------------------------------------------------------------------


def _fake_torch(available: bool, count: int, total: int, name: str = "NVIDIA H200") -> types.ModuleType:
    calls: list[tuple[str, int]] = []

    def mem_get_info(i):
        calls.append(("mem_get_info", i))
        return (total // 3, total) if i == 0 else (0, 1)

    def get_device_name(i):
        calls.append(("get_device_name", i))
        return name if i == 0 else "some other GPU"

    cuda = types.SimpleNamespace(is_available=lambda: available, device_count=lambda: count,
                                 mem_get_info=mem_get_info, get_device_name=get_device_name)
    torch = types.ModuleType("torch")
    torch.cuda = cuda
    torch.calls = calls
    return torch


def test_node_here_reads_the_device_through_cuda(monkeypatch):
    fake = _fake_torch(True, 8, H200_MIB * MIB)
    monkeypatch.setitem(sys.modules, "torch", fake)
    node = kvcache.node_here()
    assert node == Node("this machine (8× NVIDIA H200)", 8, float(H200_MIB * MIB),
                        "measured here: torch.cuda.mem_get_info total on cuda:0 (NVIDIA H200): 143,771 MiB")
    assert isinstance(node.hbm_per_gpu, float)
    assert ("mem_get_info", 0) in fake.calls and ("get_device_name", 0) in fake.calls


@pytest.mark.parametrize("available,count", [(False, 8), (True, 0)])
def test_node_here_without_a_usable_gpu_says_it_used_the_published_figure(monkeypatch, available, count):
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(available, count, 1))
    node = kvcache.node_here("p5")
    published = kvcache.NODES["p5"]
    assert (node.name, node.gpus, node.hbm_per_gpu) == (published.name, 8, 81_559 * MIB)
    assert node.source == published.source + "; no GPU here, so the published figure is used"


def test_node_here_without_torch_falls_back(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    node = kvcache.node_here()
    assert node.hbm_per_gpu == H200_MIB * MIB and node.source.endswith("so the published figure is used")


# --- prefill, restore, breakeven, crossover --------------------------------------------------------

# A toy model whose arithmetic is exact: 1 layer, 1 head of dimension 1, no parameters. bf16 KV: K and V,
# 2 bytes each = 4 bytes a token (tp 1). Prefill FLOPs: 2 × 0 × t + 2 × 1 × 1 × 1 × t² = 2 t².
TOY = Attention("toy", 1, 1, 1, 1, 0)
ONE_TFLOP = Gpu("toy GPU", 1.0, "a toy: 1 TFLOP/s")  # 1 GPU × 1e12 × mfu 1: 1e12 FLOP/s


def test_recompute_is_flops_over_gpus_times_peak_times_mfu():
    one = Attention("one", 1, 1, 1, 1, 10**12)  # 2 × 1e12 × 1 + 2 × 1 = 2,000,000,000,002 FLOPs for a token
    assert kvcache.recompute_seconds(one, 1, ONE_TFLOP, gpus=1, mfu=1.0) == 2_000_000_000_002 / 1e12
    assert kvcache.recompute_seconds(TOY, 1000, ONE_TFLOP, gpus=2, mfu=0.25) == 2e6 / (2 * 1e12 * 0.25)
    # by name: the H200's dense BF16, 989.5 TFLOP/s (1,979 with sparsity, NVIDIA datasheet), 8 GPUs at 50%
    assert kvcache.recompute_seconds(TOY, 1000, "h200-bf16") == pytest.approx(2e6 / (8 * 989.5e12 * 0.5))


def test_restore_and_breakeven_count_the_fp16_residual_of_short_contexts():
    # KIVI 4-bit at 100 tokens: all 100 in the fp16 residual (128), 16 bits a value, not ~5
    # Llama 3.1 405B at TP 8: 2 × 126 × 8 × 128 = 258,048 values a token; 16 bits: 516,096 bytes
    assert kvcache.restore_seconds(L405, 100, 1.0, "kivi-4bit", tp=8) == pytest.approx(100 * 516_096 / 1e9)
    recompute = kvcache.recompute_seconds(L405, 100, "h200-bf16", 8, 0.5)
    assert kvcache.breakeven_gbps(L405, 100, "kivi-4bit") == pytest.approx(100 * 516_096 / recompute / 1e9)
    # and the mfu is the one given: at 25% of peak the prefill takes twice as long, the bar halves
    assert kvcache.breakeven_gbps(L405, 100, "kivi-4bit", mfu=0.25) == pytest.approx(
        100 * 516_096 / (2 * recompute) / 1e9)


def test_the_breakeven_table_by_hand():
    # the toy at 1,000 tokens: KV 4,000 bytes; prefill 2e6 FLOPs on 2 GPUs × 1e12 × 0.25 = 4 µs;
    # a restore of 4,000 bytes in 4 µs needs 1 GB/s
    rows = kvcache.breakeven_table(TOY, (1000,), "bf16", tp=1, gpus=2, prefills=("h200-bf16",), mfu=0.25)
    assert len(rows) == 1 and rows[0].tokens == 1000 and rows[0].kv_bytes == 4000.0
    assert rows[0].recompute_s["h200-bf16"] == pytest.approx(2e6 / (2 * 989.5e12 * 0.25))
    assert rows[0].needed_gbps["h200-bf16"] == pytest.approx(4000 / (2e6 / (2 * 989.5e12 * 0.25)) / 1e9)
    # KIVI at 100 tokens (all fp16) over tp 8 for the 405B: 100 × 516,096 bytes
    kivi = kvcache.breakeven_table(L405, (100,), "kivi-4bit", tp=8, prefills=("h200-bf16",))
    assert kivi[0].kv_bytes == pytest.approx(100 * 516_096)


def test_the_breakeven_text_as_printed():
    rows = [Breakeven(4096, 2.5e9, {"h200-bf16": 1.5}, {"h200-bf16": 3.25})]
    assert kvcache.format_breakeven(rows) == (
        "  context  KV bytes    recompute H200, BF16 dense  restore must beat"
        "   (projection; prefill at 50% of peak, assumed)\n"
        "    4,096     2.5GB                        1.50 s          3.25 GB/s")
    assert kvcache.format_breakeven([]) == "  context  KV bytes   (projection; prefill at 50% of peak, assumed)"


def test_the_crossover_at_exact_ties():
    # restore 4t / (g × 1e9) s; recompute 2t² / 1e12 s: equal at t = 2000 / g. At g = 2 GB/s, t = 1,000:
    # 4,000 / 2e9 = 2e-6 s both ways. A tie counts as a win for the restore.
    assert kvcache.crossover_tokens(TOY, 2.0, "bf16", tp=1, gpu=ONE_TFLOP, gpus=1, mfu=1.0) == 1000
    # at g = 1000, t = 2: it loses at 1 token (4e-12 > 2e-12), ties at 2 (8e-12 both ways)
    assert kvcache.crossover_tokens(TOY, 1000.0, "bf16", tp=1, gpu=ONE_TFLOP, gpus=1, mfu=1.0) == 2
    # wins from the first token: g = 2000 (4e-12 × ½ = 2e-12 ≤ 2e-12)
    assert kvcache.crossover_tokens(TOY, 2000.0, "bf16", tp=1, gpu=ONE_TFLOP, gpus=1, mfu=1.0) == 0


def test_the_crossover_searches_16m_tokens_and_no_further():
    # the tie at t = 2000 / g: g = 2000 / 2**24 puts it exactly at 16,777,216 tokens, found;
    # a tie two tokens later is beyond the search: None
    at = 2000 / 2**24
    assert kvcache.crossover_tokens(TOY, at, "bf16", tp=1, gpu=ONE_TFLOP, gpus=1, mfu=1.0) == 2**24
    beyond = 2000 / (2**24 + 2)
    assert kvcache.crossover_tokens(TOY, beyond, "bf16", tp=1, gpu=ONE_TFLOP, gpus=1, mfu=1.0) is None


def test_the_crossover_uses_the_tp_and_mfu_given():
    # tp 2 on the toy: one KV head on each of 2 ranks, replicated: 8 bytes a token, the tie moves to 4000 / g
    assert kvcache.crossover_tokens(TOY, 2.0, "bf16", tp=2, gpu=ONE_TFLOP, gpus=1, mfu=1.0) == 2000
    # mfu 0.5 doubles the recompute: 4t / 2e9 = 2 t² / 0.5e12 at t = 500
    assert kvcache.crossover_tokens(TOY, 2.0, "bf16", tp=1, gpu=ONE_TFLOP, gpus=1, mfu=0.5) == 500


def test_a_format_given_as_a_record_is_used_as_is():
    fmt = KVFormat("toy-4bit", 4, "a toy")
    assert kvcache.kv_format(fmt) is fmt
    assert kvcache.kv_bytes_per_token(TOY, fmt, 1) == 2 * 4 / 8


def test_the_breakeven_text_with_two_prefills():
    rows = [Breakeven(4096, 2.5e9, {"h200-bf16": 1.5, "h200-fp8": 0.75}, {"h200-bf16": 3.25, "h200-fp8": 6.5})]
    lines = kvcache.format_breakeven(rows).split("\n")
    assert lines[0] == ("  context  KV bytes    recompute H200, BF16 dense  restore must beat"
                        "     recompute H200, FP8 dense  restore must beat"
                        "   (projection; prefill at 50% of peak, assumed)")
    assert lines[1] == ("    4,096     2.5GB                        1.50 s          3.25 GB/s"
                        "                        0.75 s          6.50 GB/s")


# --- the budget, worked by hand ---------------------------------------------------------------------

H200 = H200_MIB * MIB  # 150,754,820,096 bytes
NORMS = 126 * 2 * 16_384 * 2 + 16_384 * 2  # 8,290,304 bytes of bf16 norms, on every rank
FP8_405B = 487_229_259_776  # Meta's FP8 release, bytes
BF16_405B = 811_706_777_600  # 405,853,388,800 parameters × 2


def test_an_fp8_kv_budget_on_a_p5en_by_hand():
    b = kvcache.tokens_that_fit("llama-3.1-405b", "fp8_e4m3", "fp8", "p5en", "vllm-default")
    weights = FP8_405B + 7 * NORMS  # 487,287,291,904: 1/8 of the matrices and all the norms on each of 8 ranks
    reserved = 0.1 * 8 * H200  # 120,603,856,076.8 (vLLM gpu_memory_utilization 0.9)
    free = 8 * H200 - weights - reserved  # 598,147,412,787.2
    per_token = 2 * 126 * 8 * 128 * 1  # fp8: one byte a value, 258,048 bytes
    assert (b.model, b.weights_dtype, b.kv, b.heads_counted) == ("llama-3.1-405b", "fp8_e4m3", "fp8", "KV heads")
    assert b.weights == pytest.approx(weights) and b.reserved == pytest.approx(reserved)
    assert b.kv_cache == pytest.approx(free) and b.kv_per_token == per_token
    assert b.tokens == 2_317_969  # 598,147,412,787.2 // 258,048
    assert b.hbm == 8 * H200 and b.node == kvcache.NODES["p5en"] and b.reserve == kvcache.RESERVES["vllm-default"]
    assert (b.context, b.window) == (131_072, 131_072)
    assert b.full_contexts() == 17 and b.full_contexts(1_000_000) == 2  # 2,317,969 // 131,072; // 1,000,000
    assert b.label == "llama-3.1-405b fp8_e4m3 weights, fp8 KV"
    assert b.describe() == ("llama-3.1-405b fp8_e4m3 weights, fp8 KV on P5en (8× H200): the node holds 2,317,969 "
                            "tokens of KV (projection), shared by the sequences in flight; one sequence is at most "
                            "131,072 tokens (the context window), so 17 full-window sequences fit at once")


def test_a_kivi_budget_counts_its_residual_at_the_context_given():
    # KIVI 4-bit over 131,072 tokens: (131,072 − 128) × 5 bits + 128 × 16, per value: 5.0107 bits
    bits = ((131_072 - 128) * 5 + 128 * 16) / 131_072
    b = kvcache.tokens_that_fit("llama-3.1-405b", "fp8_e4m3", "kivi-4bit", "p5en", "vllm-default")
    assert b.kv_per_token == pytest.approx(2 * 126 * 8 * 128 * bits / 8) and b.tokens == 3_700_800
    short = kvcache.tokens_that_fit("llama-3.1-405b", "fp8_e4m3", "kivi-4bit", "p5en", "vllm-default", context=128)
    assert short.kv_per_token == 2 * 126 * 8 * 128 * 2 and short.context == 128  # all 128 tokens in fp16


def test_every_head_counts_all_128_heads_and_says_so():
    b = kvcache.tokens_that_fit("llama-3.1-405b", "fp8_e4m3", "bf16", "p5en", "none", every_head=True)
    assert b.heads_counted == "every attention head" and b.kv_per_token == 2 * 126 * 128 * 128 * 2  # 8,257,536
    assert b.reserved == 0 and b.reserve.name == "none"


def test_a_node_and_reserve_given_as_records():
    node = Node("two H200", 2, float(H200), "a toy")
    reserve = kvcache.Reserve("half", 0.5, "a toy")
    b = kvcache.tokens_that_fit("llama-3.1-8b", "bf16", "bf16", node, reserve)
    assert b.node is node and b.reserve is reserve and b.reserved == H200  # 0.5 × 2 GPUs
    assert kvcache.RESERVES["vllm-default"].bytes_per_gpu(kvcache.NODES["p5"]) == pytest.approx(0.1 * 81_559 * MIB)


def test_weights_per_rank_keep_the_norms_whole():
    assert kvcache.weights_per_rank("llama-3.1-405b", "bf16", 8) == pytest.approx((BF16_405B - NORMS) / 8 + NORMS)
    assert kvcache.weights_per_rank("llama-3.1-405b", "fp8_e4m3", 1) == FP8_405B


def test_budgets_are_every_weights_by_kv_pair_in_order():
    rows = kvcache.budgets()
    assert [(b.weights_dtype, b.kv) for b in rows] == [(w, k) for w in ("bf16", "fp8_e4m3") for k in (
        "bf16", "fp8", "kivi-4bit", "turboquant-3.5bit", "kivi-2bit")]
    assert all(b.reserve.name == "vLLM default" and b.node.name == "P5en (8× H200)" for b in rows)
    p5 = kvcache.budgets(node="p5", reserve="none", weights=("fp8_e4m3",), kvs=("kivi-4bit",), context=128)
    assert len(p5) == 1 and p5[0].node.gpus == 8 and p5[0].reserved == 0 and p5[0].context == 128


def test_the_budget_table_as_printed():
    b = kvcache.tokens_that_fit("llama-3.1-405b", "fp8_e4m3", "fp8", "p5en", "vllm-default")
    lines = kvcache.budget_table([b]).split("\n")
    assert lines[0] == ("configuration                                          weights  reserve  KV cache  KB/token "
                        " node KV tokens  sequences of 131,072 (the window)  (projection)")
    # 487 GB of weights, 121 GB reserved, 598 GB of KV, 258.0 KB a token, 2,317,969 tokens, 17 windows
    assert lines[1] == ("llama-3.1-405b fp8_e4m3 weights, fp8 KV                  487GB    121GB     598GB     "
                        "258.0       2,317,969     17")
    assert len(lines) == 2
    assert "sequences of 131,072 (the window)" in kvcache.budget_table([])


def test_the_published_checks_with_the_models_own_heads():
    rows = kvcache.check_published("vllm-default")
    bf16 = next(r for r in rows if r.published.kv == "bf16")
    # GQA (8 KV heads, 516,096 bytes a token at bf16) after the 10% reserve: 598,147,412,787.2 // 516,096
    assert bf16.own_heads == 1_158_984
    assert kvcache.check_published()[0].own_heads == int((8 * H200 - FP8_405B - 7 * NORMS) // 516_096)


# --- per-token arithmetic at the edges ----------------------------------------------------------------


def test_kv_heads_per_rank_at_exact_multiples():
    assert [kvcache.kv_heads_per_rank(L405, tp) for tp in (1, 2, 3, 8, 9, 16)] == [8, 4, 3, 1, 1, 1]
    # 16 ranks, 8 KV heads: every rank a whole head, 2 × 126 × 1 × 16 × 128 values a token (twice 8 ranks')
    assert kvcache.kv_values_per_token(L405, 16) == 516_096 and kvcache.kv_values_per_token(L405, 8) == 258_048
    assert kvcache.kv_values_per_token(L405, 3) == 2 * 126 * 3 * 3 * 128  # 3 heads on each of 3 ranks: 9 held


@pytest.mark.parametrize("context,bits", [(128, 16.0), (129, (5 + 128 * 16) / 129), (1, 16.0)])
def test_kivi_at_the_edge_of_its_fp16_residual(context, bits):
    assert kvcache.KV_FORMATS["kivi-4bit"].bits_per_value(128, context) == pytest.approx(bits)


def test_bad_sizes_and_names_are_refused():
    with pytest.raises(ValueError, match=r"^context and head_dim must be positive, got 0, 128$"):
        kvcache.KV_FORMATS["bf16"].bits_per_value(128, 0)
    with pytest.raises(ValueError, match=r"^context and head_dim must be positive, got 10, 0$"):
        kvcache.KV_FORMATS["bf16"].bits_per_value(0, 10)
    with pytest.raises(ValueError, match=r"^unknown KV format 'int3'; choose from bf16, fp8, kivi-4bit"):
        kvcache.kv_format("int3")
    with pytest.raises(ValueError, match=r"^unknown model 'gpt'; choose from "):
        Attention.of_preset("gpt")


def test_the_405b_preset_is_its_config():
    a = Attention.of_preset("llama-3.1-405b")
    assert (a.name, a.layers, a.heads, a.kv_heads, a.head_dim, a.params, a.max_context) == (
        "llama-3.1-405b", 126, 128, 8, 128, 405_853_388_800, 131_072)
    assert a.gqa_factor == 16.0


def test_the_implied_bits_on_a_p6():
    # 660K tokens on a P6 (8 × 180 GB): (1,440 GB − FP8 weights) × 8 bits / (660,000 × 2 × 126 × 128 × 128)
    row = next(c for c in kvcache.check_published() if c.published.node == "p6")
    free = 8 * 180e9 - FP8_405B - 7 * NORMS
    assert row.implied_bits == pytest.approx(free * 8 / (660_000 * 2 * 126 * 128 * 128))
    assert kvcache.published_basis("bf16", "p6").node.hbm_per_gpu == 180e9


def test_the_budget_table_names_the_window_of_its_rows():
    from dataclasses import replace

    b = replace(kvcache.tokens_that_fit("llama-3.1-405b", "fp8_e4m3", "fp8"), window=8192)
    table = kvcache.budget_table([b])
    assert "sequences of 8,192 (the window)" in table and table.split("\n")[1].endswith(f"{2_317_969 // 8192:>6}")


def test_the_defaults_are_the_405b_on_a_p5en_at_bf16():
    # kv_values_per_token: tp 1: 2 × 126 × 8 × 128 = 258,048 values; a toy with one KV head shows tp 1 is no copy
    assert kvcache.kv_values_per_token(L405) == 258_048 and kvcache.kv_bytes_per_token(TOY) == 4.0
    assert kvcache.kv_values_per_token(TOY) == 2  # K and V of one head of dimension 1 on one rank
    # TurboQuant's norm is per 128-value head vector by default: 3.5 + 16 / 128
    assert kvcache.KV_FORMATS["turboquant-3.5bit"].bits_per_value() == 3.5 + 16 / 128
    # FP8 weights, bf16 KV, a P5en with vLLM's reserve: 598,147,412,787.2 // 516,096 = 1,158,984 tokens
    b = kvcache.tokens_that_fit()
    assert (b.model, b.weights_dtype, b.kv, b.tokens) == ("llama-3.1-405b", "fp8_e4m3", "bf16", 1_158_984)
    a = Attention.of_preset("llama-3.1-405b")
    assert isinstance(a.head_dim, int)  # 16,384 // 128, a whole number of values
    with pytest.raises(ValueError) as e:
        Attention.of_preset("gpt")
    assert str(e.value) == "unknown model 'gpt'; choose from " + ", ".join(kvcache.PRESETS)
