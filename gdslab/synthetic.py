"""Synthetic Llama-shaped checkpoints, written by the safetensors library with an HF index.

No model can be downloaded here, and none is needed to measure loading: what matters is
the real mix of tensor names, shapes and sizes. Presets carry the real architectures'
dimensions; a requested total size scales widths (keeping head counts, GQA ratios and the
MLP/hidden proportion) and, when widths would get too small, the layer count.
Content is deterministic per tensor name and seed, so the same tensors written with a
different shard count are byte-identical. Head dimensions stay even (rotary embeddings
rotate pairs), and a `config.json` beside the tensors lets `transformers` build the model.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from .checkpoint import INDEX_NAME
from .sizes import parse_size


@dataclass(frozen=True)
class LlamaShape:
    """The dimensions that decide a Llama checkpoint's tensors."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) in HF order: embeddings, each layer, final norm, lm_head."""
        h, i, kv = self.hidden, self.intermediate, self.kv_heads * self.head_dim
        out = [("model.embed_tokens.weight", (self.vocab, h))]
        for n in range(self.layers):
            p = f"model.layers.{n}."
            out += [
                (p + "input_layernorm.weight", (h,)),
                (p + "self_attn.q_proj.weight", (h, h)),
                (p + "self_attn.k_proj.weight", (kv, h)),
                (p + "self_attn.v_proj.weight", (kv, h)),
                (p + "self_attn.o_proj.weight", (h, h)),
                (p + "post_attention_layernorm.weight", (h,)),
                (p + "mlp.gate_proj.weight", (i, h)),
                (p + "mlp.up_proj.weight", (i, h)),
                (p + "mlp.down_proj.weight", (h, i)),
            ]
        out.append(("model.norm.weight", (h,)))
        if not self.tied_embeddings:
            out.append(("lm_head.weight", (self.vocab, h)))
        return out

    def numel(self) -> int:
        return sum(math.prod(shape) for _, shape in self.tensors())


PRESETS: dict[str, LlamaShape] = {
    "llama-3.1-8b": LlamaShape("llama-3.1-8b", 4096, 14336, 32, 32, 8, 128256),
    "llama-3.1-70b": LlamaShape("llama-3.1-70b", 8192, 28672, 80, 64, 8, 128256),
    "llama-3.1-405b": LlamaShape("llama-3.1-405b", 16384, 53248, 126, 128, 8, 128256),
}
DTYPES = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
    "fp8_e4m3": torch.float8_e4m3fn,
}
_MIN_HEAD_DIM = 2  # below this, drop layers instead of shrinking widths further (head dims stay even)
_ALIGN = 8  # every scaled dimension stays divisible by 8 so tensor parallelism up to 8 works


def _round(value: float) -> int:
    return max(_ALIGN, int(round(value / _ALIGN)) * _ALIGN)


def scaled_shape(preset: str | LlamaShape, nbytes: int, itemsize: int) -> LlamaShape:
    """The preset's proportions at about `nbytes` in total (never above the real model)."""
    base = PRESETS[preset] if isinstance(preset, str) else preset
    target = nbytes / itemsize
    if target >= base.numel():
        return base
    estimate = base.head_dim * math.sqrt(target / base.numel())
    candidates = {max(_MIN_HEAD_DIM, d) for d in (math.floor(estimate), math.ceil(estimate), math.ceil(estimate) + 1)}
    best = min((_fit_layers(base, d, target) for d in candidates), key=lambda s: abs(s.numel() - target))
    if best.head_dim % 2:  # rotary embeddings rotate pairs: an odd head dimension has no model
        best = min((_fit_layers(base, d, target) for d in (best.head_dim - 1, best.head_dim + 1)),
                   key=lambda s: abs(s.numel() - target))
    return best


