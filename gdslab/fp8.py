"""FP8 E4M3 weights as Meta's FP8 release of Llama 3.1 stores them: which tensors, which scales, how.

The convention (Meta's `Llama-3.1-405B-Instruct-FP8`, loaded by vLLM as "fbgemm_fp8"):

- only the MLP's linear weights (`gate_proj`, `up_proj`, `down_proj`) are FP8, and not in the
  first and the last layer; attention, norms, embeddings and the output head stay in bf16;
- each FP8 weight has a float32 scale per output channel beside it, `<module>.weight_scale`
  of shape [out, 1]: the row's largest magnitude over E4M3's largest value (448), so every
  row uses the whole FP8 range.

Counted over Llama 3.1 405B's shapes, that gives about 454 GiB (`model_bytes`), the size
the published release is reported at; "half of bf16" would say 378 GiB. Dequantized, every
value is within FP8 E4M3's rounding of the source: half a unit in the last place (3
mantissa bits: at most 1/16 of the value), or half the smallest subnormal step near zero.
"""

from __future__ import annotations

import math
import re
from typing import Iterable

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # E4M3's largest finite value
SCALE = "weight_scale"
QUANTIZED = ("gate_proj", "up_proj", "down_proj")
CONVENTION = {
    "quant_method": "fbgemm_fp8",
    "source": "Meta Llama 3.1 FP8 release convention (MLP weights of every layer but the first and last)",
    "weight": "float8_e4m3fn",
    "scale": "float32 per output channel, <module>.weight_scale of shape [out, 1]",
}
_MLP = re.compile(r"^model\.layers\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj)\.weight$")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def layer_count(names: Iterable[str]) -> int:
    """The number of transformer layers, from tensor names (`model.layers.N.`)."""
    found = [int(m.group(1)) for m in map(_LAYER.match, names) if m]
    return max(found) + 1 if found else 0


def is_quantized(name: str, layers: int) -> bool:
    """Whether the convention stores this tensor in FP8 (with a scale beside it)."""
    m = _MLP.match(name)
    return bool(m) and 0 < int(m.group(1)) < layers - 1


def scale_name(weight: str) -> str:
    return weight[: -len("weight")] + SCALE


def not_converted(names: Iterable[str]) -> list[str]:
    """The linear modules kept in bf16, as a release's `modules_to_not_convert` lists them."""
    names = list(names)
    layers = layer_count(names)
    out = []
    for name in names:
        if name.endswith(".weight") and re.search(r"\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.", name) \
                and not is_quantized(name, layers):
            out.append(name[: -len(".weight")])
    return out + ["lm_head"]


def row_scales(rows: torch.Tensor) -> torch.Tensor:
    """float32 scales [rows, 1] for a block of whole rows (any trailing shape): amax / 448, 1 where all zero."""
    flat = rows.reshape(rows.shape[0], -1).float() if rows.dim() else rows.reshape(1, 1).float()
    amax = flat.abs().amax(dim=1, keepdim=True) if flat.shape[1] else torch.zeros(flat.shape[0], 1)
    return torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))


def quantize(block: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """FP8 E4M3 of `block` (rows first) with its rows' scales [rows, 1]: round to nearest."""
    shape = (block.shape[0],) + (1,) * (block.dim() - 1)
    return (block.float() / scales.reshape(shape)).clamp(-FP8_MAX, FP8_MAX).to(FP8)


def dequantize(weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """float32 values of FP8 `weight` with per-row `scales` [rows, 1]."""
    shape = (weight.shape[0],) + (1,) * (weight.dim() - 1)
    return weight.float() * scales.float().reshape(shape)


def rounding_bound(source: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The most a dequantized value may differ from its source: half an E4M3 step at that magnitude."""
    shape = (source.shape[0],) + (1,) * (source.dim() - 1)
    s = scales.float().reshape(shape)
    return torch.maximum(source.float().abs() / 16, s * 2.0 ** -10) * (1 + 1e-6)


def model_bytes(tensors: Iterable[tuple[str, tuple[int, ...]]], itemsize: int = 2) -> int:
    """Bytes of a checkpoint in this convention: quantized weights 1 byte a value plus their scales, the rest `itemsize`."""
    tensors = list(tensors)
    layers = layer_count(n for n, _ in tensors)
    total = 0
    for name, shape in tensors:
        numel = math.prod(shape)
        if is_quantized(name, layers):
            total += numel + shape[0] * 4
        else:
            total += numel * itemsize
    return total


__all__ = [
    "FP8", "FP8_MAX", "SCALE", "QUANTIZED", "CONVENTION", "layer_count", "is_quantized", "scale_name",
    "not_converted", "row_scales", "quantize", "dequantize", "rounding_bound", "model_bytes",
]
