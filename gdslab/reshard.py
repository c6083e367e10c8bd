"""The recipe behind "seconds": a checkpoint split offline into one set of files per tensor-parallel rank.

Slicing on the fly makes every rank read more than it keeps (whole spans of row-parallel
weights, or thousands of short reads), and FP8 is half the bytes of bf16. So the published
cold starts pre-shard the checkpoint once, and optionally pre-quantize it: each rank then
reads only its own bytes, whole files in one contiguous stream, all ranks at once.

`reshard(src, dst, tp=N)` writes, for each rank, safetensors files holding exactly that
rank's slices (the plan of `gdslab.plan`: column/row-parallel, vocabulary policy,
replicated norms), in the order the rank reads them, and a manifest last:

- file names follow vLLM's `sharded_state` format, `model-rank-{rank}-part-{part}.safetensors`,
  parts of at most `max_file_size` (5 GiB, vLLM's default); tensor names stay the source's
  (HF names with the slices' shapes), so these files are not vLLM's own state dicts;
- `dtype="fp8_e4m3"` quantizes as Meta's FP8 release does (`gdslab.fp8`): the MLP weights of
  every layer but the first and last, a float32 scale per output channel beside each;
- it streams: one tensor slice in memory at a time, written straight to its file
  (`gdslab.writer`); every file is written under a temporary name, and the manifest, which
  names every file with its size and a hash of its header, comes last. A set without its
  manifest, or whose files disagree with it, is refused with the file and the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from . import fp8
from .checkpoint import Checkpoint, TensorEntry
from .costs import trim_heap
from .datapaths.base import TensorRead, pread_into
from .errors import GdslabError
from .plan import VOCAB_POLICIES, RankPlan, Slice, rank_plan, split_kind
from .sizes import format_size, parse_size
from .writer import SafetensorsWriter

MANIFEST = "gdslab-preshard.json"
FORMAT = "gdslab-preshard"
VERSION = 1
RANK_FILE = re.compile(r"^model-rank-(\d+)-part-(\d+)\.safetensors$")
DTYPES = ("source", "fp8_e4m3")
_BLOCK = 64 << 20  # rows of a quantized weight are read this many bytes at a time when finding scales


class ReshardError(GdslabError):
    """A reshard that cannot be done, or a pre-sharded set that cannot be used: names the path and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{self.path}: {reason}")


def file_name(rank: int, part: int) -> str:
    return f"model-rank-{rank}-part-{part}.safetensors"


def header_hash(path: str | os.PathLike) -> str:
    """sha256 of a safetensors file's length word and header: its identity, cheap to check."""
    with open(path, "rb") as f:
        raw = f.read(8)
        (length,) = struct.unpack("<Q", raw) if len(raw) == 8 else (0,)
        return hashlib.sha256(raw + f.read(min(length, 100_000_000))).hexdigest()


def source_identity(ckpt: Checkpoint) -> dict:
    """The source's files (names and sizes) and one hash over their headers."""
    digest = hashlib.sha256()
    files = []
    for shard in ckpt.files:
        digest.update(header_hash(shard.path).encode())
        files.append({"name": shard.path.name, "size": shard.size})
    return {"root": str(ckpt.root), "files": files, "headers_sha256": digest.hexdigest(), "nbytes": ckpt.nbytes}


# --- reading a source slice ----------------------------------------------------------------------------


def _read(read: TensorRead) -> torch.Tensor:
    """One planned read's bytes as a tensor of its dtype and shape (a single run: the plan reads spans)."""
    buffer = np.empty(read.nbytes, dtype=np.uint8)
    fd = os.open(read.file, os.O_RDONLY)
    try:
        at = 0
        for offset, nbytes in read.runs:
            pread_into(fd, memoryview(buffer)[at:at + nbytes], offset, read.file)
            at += nbytes
    finally:
        os.close(fd)
    flat = torch.from_numpy(buffer)
    return flat.view(read.dtype).reshape(read.shape) if read.nbytes else torch.empty(read.shape, dtype=read.dtype)


