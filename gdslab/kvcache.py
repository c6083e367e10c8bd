"""The HBM budget after the weights: KV-cache bytes per token, and the tokens a node holds. A projection.

A served model's GPU memory holds three things: the weights (bf16 or FP8, pre-sharded so each
rank holds its slice), a reserve for activations and the runtime (an explicit, named input:
vLLM keeps 10% of each GPU by default), and the KV cache, which fills the rest. Each token
of context costs `2 (K and V) × layers × KV heads × head dim` values in the cache; at what
precision (bf16, FP8, or 4- and 3-bit compressed KV) decides how many tokens fit.

Tensor parallelism divides the KV heads over the ranks; where there are more ranks than KV
heads, each rank still holds a whole head, so heads are replicated and the node pays more
per token. `tokens_that_fit` counts that.

`PUBLISHED` holds the context capacities AWS published for Llama 3.1 405B on a P5en;
`published_basis` is the set of inputs under which this model reproduces them, and
`test_kvcache.py` checks it within ±10%. Those figures count every attention head in the
cache (as if the model had no grouped-query attention); Llama 3.1 405B keeps 8 KV heads for
its 128 query heads, so its real cache per token is 16× smaller (see `gqa_factor`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

from .coldstart import AWS_GDS_BLOG, model_bytes
from .synthetic import PRESETS

LABEL = "projection"
GB = 1e9

# --- the model: what decides the KV cache --------------------------------------------------------


@dataclass(frozen=True)
class Attention:
    """A model's attention geometry and size: all the KV cache and a prefill depend on."""

    name: str
    layers: int
    heads: int  # query heads
    kv_heads: int  # key/value heads (grouped-query attention keeps fewer than `heads`)
    head_dim: int
    params: int  # parameters, for the prefill's FLOPs

    @property
    def gqa_factor(self) -> float:
        """How many query heads share one KV head: 16 for Llama 3.1 405B (128 / 8)."""
        return self.heads / self.kv_heads

    @classmethod
    def of_preset(cls, name: str) -> "Attention":
        """From one of gdslab's Llama presets (their dimensions are the published configs')."""
        if name not in PRESETS:
            raise ValueError(f"unknown model {name!r}; choose from {', '.join(PRESETS)}")
        shape = PRESETS[name]
        params = sum(math.prod(dims) for _, dims in shape.tensors())
        return cls(name, shape.layers, shape.heads, shape.kv_heads, shape.hidden // shape.heads, params)

    @classmethod
    def of_config(cls, config: str | os.PathLike | dict, name: str | None = None) -> "Attention":
        """From a Hugging Face `config.json` (a path, the folder holding it, or its dict).

        Needs num_hidden_layers, num_attention_heads and hidden_size; num_key_value_heads
        defaults to the query heads (no GQA) and head_dim to hidden_size / heads, as
        transformers does. Parameters are counted from the config (embeddings, attention,
        MLP, norms, and the output head unless tied).
        """
        where = "config"
        if not isinstance(config, dict):
            path = Path(config)
            path = path / "config.json" if path.is_dir() else path
            where = str(path)
            try:
                config = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}: cannot read a model config: {e}") from None
            name = name or path.parent.name
        missing = [k for k in ("num_hidden_layers", "num_attention_heads", "hidden_size") if k not in config]
        if missing:
            raise ValueError(f"{where}: not an attention model's config, missing {', '.join(missing)}")
        layers, heads, hidden = (int(config[k]) for k in ("num_hidden_layers", "num_attention_heads", "hidden_size"))
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or hidden // heads)
        if min(layers, heads, hidden, kv_heads, head_dim) < 1 or heads % kv_heads:
            raise ValueError(f"{where}: inconsistent attention sizes (heads {heads}, KV heads {kv_heads})")
        vocab = int(config.get("vocab_size", 0))
        inter = int(config.get("intermediate_size", 4 * hidden))
        attention = hidden * head_dim * (heads + 2 * kv_heads) + heads * head_dim * hidden
        per_layer = attention + 3 * hidden * inter + 2 * hidden
        tied = bool(config.get("tie_word_embeddings", False))
        params = layers * per_layer + vocab * hidden * (1 if tied else 2) + hidden
        return cls(name or str(config.get("model_type", "model")), layers, heads, kv_heads, head_dim, params)


