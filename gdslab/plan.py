"""Tensor-parallel plans: which bytes of a Llama-shaped checkpoint each rank reads.

Megatron-style tensor parallelism of degree N (the split every serving stack uses):

- column-parallel weights (q, k, v, gate, up) are split on dim 0, their output dimension;
  in row-major storage a dim-0 slice is one contiguous run of bytes;
- row-parallel weights (o, down) are split on dim 1, their input dimension: every row
  contributes a short run, so the slice is *strided* in the file;
- the vocabulary tensors (embed_tokens, lm_head) are split on dim 0 or replicated, by policy;
- norms, biases of row-parallel layers and anything unknown are replicated;
- an FP8 weight's scale (`weight_scale`, one per output channel) follows the output rows: split
  with a column-parallel weight, replicated with a row-parallel one.

Rank r owns exactly ``torch.chunk(full, N, dim)[r]``. A strided slice is read either row
by row (``strided="rows"``: one run per row, only the bytes needed) or as one coalesced
span from its first to its last needed byte, cut to the slice after it landed
(``strided="span"``: fewer, larger reads, up to N times the bytes of that tensor). Which is
faster is measured in docs/results/sharded.md; `DEFAULT_STRIDED` is the winner there.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from .checkpoint import Checkpoint, TensorEntry
from .datapaths.base import TensorRead
from .errors import GdslabError

STRIDED_MODES = ("rows", "span")
DEFAULT_STRIDED = "span"  # measured: docs/results/sharded.md (benchmarks/sharded_scaling.py)
VOCAB_POLICIES = ("split", "replicate")

COLUMN_PARALLEL = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
ROW_PARALLEL = ("o_proj", "down_proj")
VOCAB = ("embed_tokens", "lm_head")


class PlanError(GdslabError):
    """A tensor-parallel plan that cannot be made: names the file, the tensor and the reason."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = Path(path) if path is not None else None
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if path is not None else reason)


def split_kind(name: str, ndim: int, vocab: str = "split") -> tuple[str, int | None]:
    """(kind, dim) for a tensor: 'column' 0, 'row' 1, 'vocab' 0, or 'replicated' None."""
    if vocab not in VOCAB_POLICIES:
        raise ValueError(f"vocab policy must be one of {VOCAB_POLICIES}, got {vocab!r}")
    parts = name.split(".")
    module = parts[-2] if len(parts) >= 2 else ""
    if parts[-1] == "weight_scale":  # an FP8 weight's per-output-channel scale follows its output rows
        return ("column", 0) if module in COLUMN_PARALLEL and ndim >= 1 else ("replicated", None)
    if module in COLUMN_PARALLEL and ndim >= 1:
        return "column", 0  # weight (out, in) and bias (out,) both split on the output dim
    if module in ROW_PARALLEL and ndim >= 2:
        return "row", 1  # the bias of a row-parallel layer is added after the reduction: replicated
    if module in VOCAB and vocab == "split" and ndim >= 1:
        return "vocab", 0
    return "replicated", None


@dataclass(frozen=True)
class Slice:
    """What one rank owns of one tensor: `start:stop` along `dim` (the whole tensor when `dim` is None)."""

    name: str
    file: Path
    kind: str
    shape: tuple[int, ...]  # the full tensor's shape
    dim: int | None
    start: int
    stop: int
    itemsize: int  # bytes per element (0 for sub-byte dtypes, which are never split)
    nbytes: int  # the full tensor's bytes

    @property
    def nbytes_owned(self) -> int:
        if self.dim is None or self.shape[self.dim] == 0:
            return self.nbytes
        return self.nbytes // self.shape[self.dim] * (self.stop - self.start)

    @property
    def shape_owned(self) -> tuple[int, ...]:
        if self.dim is None:
            return self.shape
        return self.shape[:self.dim] + (self.stop - self.start,) + self.shape[self.dim + 1:]