def _row_scales(entry: TensorEntry) -> torch.Tensor:
    """Per-output-channel FP8 scales of a whole source weight, read a block of rows at a time."""
    rows = entry.shape[0]
    row_bytes = entry.nbytes // rows if rows else 0
    per_block = max(1, _BLOCK // max(row_bytes, 1))
    scales = []
    for first in range(0, rows, per_block):
        count = min(per_block, rows - first)
        block = TensorRead(entry.name, entry.file, entry.dtype_name, (count, *entry.shape[1:]),
                           ((entry.offset + first * row_bytes, count * row_bytes),))
        scales.append(fp8.row_scales(_read(block)))
        trim_heap()
    return torch.cat(scales) if scales else torch.ones(0, 1)


# --- the set and its manifest --------------------------------------------------------------------------


@dataclass(frozen=True)
class PreshardedSet:
    """A pre-sharded set on disk, checked against its manifest: one checkpoint per rank."""

    root: Path
    manifest: dict

    @property
    def tp(self) -> int:
        return int(self.manifest["tp"])

    @property
    def dtype(self) -> str:
        return self.manifest["dtype"]

    @property
    def nbytes(self) -> int:
        return sum(r["nbytes"] for r in self.manifest["ranks"])

    def files(self, rank: int) -> list[Path]:
        return [self.root / f["name"] for f in self.manifest["ranks"][rank]["files"]]

    def rank_checkpoint(self, rank: int) -> Checkpoint:
        """Rank `rank`'s files as one checkpoint (its tensors are that rank's slices, whole)."""
        if not 0 <= rank < self.tp:
            raise ValueError(f"rank must be in 0..{self.tp - 1} for this set of TP {self.tp}, got {rank!r}")
        return Checkpoint.of_files(self.root, self.files(rank))

    def check_world(self, world: int | None) -> None:
        if world is not None and world != self.tp:
            raise ReshardError(self.root / MANIFEST, f"this set was pre-sharded for TP {self.tp}; it cannot be "
                                                     f"loaded by {world} rank(s) (reshard the source for TP {world})")

    def summary(self) -> str:
        quant = " (FP8 E4M3, per-channel scales)" if self.dtype == "fp8_e4m3" else ""
        lines = [f"{self.root}: pre-sharded for TP {self.tp}{quant}, {format_size(self.nbytes)} in "
                 f"{sum(len(r['files']) for r in self.manifest['ranks'])} file(s); source "
                 f"{format_size(self.manifest['source']['nbytes'])} at {self.manifest['source']['root']}"]
        for r in self.manifest["ranks"]:
            lines.append(f"  rank {r['rank']}: {format_size(r['nbytes'])} in {len(r['files'])} file(s)")
        return "\n".join(lines)


def rank_plan_of(pset: PreshardedSet, rank: int) -> tuple[Checkpoint, RankPlan]:
    """Rank `rank`'s checkpoint and its plan: every tensor of its own files, read whole, nothing to cut."""
    ckpt = pset.rank_checkpoint(rank)
    slices = tuple(Slice(e.name, e.file, "presharded", e.shape, None, 0, 0, 0, e.nbytes) for e in ckpt.tensors)
    reads = tuple(TensorRead.whole(e) for e in ckpt.tensors)
    return ckpt, RankPlan(rank, pset.tp, "presharded", pset.manifest.get("vocab", "split"), slices, reads)


def is_preshard(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder holding a pre-sharded set (its manifest, or rank files without one)."""
    path = Path(path)
    if not path.is_dir():
        return False
    return (path / MANIFEST).exists() or any(RANK_FILE.match(p.name) for p in path.glob("model-rank-*"))


def open_set(path: str | os.PathLike, ranks: Iterable[int] | None = None) -> PreshardedSet:
    """The pre-sharded set in `path`, every file checked against the manifest (size and header hash).

    With `ranks`, only those ranks' files are checked: a rank of a many-node job touches no
    other rank's file, not even its header.
    """
    root = Path(path)
    manifest_path = root / MANIFEST
    if not manifest_path.exists():
        raise ReshardError(root, f"rank files but no {MANIFEST}: an interrupted reshard (run it again) or not a set")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        raise ReshardError(manifest_path, f"unreadable manifest: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ReshardError(manifest_path, f"not a {FORMAT} v{VERSION} manifest")
    listing = manifest.get("ranks")
    if not isinstance(listing, list) or len(listing) != manifest.get("tp") or \
            [r.get("rank") for r in listing] != list(range(len(listing))):
        raise ReshardError(manifest_path, "the manifest's ranks do not match its TP degree")
    listed, only = set(), None if ranks is None else set(ranks)
    for r in manifest["ranks"]:
        for f in r["files"]:
            file = root / f["name"]
            listed.add(f["name"])
            if only is not None and r["rank"] not in only:
                continue
            if not file.is_file():
                raise ReshardError(file, f"missing: the manifest lists it for rank {r['rank']}")
            size = file.stat().st_size
            if size != f["size"]:
                raise ReshardError(file, f"{size} bytes, the manifest says {f['size']}: changed or cut short "
                                         "since the reshard")
            if header_hash(file) != f["header_sha256"]:
                raise ReshardError(file, "its header differs from the one the manifest recorded: not this set's file")
    extra = [] if only is not None else sorted(p.name for p in root.glob("model-rank-*") if p.name not in listed)
    if extra:
        raise ReshardError(root / extra[0], "a rank file the manifest does not list (from another reshard?)")
    return PreshardedSet(root, manifest)


# --- writing a set ---------------------------------------------------------------------------------------


def _prepare_destination(dst: Path, force: bool) -> None:
    if not dst.exists():
        dst.mkdir(parents=True)
        return
    if not dst.is_dir():
        raise ReshardError(dst, "exists and is not a folder")
    present = sorted(p.name for p in dst.iterdir())
    if not present:
        return
    # the set's own: its manifest (and the manifest's temporary file, left by a reshard killed while
    # publishing it), rank files, and partial files of an interrupted run
    ours = [n for n in present if n in (MANIFEST, MANIFEST + ".partial") or RANK_FILE.match(n)
            or n.endswith(".safetensors.partial")]
    if not force:
        raise ReshardError(dst, f"not empty ({len(present)} entries, e.g. {present[0]}): pass force=True "
                                "(--force) to replace a pre-sharded set there")
    if len(ours) != len(present):
        other = next(n for n in present if n not in ours)
        raise ReshardError(dst / other, "not part of a pre-sharded set: --force replaces a set, it deletes "
                                        "nothing else (choose an empty destination)")
    (dst / MANIFEST).unlink(missing_ok=True)  # the set stops looking complete before any file goes
    for name in ours:
        (dst / name).unlink(missing_ok=True)


def _outputs(ckpt: Checkpoint, rank: int, tp: int, vocab: str, quantized: set[str]) -> list[tuple]:
    """(name, dtype, shape, source read, cut, scale rows) of every tensor rank `rank` writes, in reading order."""
    plan = rank_plan(ckpt, rank, tp, "span", vocab)
    out = []
    for s, read in zip(plan.slices, plan.reads):
        cut = plan.post.get(s.name)
        if s.name in quantized:
            out.append((s.name, fp8.FP8, s.shape_owned, read, cut, None))
            rows = (s.start, s.stop) if s.dim == 0 else (0, s.shape[0])
            out.append((fp8.scale_name(s.name), torch.float32, (rows[1] - rows[0], 1), None, None, (s.name, rows)))
        else:
            out.append((s.name, read.dtype, s.shape_owned, read, cut, None))
    return out


def _parts(outputs: list[tuple], max_file_size: int) -> list[list[tuple]]:
    """Consecutive tensors grouped into files of at most `max_file_size` bytes (a bigger tensor alone)."""
    parts, current, size = [], [], 0
    for item in outputs:
        nbytes = int(np.prod(item[2], dtype=np.int64)) * item[1].itemsize
        if current and size + nbytes > max_file_size:
            parts.append(current)
            current, size = [], 0
        current.append(item)
        size += nbytes
    if current or not parts:
        parts.append(current)
    return parts


def reshard(source, destination: str | os.PathLike, tp: int, *, dtype: str = "source",
            max_file_size: int | str = "5GiB", vocab: str = "split", force: bool = False,
            progress: bool = True) -> PreshardedSet:
    """Write `source` as one set of files per tensor-parallel rank (and FP8 weights with `dtype="fp8_e4m3"`).

    Returns the finished set, checked against its own manifest. Streaming: one tensor slice
    in memory at a time. On any failure, the files this call wrote are removed and no
    manifest exists: nothing looks complete.
    """
    from tqdm.auto import tqdm

    ckpt = source if isinstance(source, Checkpoint) else Checkpoint.open(source)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if vocab not in VOCAB_POLICIES:
        raise ValueError(f"vocab must be one of {VOCAB_POLICIES}, got {vocab!r}")
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise ValueError(f"tp (the tensor-parallel degree) must be a positive integer, got {tp!r}")
    limit = parse_size(max_file_size)
    if limit < 1:
        raise ValueError("max_file_size must be at least 1 byte")
    dst = Path(destination)
    if dst.resolve() == Path(ckpt.root).resolve() or Path(ckpt.root).resolve() in dst.resolve().parents:
        raise ReshardError(dst, "the destination is inside the source checkpoint")
    layers = fp8.layer_count(e.name for e in ckpt.tensors)
    quantized = {e.name for e in ckpt.tensors if dtype == "fp8_e4m3" and fp8.is_quantized(e.name, layers)}
    for name in quantized:
        entry = ckpt[name]
        if entry.dtype not in (torch.bfloat16, torch.float16, torch.float32):
            raise ReshardError(entry.file, f"tensor {name!r} is {entry.dtype_name}: only bf16, fp16 or fp32 "
                                           "weights are quantized to FP8")
    outputs = [_outputs(ckpt, rank, tp, vocab, quantized) for rank in range(tp)]  # a TP that does not divide fails here
    _prepare_destination(dst, force)

    written: list[Path] = []
    writer: SafetensorsWriter | None = None
    total = sum(int(np.prod(o[2], dtype=np.int64)) * o[1].itemsize for rank_outputs in outputs for o in rank_outputs)
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
               desc=f"reshard TP {tp}" + (" FP8" if quantized else ""))
    try:
        scales = {name: _row_scales(ckpt[name]) for name in sorted(quantized)}
        ranks = []
        for rank in range(tp):
            files, rank_bytes = [], 0
            for part, items in enumerate(_parts(outputs[rank], limit)):
                path = dst / file_name(rank, part)
                metadata = {"format": "pt", "gdslab.preshard": f"rank {rank} of TP {tp}",
                            "gdslab.dtype": "fp8_e4m3" if quantized else "source"}
                writer = SafetensorsWriter(path, [(n, d, s) for n, d, s, *_ in items], metadata)
                for name, out_dtype, shape, read, cut, scale_of in items:
                    if scale_of is not None:
                        weight, (first, last) = scale_of
                        tensor = scales[weight][first:last]
                    else:
                        tensor = _read(read)
                        if cut is not None:
                            tensor = cut.apply(tensor.reshape(-1))
                        if name in quantized:
                            kind, dim = split_kind(name, len(ckpt[name].shape), vocab)
                            rows = scales[name]
                            if dim == 0:
                                width = ckpt[name].shape[0] // tp
                                rows = rows[rank * width:(rank + 1) * width]
                            tensor = fp8.quantize(tensor, rows)
                    writer.write(name, tensor)
                    bar.update(tensor.numel() * tensor.element_size())
                    del tensor
                    trim_heap()  # freed blocks would otherwise pile up as resident memory, tensor after tensor
                written.append(writer.close())
                files.append({"name": path.name, "size": writer.size, "header_sha256": header_hash(path),
                              "tensors": len(items)})
                rank_bytes += writer.nbytes
                writer = None
            ranks.append({"rank": rank, "nbytes": rank_bytes, "files": files})
        manifest = {
            "format": FORMAT, "version": VERSION, "tp": tp, "vocab": vocab,
            "dtype": "fp8_e4m3" if quantized else "source",
            "layout": "vLLM sharded_state file names: model-rank-{rank}-part-{part}.safetensors; HF tensor names",
            "plan": "gdslab.plan: q/k/v/gate/up split on dim 0, o/down on dim 1, vocabulary " + vocab
                    + ", norms replicated; FP8 scales follow their weight's output rows",
            "max_file_size": limit,
            "quantization": ({**fp8.CONVENTION, "modules_to_not_convert": fp8.not_converted(e.name for e in ckpt.tensors)}
                             if quantized else None),
            "source": source_identity(ckpt),
            "ranks": ranks,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        tmp = dst / (MANIFEST + ".partial")
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, dst / MANIFEST)  # last: from here on the set is complete
    except BaseException:
        if writer is not None:
            writer.abort()
        for path in written:
            path.unlink(missing_ok=True)
        (dst / (MANIFEST + ".partial")).unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    return open_set(dst)


__all__ = ["MANIFEST", "PreshardedSet", "ReshardError", "reshard", "open_set", "is_preshard", "rank_plan_of", "file_name",
           "header_hash", "source_identity"]