# --- KV precision ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KVFormat:
    """How each cached key/value is stored: bits per value, plus any per-group scales."""

    name: str
    bits: float
    source: str
    group: int = 0  # values sharing one set of scales (0: none stored per group)
    scale_bits: int = 0  # bits of those scales per group (an fp16 scale and zero point: 32)

    @property
    def bits_per_value(self) -> float:
        return self.bits + (self.scale_bits / self.group if self.group else 0.0)


KV_FORMATS: dict[str, KVFormat] = {
    "bf16": KVFormat("bf16", 16, "the model's own precision; vLLM's default KV-cache dtype"),
    "fp8": KVFormat("fp8", 8, "FP8 (E4M3) KV cache, one scale per tensor (vLLM kv_cache_dtype='fp8')"),
    "4bit": KVFormat("4bit", 4, "group-wise asymmetric quantization, an fp16 scale and zero point per 64 "
                                "values (as KIVI, Liu et al., ICML 2024; the group size is assumed)",
                     group=64, scale_bits=32),
    "3bit": KVFormat("3bit", 3, "TurboQuant (Zandieh et al., arXiv 2504.19874): near-lossless KV at about 3 "
                                "bits a value after a random rotation, no per-group constants; 'TurboQuant "
                                "KV cache compression (3–4 bits per value)' in " + AWS_GDS_BLOG),
}


def kv_format(name: str | KVFormat) -> KVFormat:
    if isinstance(name, KVFormat):
        return name
    if name not in KV_FORMATS:
        raise ValueError(f"unknown KV format {name!r}; choose from {', '.join(KV_FORMATS)}")
    return KV_FORMATS[name]


def kv_heads_per_rank(model: Attention, tp: int) -> int:
    """KV heads each rank holds: its share, or one whole (replicated) head when ranks outnumber heads."""
    return max(1, math.ceil(model.kv_heads / tp))


def kv_bytes_per_token(model: Attention, fmt: str | KVFormat = "bf16", tp: int = 1) -> float:
    """Bytes of KV cache one token costs across all `tp` ranks (replicated heads counted)."""
    values = 2 * model.layers * kv_heads_per_rank(model, tp) * tp * model.head_dim
    return values * kv_format(fmt).bits_per_value / 8


# --- the node and its budget ------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    name: str
    gpus: int
    hbm_per_gpu: float  # bytes
    source: str


NODES: dict[str, Node] = {
    "p5en": Node("P5en (8× H200)", 8, 141 * GB, "p5en.48xlarge: 8× NVIDIA H200, 141 GB HBM3e each (NVIDIA H200 datasheet)"),
    "p5": Node("P5 (8× H100)", 8, 80 * GB, "p5.48xlarge: 8× NVIDIA H100, 80 GB HBM3 each (NVIDIA H100 datasheet)"),
}


@dataclass(frozen=True)
class Reserve:
    """GPU memory kept out of the KV cache for activations, the CUDA context, graphs: a named input."""

    name: str
    fraction: float  # of each GPU's HBM
    source: str

    def bytes_per_gpu(self, node: Node) -> float:
        return self.fraction * node.hbm_per_gpu


RESERVES: dict[str, Reserve] = {
    "vllm-default": Reserve("vLLM default", 0.10, "vLLM gpu_memory_utilization=0.9 (its default): 10% of each "
                                                  "GPU is left for activations and the runtime"),
    "none": Reserve("none", 0.0, "nothing held back: the whole HBM after the weights counted as KV cache"),
}