@dataclass(frozen=True)
class Unspan:
    """How to cut a rank's slice out of the coalesced span that landed (a flat tensor).

    The span starts at the slice's first element; each of `outer` blocks keeps `width`
    elements, and consecutive blocks are `pitch` elements apart. The cut is one strided
    copy into a fresh contiguous tensor, after which the span is dropped.
    """

    name: str
    shape: tuple[int, ...]  # the owned slice's shape
    outer: int
    pitch: int
    width: int

    def apply(self, span: torch.Tensor) -> torch.Tensor:
        return span.as_strided((self.outer, self.width), (self.pitch, 1)).contiguous().view(self.shape)


@dataclass(frozen=True)
class RankPlan:
    """One rank's reads, the slices they hold and the cuts to apply once they landed."""

    rank: int
    world: int
    strided: str
    vocab: str
    slices: tuple[Slice, ...]
    reads: tuple[TensorRead, ...]
    post: Mapping[str, Unspan] = field(default_factory=dict)

    @property
    def owned_nbytes(self) -> int:
        """Bytes of this rank's tensors once finished."""
        return sum(s.nbytes_owned for s in self.slices)

    @property
    def read_nbytes(self) -> int:
        """Bytes read from the files (more than owned with coalesced spans)."""
        return sum(r.nbytes for r in self.reads)

    @property
    def runs(self) -> int:
        return sum(len(r.runs) for r in self.reads)

    def finish(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cut every coalesced span to its slice, in place in `tensors` (which is returned)."""
        for name, cut in self.post.items():
            tensors[name] = cut.apply(tensors[name])
        return tensors

    def summary(self) -> dict:
        kinds: dict[str, int] = {}
        for s in self.slices:
            kinds[s.kind] = kinds.get(s.kind, 0) + 1
        return {"rank": self.rank, "world": self.world, "strided": self.strided, "vocab": self.vocab,
                "tensors": len(self.slices), **{f"{k}_tensors": v for k, v in sorted(kinds.items())},
                "owned_nbytes": self.owned_nbytes, "read_nbytes": self.read_nbytes, "runs": self.runs,
                "cuts": len(self.post)}


def _itemsize(entry: TensorEntry, need_split: bool) -> int:
    numel = math.prod(entry.shape)
    if numel == 0:
        return 0
    bits = entry.nbytes * 8 // numel
    if need_split and bits % 8:
        raise PlanError(entry.file, f"tensor {entry.name!r} has {bits}-bit elements ({entry.dtype_name}): "
                                    f"a tensor-parallel slice of a sub-byte dtype is not byte-addressable")
    return bits // 8


def _check_world(rank: int, world: int) -> None:
    if not isinstance(world, int) or isinstance(world, bool) or world < 1:
        raise ValueError(f"world (the tensor-parallel degree) must be a positive integer, got {world!r}")
    if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < world:
        raise ValueError(f"rank must be in 0..{world - 1} for world {world}, got {rank!r}")


def tensor_slice(entry: TensorEntry, rank: int, world: int, vocab: str = "split") -> Slice:
    """The slice of `entry` that `rank` owns; a `PlanError` when `world` does not divide its dimension."""
    _check_world(rank, world)
    kind, dim = split_kind(entry.name, len(entry.shape), vocab)
    itemsize = _itemsize(entry, dim is not None and world > 1)
    if dim is None or world == 1:
        size = entry.shape[dim] if dim is not None else 0
        return Slice(entry.name, entry.file, kind, entry.shape, dim, 0, size, itemsize, entry.nbytes)
    size = entry.shape[dim]
    if size % world:
        raise PlanError(entry.file, f"tensor {entry.name!r} of shape {list(entry.shape)} ({kind}-parallel) "
                                    f"cannot be split {world} ways on dim {dim}: {size} is not divisible by {world}")
    width = size // world
    return Slice(entry.name, entry.file, kind, entry.shape, dim, rank * width, (rank + 1) * width, itemsize,
                 entry.nbytes)


def _blocks(entry: TensorEntry, s: Slice, itemsize: int) -> tuple[int, int, int, int]:
    """(outer, pitch bytes, first byte, width bytes) of a slice in row-major storage."""
    if s.dim is None or s.stop - s.start == s.shape[s.dim]:  # the whole tensor (also world 1, any dtype)
        return 1, entry.nbytes, entry.offset, entry.nbytes
    inner = math.prod(s.shape[s.dim + 1:]) * itemsize
    outer = math.prod(s.shape[:s.dim])
    pitch = s.shape[s.dim] * inner
    return outer, pitch, entry.offset + s.start * inner, (s.stop - s.start) * inner


def slice_runs(entry: TensorEntry, s: Slice, itemsize: int) -> list[tuple[int, int]]:
    """The (file offset, nbytes) runs holding exactly the slice: one per outer row.

    Never adjacent: a slice that spans its whole dimension is the whole tensor (one run,
    `_blocks`), so a partial one leaves a gap (pitch - width > 0) between its rows.
    """
    outer, pitch, first, width = _blocks(entry, s, itemsize)
    if width == 0:
        return [(first, 0)]
    return [(first + k * pitch, width) for k in range(outer)]


def rank_plan(
    checkpoint: Checkpoint | str | os.PathLike,
    rank: int,
    world: int,
    strided: str = DEFAULT_STRIDED,
    vocab: str = "split",
) -> RankPlan:
    """Rank `rank`'s part of a tensor-parallel degree-`world` load: reads, slices and cuts."""
    if strided not in STRIDED_MODES:
        raise ValueError(f"strided must be one of {STRIDED_MODES}, got {strided!r}")
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.open(checkpoint)
    _check_world(rank, world)
    slices, reads, post = [], [], {}
    for entry in ckpt.tensors:
        s = tensor_slice(entry, rank, world, vocab)
        itemsize = s.itemsize
        slices.append(s)
        outer, pitch, first, width = _blocks(entry, s, itemsize)
        if outer <= 1 or width == 0 or strided == "rows":  # contiguous, or one run per row
            reads.append(TensorRead(entry.name, entry.file, entry.dtype_name, s.shape_owned,
                                    tuple(slice_runs(entry, s, itemsize))))
            continue
        span = (outer - 1) * pitch + width
        reads.append(TensorRead(entry.name, entry.file, entry.dtype_name, (span // itemsize,), ((first, span),)))
        post[entry.name] = Unspan(entry.name, s.shape_owned, outer, pitch // itemsize, width // itemsize)
    return RankPlan(rank, world, strided, vocab, tuple(slices), tuple(reads), post)


def rank_reads(
    checkpoint: Checkpoint | str | os.PathLike,
    rank: int,
    world: int,
    strided: str = DEFAULT_STRIDED,
    vocab: str = "split",
) -> list[TensorRead]:
    """The reads for `gdslab.load(..., reads=...)` that bring only rank `rank`'s bytes.

    With ``strided="rows"`` the loaded tensors are the slices themselves. With
    ``strided="span"`` a row-parallel tensor lands as a flat span: cut it with
    ``rank_plan(...).finish(result.tensors)`` (or use `gdslab.dist.load_rank`, which does).
    """
    return list(rank_plan(checkpoint, rank, world, strided, vocab).reads)


def share_partition(checkpoint: Checkpoint | str | os.PathLike, world: int) -> list[list[TensorEntry]]:
    """Whole tensors split into `world` contiguous groups of about equal bytes, in file order.

    The "read 1/N, then share" mode (as fastsafetensors and InstantTensor do): rank r reads
    group r whole and sends every other rank its slices.
    """
    _check_world(0, world)
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.open(checkpoint)
    total = ckpt.nbytes
    groups: list[list[TensorEntry]] = [[] for _ in range(world)]
    done = 0
    for entry in ckpt.tensors:
        # the group whose byte range [r/N, (r+1)/N) holds this tensor's midpoint
        middle = done + entry.nbytes / 2
        group = min(world - 1, int(middle * world // total)) if total else 0
        groups[group].append(entry)
        done += entry.nbytes
    return groups


__all__ = [
    "PlanError", "Slice", "Unspan", "RankPlan", "STRIDED_MODES", "DEFAULT_STRIDED", "VOCAB_POLICIES",
    "split_kind", "tensor_slice", "slice_runs", "rank_plan", "rank_reads", "share_partition",
]
