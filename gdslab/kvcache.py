"""The HBM budget after the weights: KV-cache bytes per token, and the tokens a node holds. A projection.

A served model's GPU memory holds three things: the weights (bf16 or FP8, pre-sharded so each
rank holds its slice), a reserve for activations and the runtime (an explicit, named input:
vLLM keeps 10% of each GPU by default), and the KV cache, which fills the rest. Each token
of context costs `2 (K and V) × layers × KV heads × head dim` values in the cache; at what
precision (bf16, FP8, or compressed as KIVI and TurboQuant publish it, overheads counted)
decides how many tokens fit. The HBM is the byte count the device reports (143,771 MiB per
H200), not the datasheet's "141 GB"; `node_here()` reads it from the GPU where there is one.

Two numbers are easily confused. A *context window* is the longest sequence the model takes
(Llama 3.1: `max_position_embeddings` = 131,072 tokens). The node's *KV capacity* is the
tokens of cache all sequences in flight share. A node can hold far more KV than one window
and still never serve a longer sequence than the window.

Tensor parallelism divides the KV heads over the ranks; where there are more ranks than KV
heads, each rank still holds a whole head, so heads are replicated and the node pays more
per token. `tokens_that_fit` counts that.

`PUBLISHED` holds the capacities AWS published for Llama 3.1 405B (~82K tokens → 400K+ on a
P5en, 660K on a P6): aggregate KV tokens of one node, on a basis that counts a KV entry for
every attention head (as if the model had no grouped-query attention) after FP8 weights with
no reserve (`published_basis`). Llama 3.1 405B keeps 8 KV heads for its 128 query heads, so
its real cache per token is 16× smaller (see `gqa_factor`).
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
MIB = 2**20
LLAMA31_CONTEXT = 131072  # Llama 3.1 config.json: max_position_embeddings (every size, 8B to 405B)
LLAMA31_CONTEXT_SOURCE = "Llama 3.1 config.json (meta-llama on Hugging Face): max_position_embeddings 131072"

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
    max_context: int = LLAMA31_CONTEXT  # the context window: the longest sequence the model takes

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
        return cls(name, shape.layers, shape.heads, shape.kv_heads, shape.hidden // shape.heads, params,
                   LLAMA31_CONTEXT)

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
        window = int(config.get("max_position_embeddings") or LLAMA31_CONTEXT)
        return cls(name or str(config.get("model_type", "model")), layers, heads, kv_heads, head_dim, params, window)


# --- KV precision ------------------------------------------------------------------------------------

KIVI = "KIVI (Liu et al., ICML 2024, arXiv 2402.02750)"
TURBOQUANT = "TurboQuant (Zandieh et al., arXiv 2504.19874)"


@dataclass(frozen=True)
class KVFormat:
    """How each cached key/value is stored, with every overhead the format keeps beside its codes.

    `bits` per value of the codes; `scale_bits` per `group` values (KIVI: an fp16 scale and
    zero point per group); `norm_bits` per head vector (TurboQuant keeps each vector's norm in
    higher precision); the most recent `residual_tokens` of each sequence in `residual_bits`
    (KIVI keeps them in fp16 until a group fills). The last depends on the context length.
    """

    name: str
    bits: float
    source: str
    group: int = 0
    scale_bits: int = 0
    norm_bits: int = 0
    residual_tokens: int = 0
    residual_bits: int = 16

    def bits_per_value(self, head_dim: int = 128, context: int = LLAMA31_CONTEXT) -> float:
        """Average bits per cached value over one sequence of `context` tokens, overheads counted."""
        if context < 1 or head_dim < 1:
            raise ValueError(f"context and head_dim must be positive, got {context}, {head_dim}")
        coded = self.bits + (self.scale_bits / self.group if self.group else 0.0) + self.norm_bits / head_dim
        recent = min(context, self.residual_tokens)
        return ((context - recent) * coded + recent * self.residual_bits) / context


KV_FORMATS: dict[str, KVFormat] = {
    "bf16": KVFormat("bf16", 16, "the model's own precision; vLLM's default KV-cache dtype"),
    "fp8": KVFormat("fp8", 8, "FP8 (E4M3) KV cache, one scale per tensor (vLLM kv_cache_dtype='fp8')"),
    "kivi-4bit": KVFormat("kivi-4bit", 4, KIVI + ": keys per channel and values per token in groups of 32, an "
                                            "fp16 scale and zero point per group; the most recent 128 tokens in fp16",
                          group=32, scale_bits=32, residual_tokens=128),
    "kivi-2bit": KVFormat("kivi-2bit", 2, KIVI + ": the paper's 2-bit setting, same groups and fp16 residual",
                          group=32, scale_bits=32, residual_tokens=128),
    "turboquant-3.5bit": KVFormat("turboquant-3.5bit", 3.5, TURBOQUANT + ": quality-neutral at 3.5 bits per "
                                                                      "value; each vector's norm kept beside it "
                                                                      "(fp16 assumed)", norm_bits=16),
    "turboquant-2.5bit": KVFormat("turboquant-2.5bit", 2.5, TURBOQUANT + ": 2.5 bits per value with a small "
                                                                      "quality loss; the norm as above", norm_bits=16),
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


def kv_values_per_token(model: Attention, tp: int = 1) -> int:
    """Cached values one token costs across all `tp` ranks: K and V × layers × KV heads × head dim."""
    return 2 * model.layers * kv_heads_per_rank(model, tp) * tp * model.head_dim


def kv_bytes_per_token(model: Attention, fmt: str | KVFormat = "bf16", tp: int = 1,
                       context: int = LLAMA31_CONTEXT) -> float:
    """Bytes of KV cache one token costs across all `tp` ranks (replicated heads counted), averaged over
    a sequence of `context` tokens (it matters only for formats that keep recent tokens in fp16)."""
    return kv_values_per_token(model, tp) * kv_format(fmt).bits_per_value(model.head_dim, context) / 8


# --- the node and its budget ------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    name: str
    gpus: int
    hbm_per_gpu: float  # bytes
    source: str


NODES: dict[str, Node] = {
    "p5en": Node("P5en (8× H200)", 8, 143771 * MIB, "p5en.48xlarge: 8× NVIDIA H200 at 143,771 MiB each as the "
                                                   "device reports it (nvidia-smi; 150.75 GB, the datasheet's "
                                                   "'141 GB' is not the byte count); published, not read here"),
    "p5": Node("P5 (8× H100)", 8, 81559 * MIB, "p5.48xlarge: 8× NVIDIA H100 80GB at 81,559 MiB each as nvidia-smi "
                                               "reports it; published, not read here"),
    "p6": Node("P6 (8× B200)", 8, 180 * GB, "p6-b200.48xlarge: 8× NVIDIA B200 at the datasheet's 180 GB each "
                                            "(NVIDIA B200-SXM-180GB; the device's own byte count is not known here)"),
}


def node_here(fallback: str = "p5en") -> Node:
    """The GPUs of this machine with the HBM each reports (torch.cuda.mem_get_info's total), or the
    published `NODES[fallback]` where there is no GPU; its source says which."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and torch.cuda.is_available() and torch.cuda.device_count():
        _, total = torch.cuda.mem_get_info(0)
        name = torch.cuda.get_device_name(0)
        gpus = torch.cuda.device_count()
        return Node(f"this machine ({gpus}× {name})", gpus, float(total),
                    f"measured here: torch.cuda.mem_get_info total on cuda:0 ({name}): {total / MIB:,.0f} MiB")
    node = NODES[fallback]
    return replace(node, source=node.source + "; no GPU here, so the published figure is used")


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
    tokens: int  # the node's KV capacity: tokens shared by every sequence in flight
    heads_counted: str  # "KV heads" (the model's GQA) or "every attention head" (the published basis)
    context: int = LLAMA31_CONTEXT  # the sequence length the per-token cost was averaged over
    window: int = LLAMA31_CONTEXT  # the model's context window: no one sequence is longer

    @property
    def hbm(self) -> float:
        return self.node.gpus * self.node.hbm_per_gpu

    @property
    def label(self) -> str:
        return f"{self.model} {self.weights_dtype} weights, {self.kv} KV"

    def full_contexts(self, context: int | None = None) -> int:
        """How many sequences of `context` tokens (default: the whole window) fit at once."""
        return self.tokens // (context or self.window)

    def describe(self) -> str:
        """The node's KV capacity beside the per-sequence limit, in words."""
        return (f"{self.label} on {self.node.name}: the node holds {self.tokens:,} tokens of KV ({LABEL}), "
                f"shared by the sequences in flight; one sequence is at most {self.window:,} tokens (the context "
                f"window), so {self.full_contexts():,} full-window sequences fit at once")


def tokens_that_fit(model: str = "llama-3.1-405b", weights_dtype: str = "fp8_e4m3", kv: str | KVFormat = "bf16",
                    node: str | Node = "p5en", reserve: str | Reserve = "vllm-default",
                    every_head: bool = False, context: int = LLAMA31_CONTEXT) -> Budget:
    """The node's HBM after the weights and the reserve, and the tokens of KV cache it holds.

    Tensor parallelism over all the node's GPUs, each holding its pre-sharded weights.
    `every_head=True` counts a KV entry for every attention head, as if the model had no
    grouped-query attention: the basis of the published figures (`published_basis`).
    `context` is the length of each sequence in flight, for formats that keep its most recent
    tokens in fp16 (KIVI); the others cost the same per token at any length.
    """
    node = NODES[node] if isinstance(node, str) else node
    reserve = RESERVES[reserve] if isinstance(reserve, str) else reserve
    attention = Attention.of_preset(model)
    if every_head:
        attention = replace(attention, kv_heads=attention.heads)
    weights = weights_per_rank(model, weights_dtype, node.gpus) * node.gpus
    reserved = reserve.bytes_per_gpu(node) * node.gpus
    free = max(0.0, node.gpus * node.hbm_per_gpu - weights - reserved)
    per_token = kv_bytes_per_token(attention, kv, node.gpus, context)
    return Budget(model, weights_dtype, kv_format(kv).name, node, reserve, weights, reserved, free, per_token,
                  int(free // per_token), "every attention head" if every_head else "KV heads", context,
                  attention.max_context)


# --- the published figures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """A published KV capacity: aggregate tokens of KV one node holds, on the basis `published_basis` states."""

    what: str
    kv: str  # the format this model counts it with (as published: TurboQuant ~3.5 bits plus a norm)
    node: str
    tokens: int
    bound: str  # "about", "over" or "up to"
    source: str
    fitted: bool  # whether the basis was chosen to reproduce this figure (False: out of sample)


PUBLISHED = (
    Published("Llama 3.1 405B on a P5en, bf16 KV cache", "bf16", "p5en", 82_000, "about",
              AWS_GDS_BLOG + ": ~82K tokens", True),
    Published("Llama 3.1 405B on a P5en, TurboQuant-compressed KV cache", "turboquant-3.5bit", "p5en", 400_000,
              "over", AWS_GDS_BLOG + ": over 400K tokens (TurboQuant, '3–4 bits per value')", False),
    Published("Llama 3.1 405B on a P6 (8× B200), TurboQuant-compressed KV cache", "turboquant-3.5bit", "p6",
              660_000, "up to", AWS_GDS_BLOG + ": up to 660K tokens", False),
)


def published_basis(kv: str | KVFormat, node: str | Node = "p5en") -> Budget:
    """The inputs on which this model meets the published ~82K: an aggregate of KV tokens on one node.

    FP8 weights (pre-quantized, as in the same post), the whole HBM after the weights (no
    reserve), and a KV entry for every one of the 128 attention heads. With the H200's HBM
    as the device reports it (143,771 MiB) this basis gives 87K at bf16, 6% over the ~82K;
    with the datasheet's 141 GB, 78K. The other published figures are checked on this same
    basis, nothing refitted.
    """
    return tokens_that_fit("llama-3.1-405b", "fp8_e4m3", kv, node, "none", every_head=True)


def implied_bits_per_value(published: Published) -> float:
    """Bits per cached value, all overheads in, that the published token count needs on its basis."""
    basis = published_basis("bf16", published.node)
    values = basis.kv_per_token / 2  # bf16: 2 bytes per value, every head counted
    return basis.kv_cache * 8 / (published.tokens * values)


@dataclass(frozen=True)
class PublishedCheck:
    published: Published
    projected: int
    ratio: float
    implied_bits: float
    own_heads: int  # the same node and format with the model's own 8 KV heads (GQA)


def check_published(reserve: str = "none") -> list[PublishedCheck]:
    """Each published capacity beside this model's projection on the published basis (and with GQA)."""
    rows = []
    for pub in PUBLISHED:
        basis = published_basis(pub.kv, pub.node)
        own = tokens_that_fit("llama-3.1-405b", "fp8_e4m3", pub.kv, pub.node, reserve)
        rows.append(PublishedCheck(pub, basis.tokens, basis.tokens / pub.tokens, implied_bits_per_value(pub),
                                   own.tokens))
    return rows


def budgets(model: str = "llama-3.1-405b", node: str | Node = "p5en", reserve: str = "vllm-default",
            weights: tuple[str, ...] = ("bf16", "fp8_e4m3"),
            kvs: tuple[str, ...] = ("bf16", "fp8", "kivi-4bit", "turboquant-3.5bit", "kivi-2bit"),
            context: int = LLAMA31_CONTEXT) -> list[Budget]:
    """Every weights × KV precision on one node: the notebook's stacked bars."""
    return [tokens_that_fit(model, w, kv, node, reserve, context=context) for w in weights for kv in kvs]


def budget_table(rows: list[Budget]) -> str:
    window = rows[0].window if rows else LLAMA31_CONTEXT
    lines = [f"{'configuration':52} {'weights':>9} {'reserve':>8} {'KV cache':>9} {'KB/token':>9} "
             f"{'node KV tokens':>15}  sequences of {window:,} (the window)  ({LABEL})"]
    for b in rows:
        lines.append(f"{b.label:52} {b.weights / GB:7.0f}GB {b.reserved / GB:6.0f}GB {b.kv_cache / GB:7.0f}GB "
                     f"{b.kv_per_token / 1e3:9.1f} {b.tokens:15,}  {b.full_contexts():>5}")
    return "\n".join(lines)


# --- restore or recompute -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Gpu:
    name: str
    tflops: float  # dense, at the prefill's precision
    source: str


GPUS: dict[str, Gpu] = {
    "h200-bf16": Gpu("H200, BF16 dense", 1979.0 / 2, "NVIDIA H200 datasheet: 1,979 TFLOPS BF16 with sparsity, half dense"),
    "h200-fp8": Gpu("H200, FP8 dense", 3958.0 / 2, "NVIDIA H200 datasheet: 3,958 TFLOPS FP8 with sparsity, half dense"),
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
    return tokens * kv_bytes_per_token(model, fmt, tp, tokens) / (gbps * GB)


def breakeven_gbps(model: Attention, tokens: int, fmt: str | KVFormat = "bf16", tp: int = 8,
                   gpu: str | Gpu = "h200-bf16", gpus: int = 8, mfu: float = MFU) -> float:
    """The restore bandwidth (GB/s) at which reading a context's KV back takes as long as recomputing it.

    Faster storage wins. The KV bytes grow linearly with the context, the prefill faster than
    linearly, so the bandwidth a restore needs falls as contexts grow.
    """
    return tokens * kv_bytes_per_token(model, fmt, tp, tokens) / recompute_seconds(model, tokens, gpu, gpus, mfu) / GB


@dataclass(frozen=True)
class Breakeven:
    tokens: int
    kv_bytes: float
    recompute_s: dict[str, float]  # by prefill precision (GPUS key)
    needed_gbps: dict[str, float]  # the restore bandwidth that ties with that prefill


def breakeven_table(model: Attention, contexts: tuple[int, ...] = (4096, 16384, 32768, 65536, 131072),
                    fmt: str | KVFormat = "bf16", tp: int = 8, gpus: int = 8,
                    prefills: tuple[str, ...] = ("h200-bf16", "h200-fp8"), mfu: float = MFU) -> list[Breakeven]:
    """For each context length: its KV bytes, the prefill's seconds and the bandwidth a restore must beat."""
    return [Breakeven(t, t * kv_bytes_per_token(model, fmt, tp, t),
                      {g: recompute_seconds(model, t, g, gpus, mfu) for g in prefills},
                      {g: breakeven_gbps(model, t, fmt, tp, g, gpus, mfu) for g in prefills}) for t in contexts]


def format_breakeven(rows: list[Breakeven]) -> str:
    prefills = list(rows[0].needed_gbps) if rows else []
    head = f"{'context':>9} {'KV bytes':>9}" + "".join(
        f"  {'recompute ' + GPUS[g].name:>28} {'restore must beat':>18}" for g in prefills)
    lines = [head + f"   ({LABEL}; prefill at {MFU:.0%} of peak, assumed)"]
    for r in rows:
        lines.append(f"{r.tokens:>9,} {r.kv_bytes / GB:7.1f}GB" + "".join(
            f"  {r.recompute_s[g]:>26.2f} s {r.needed_gbps[g]:>13.2f} GB/s" for g in prefills))
    return "\n".join(lines)


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


__all__ = ["Attention", "Breakeven", "Budget", "GPUS", "Gpu", "KIVI", "KVFormat", "KV_FORMATS", "LABEL",
           "LLAMA31_CONTEXT", "LLAMA31_CONTEXT_SOURCE", "MFU", "NODES", "Node", "PUBLISHED", "Published",
           "PublishedCheck", "RESERVES", "Reserve", "TURBOQUANT", "breakeven_gbps", "breakeven_table",
           "budget_table", "budgets", "check_published", "crossover_tokens", "format_breakeven", "implied_bits_per_value",
           "kv_bytes_per_token", "kv_format", "kv_heads_per_rank", "kv_values_per_token", "node_here",
           "prefill_flops", "published_basis", "recompute_seconds", "restore_seconds", "tokens_that_fit",
           "weights_per_rank"]