def weights_per_rank(model: str, dtype: str, tp: int) -> float:
    """Bytes of weights one rank holds, pre-sharded: its 1/tp of the matrices plus the replicated norms."""
    shape = PRESETS[model]
    replicated = sum(math.prod(dims) for _, dims in shape.tensors() if len(dims) == 1) * 2  # norms stay bf16
    return (model_bytes(model, dtype) - replicated) / tp + replicated


@dataclass(frozen=True)
class Budget:
    """One configuration's HBM, node-wide: weights, reserve, KV cache, and the tokens the cache holds."""

    model: str
    weights_dtype: str
    kv: str
    node: Node
    reserve: Reserve
    weights: float  # bytes, node-wide
    reserved: float
    kv_cache: float
    kv_per_token: float
    tokens: int
    heads_counted: str  # "KV heads" (the model's GQA) or "every attention head" (the published basis)

    @property
    def hbm(self) -> float:
        return self.node.gpus * self.node.hbm_per_gpu

    @property
    def label(self) -> str:
        return f"{self.model} {self.weights_dtype} weights, {self.kv} KV"

    def full_contexts(self, context: int = 131072) -> int:
        """How many sequences of `context` tokens fit at once (Llama 3.1's window is 128K)."""
        return self.tokens // context


def tokens_that_fit(model: str = "llama-3.1-405b", weights_dtype: str = "fp8_e4m3", kv: str | KVFormat = "bf16",
                    node: str | Node = "p5en", reserve: str | Reserve = "vllm-default",
                    every_head: bool = False) -> Budget:
    """The node's HBM after the weights and the reserve, and the tokens of KV cache it holds.

    Tensor parallelism over all the node's GPUs, each holding its pre-sharded weights.
    `every_head=True` counts a KV entry for every attention head, as if the model had no
    grouped-query attention: the basis of the published figures (`published_basis`).
    """
    node = NODES[node] if isinstance(node, str) else node
    reserve = RESERVES[reserve] if isinstance(reserve, str) else reserve
    attention = Attention.of_preset(model)
    if every_head:
        attention = replace(attention, kv_heads=attention.heads)
    weights = weights_per_rank(model, weights_dtype, node.gpus) * node.gpus
    reserved = reserve.bytes_per_gpu(node) * node.gpus
    free = max(0.0, node.gpus * node.hbm_per_gpu - weights - reserved)
    per_token = kv_bytes_per_token(attention, kv, node.gpus)
    return Budget(model, weights_dtype, kv_format(kv).name, node, reserve, weights, reserved, free, per_token,
                  int(free // per_token), "every attention head" if every_head else "KV heads")


# --- the published figures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    what: str
    kv: str
    tokens: int
    bound: str  # "about" or "over"
    source: str


PUBLISHED = (
    Published("Llama 3.1 405B on a P5en, bf16 KV cache", "bf16", 82_000, "about", AWS_GDS_BLOG + ": ~82K tokens"),
    Published("Llama 3.1 405B on a P5en, TurboQuant-compressed KV cache", "3bit", 400_000, "over",
              AWS_GDS_BLOG + ": over 400K tokens"),
)


def published_basis(kv: str) -> Budget:
    """The inputs under which this model reproduces the published capacities.

    FP8 weights (pre-quantized, as in the same post), the whole HBM after the weights (no
    reserve), and a KV entry for every one of the 128 attention heads. The published bf16
    figure is matched within 1% only if the FP8 checkpoint's size in GiB (453.8) is taken
    as GB; with its real size (487 GB) this basis gives ~5% fewer tokens.
    """
    return tokens_that_fit("llama-3.1-405b", "fp8_e4m3", kv, "p5en", "none", every_head=True)


def budgets(model: str = "llama-3.1-405b", node: str = "p5en", reserve: str = "vllm-default",
            weights: tuple[str, ...] = ("bf16", "fp8_e4m3"), kvs: tuple[str, ...] = tuple(KV_FORMATS)) -> list[Budget]:
    """Every weights × KV precision on one node: the notebook's stacked bars."""
    return [tokens_that_fit(model, w, kv, node, reserve) for w in weights for kv in kvs]


def budget_table(rows: list[Budget]) -> str:
    lines = [f"{'configuration':44} {'weights':>9} {'reserve':>8} {'KV cache':>9} {'KB/token':>9} "
             f"{'tokens':>10}  128K contexts  ({LABEL})"]
    for b in rows:
        lines.append(f"{b.label:44} {b.weights / GB:7.0f}GB {b.reserved / GB:6.0f}GB {b.kv_cache / GB:7.0f}GB "
                     f"{b.kv_per_token / 1e3:9.1f} {b.tokens:10,}  {b.full_contexts():>5}")
    return "\n".join(lines)


# --- restore or recompute -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Gpu:
    name: str
    tflops: float  # dense, at the prefill's precision
    source: str


GPUS: dict[str, Gpu] = {
    "h200-bf16": Gpu("H200, BF16 dense", 989.0, "NVIDIA H200 datasheet: 1,979 TFLOPS BF16 with sparsity, half dense"),
    "h200-fp8": Gpu("H200, FP8 dense", 1979.0, "NVIDIA H200 datasheet: 3,958 TFLOPS FP8 with sparsity, half dense"),
}
MFU = 0.5  # share of peak a prefill reaches: assumed (long prefills are compute-bound; 40–60% is typical)


def prefill_flops(model: Attention, tokens: int) -> float:
    """FLOPs to prefill `tokens` (causal): 2 per parameter per token, plus attention's T² term."""
    return 2.0 * model.params * tokens + 2.0 * model.layers * model.heads * model.head_dim * tokens * tokens


def recompute_seconds(model: Attention, tokens: int, gpu: str | Gpu = "h200-bf16", gpus: int = 8,
                      mfu: float = MFU) -> float:
    """Seconds to recompute a context of `tokens` by prefill on `gpus` GPUs at `mfu` of their peak."""
    gpu = GPUS[gpu] if isinstance(gpu, str) else gpu
    return prefill_flops(model, tokens) / (gpus * gpu.tflops * 1e12 * mfu)


def restore_seconds(model: Attention, tokens: int, gbps: float, fmt: str | KVFormat = "bf16", tp: int = 8) -> float:
    """Seconds to read a context's KV cache back at `gbps` (1e9 B/s) across the node."""
    return tokens * kv_bytes_per_token(model, fmt, tp) / (gbps * GB)


def crossover_tokens(model: Attention, gbps: float, fmt: str | KVFormat = "bf16", tp: int = 8,
                     gpu: str | Gpu = "h200-bf16", gpus: int = 8, mfu: float = MFU) -> int | None:
    """The context length from which restoring at `gbps` beats recomputing (0: from the first token).

    Restoring is linear in tokens, recomputing linear plus quadratic, so once restoring wins
    it keeps winning. None where it does not win within 16M tokens.
    """
    def restore_wins(tokens: int) -> bool:
        return restore_seconds(model, tokens, gbps, fmt, tp) <= recompute_seconds(model, tokens, gpu, gpus, mfu)

    lo, hi = 1, 1 << 24
    if restore_wins(lo):
        return 0
    if not restore_wins(hi):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if restore_wins(mid) else (mid, hi)
    return hi


__all__ = ["Attention", "Budget", "GPUS", "Gpu", "KVFormat", "KV_FORMATS", "LABEL", "MFU", "NODES", "Node",
           "PUBLISHED", "Published", "RESERVES", "Reserve", "budget_table", "budgets", "crossover_tokens",
           "kv_bytes_per_token", "kv_format", "kv_heads_per_rank", "prefill_flops", "published_basis",
           "recompute_seconds", "restore_seconds", "tokens_that_fit", "weights_per_rank"]