def _fit_layers(base: LlamaShape, head_dim: int, target: float) -> LlamaShape:
    """Widths scaled to `head_dim`, then the layer count that comes closest to `target` elements."""
    width = head_dim / base.head_dim
    shape = replace(
        base,
        hidden=head_dim * base.heads,
        intermediate=_round(base.intermediate * width),
        vocab=_round(base.vocab * width),
        layers=0,
    )
    fixed = shape.numel()
    per_layer = replace(shape, layers=1).numel() - fixed
    layers = max(1, min(base.layers, round((target - fixed) / per_layer)))
    return replace(shape, layers=layers)


def tensor_content(name: str, shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Deterministic, non-zero, weight-like values for one tensor (depends on name and seed only)."""
    generator = torch.Generator().manual_seed((zlib.crc32(name.encode()) << 16) ^ seed)
    if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
        values = 1.0 + 0.05 * torch.randn(shape, generator=generator)
    else:
        values = 0.02 * torch.randn(shape, generator=generator)
    return values.to(dtype)


CONFIG_NAME = "config.json"
_HF_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}  # FP8 needs a quantization config: none


def llama_config(shape: LlamaShape, dtype: str = "bf16") -> dict:
    """The `config.json` of a Llama 3.1 model with these dimensions (Meta's published 3.1 settings otherwise).

    RMSNorm epsilon, RoPE base and the llama3 RoPE scaling are those of the released 3.1
    configs. A scaled vocabulary has no room for the real special-token ids (128000 on),
    so its last two ids stand in as begin and end of text.
    """
    if dtype not in _HF_DTYPES:
        raise ValueError(f"no transformers config for dtype {dtype!r}: plain Llama weights are "
                         f"{', '.join(_HF_DTYPES)} (FP8 needs a quantization config)")
    full_vocab = shape.vocab >= 128256
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": shape.hidden, "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers, "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads, "head_dim": shape.head_dim, "vocab_size": shape.vocab,
        "hidden_act": "silu", "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False,
        "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "max_position_embeddings": 131072,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "tie_word_embeddings": shape.tied_embeddings, "torch_dtype": _HF_DTYPES[dtype], "use_cache": True,
        "bos_token_id": 128000 if full_vocab else shape.vocab - 2,
        "eos_token_id": 128001 if full_vocab else shape.vocab - 1,
    }


def write_config(directory: str | os.PathLike) -> Path | None:
    """Write `config.json` beside a synthetic checkpoint, from the shape its files record; None for FP8.

    Checkpoints written before configs were (cached ones, say) get theirs this way.
    """
    from .checkpoint import Checkpoint

    directory = Path(directory)
    ckpt = Checkpoint.open(directory)
    metadata = ckpt.files[0].metadata or {}
    if "gdslab.shape" not in metadata:
        raise ValueError(f"{directory}: not a synthetic gdslab checkpoint (no gdslab.shape in its metadata)")
    shape = LlamaShape(**json.loads(metadata["gdslab.shape"]))
    dtype = {torch_dtype: name for name, torch_dtype in DTYPES.items()}.get(ckpt.tensors[0].dtype)
    if dtype not in _HF_DTYPES:
        return None
    path = directory / CONFIG_NAME
    tmp = directory / (CONFIG_NAME + ".partial")
    tmp.write_text(json.dumps(llama_config(shape, dtype), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def _split(sizes: list[int], shards: int) -> list[int]:
    """Greedy contiguous split of tensors (in order) into `shards` groups of about equal bytes."""
    total, bounds, acc = sum(sizes), [], 0
    for i, size in enumerate(sizes):
        acc += size
        if len(bounds) < shards - 1 and acc >= total * (len(bounds) + 1) / shards and i < len(sizes) - 1:
            bounds.append(i + 1)
    return [0, *bounds, len(sizes)]


def write_checkpoint(
    directory: str | os.PathLike,
    size: int | str = "2GiB",
    shards: int = 4,
    preset: str = "llama-3.1-8b",
    dtype: str = "bf16",
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a Llama-shaped checkpoint of about `size` bytes in `shards` files; return the folder.

    Shards are named like HF's (`model-00001-of-00004.safetensors`) with a
    `model.safetensors.index.json`; one shard is written as `model.safetensors` alone.
    A `config.json` for `transformers` is written beside them (not for FP8).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    torch_dtype = DTYPES[dtype]
    shape = scaled_shape(preset, parse_size(size), torch_dtype.itemsize)
    specs = shape.tensors()
    if shards > len(specs):
        raise ValueError(f"{shards} shards for only {len(specs)} tensors")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    existing = [*directory.glob("*.safetensors"), *directory.glob(INDEX_NAME), *directory.glob(CONFIG_NAME)]
    if existing and not overwrite:
        raise FileExistsError(f"{directory}: already holds a checkpoint ({existing[0].name}); pass overwrite=True")
    for stale in existing:
        stale.unlink()
    sizes = [math.prod(s) * torch_dtype.itemsize for _, s in specs]
    bounds = _split(sizes, shards)
    metadata = {
        "format": "pt",
        "gdslab.preset": preset,
        "gdslab.seed": str(seed),
        "gdslab.shape": json.dumps(shape.__dict__),
    }
    weight_map = {}
    for k in range(shards):
        name = "model.safetensors" if shards == 1 else f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        group = {n: tensor_content(n, s, torch_dtype, seed) for n, s in specs[bounds[k]:bounds[k + 1]]}
        tmp = directory / (name + ".partial")
        save_file(group, str(tmp), metadata=metadata)
        os.replace(tmp, directory / name)
        weight_map.update({n: name for n in group})
        del group
    if shards > 1:
        index = {"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}
        (directory / INDEX_NAME).write_text(json.dumps(index, indent=2))
    if dtype in _HF_DTYPES:
        (directory / CONFIG_NAME).write_text(json.dumps(llama_config(shape, dtype), indent=2) + "\n")
    return directory




def _has_shape(folder: Path, shape: LlamaShape) -> bool:
    """Whether the checkpoint in `folder` records `shape` (False when it cannot be read)."""
    from .checkpoint import read_header
    from .errors import GdslabError

    first = folder / "model.safetensors"
    if not first.exists():
        first = next(iter(sorted(folder.glob("model-00001-of-*.safetensors"))), first)
    try:
        metadata = read_header(first)[0].metadata or {}
        return json.loads(metadata.get("gdslab.shape", "null")) == shape.__dict__
    except (GdslabError, OSError, ValueError):
        return False


def checkpoints_home() -> Path:
    """Where cached synthetic checkpoints live: $GDSLAB_CHECKPOINTS or ~/.cache/gdslab/checkpoints."""
    return Path(os.environ.get("GDSLAB_CHECKPOINTS", Path.home() / ".cache" / "gdslab" / "checkpoints"))


def cached_checkpoint(
    size: int | str = "2GiB",
    shards: int = 4,
    preset: str = "llama-3.1-8b",
    dtype: str = "bf16",
    seed: int = 0,
    root: str | os.PathLike | None = None,
) -> Path:
    """The folder of a synthetic checkpoint with these knobs, written once and reused after.

    A `.complete` marker is written last, so an interrupted write is redone, never reused;
    so is one written by an older gdslab with other shapes. One without its `config.json`
    gets it.
    """
    nbytes = parse_size(size)
    folder = Path(root or checkpoints_home()) / f"{preset}-{dtype}-{nbytes}B-{shards}shards-seed{seed}"
    marker = folder / ".complete"
    if marker.exists() and not _has_shape(folder, scaled_shape(preset, nbytes, DTYPES[dtype].itemsize)):
        marker.unlink()
    if marker.exists() and dtype in _HF_DTYPES and not (folder / CONFIG_NAME).exists():
        write_config(folder)
    if not marker.exists():
        write_checkpoint(folder, nbytes, shards, preset, dtype, seed, overwrite=True)
        marker.write_text("written by gdslab.synthetic.write_checkpoint\n")
    return folder


__all__ = ["LlamaShape", "PRESETS", "DTYPES", "CONFIG_NAME", "scaled_shape", "write_checkpoint", "tensor_content",
           "cached_checkpoint", "checkpoints_home", "llama_config", "write_config"]
