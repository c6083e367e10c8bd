"""Strict safetensors and HF sharded-index reading: the tensor table with byte offsets.

We parse headers ourselves (instead of asking the safetensors library) because direct
reads need each tensor's absolute byte offset in its file. The reader is at least as
strict as the safetensors library: a file it rejects, we reject, with a `CheckpointError`
that names the file and the reason.

Format (one page): 8-byte little-endian header length N, then N bytes of JSON
``{"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {str: str}}``,
then the data region; offsets are relative to the data region, which the tensors cover
exactly, without gaps or overlaps.
"""

from __future__ import annotations

import json
import math
import operator
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from .errors import CheckpointError
from .pausegc import paused_gc

MAX_HEADER_BYTES = 100_000_000
MAX_TENSORS = 1_000_000
MAX_RANK = 64
MAX_DIM = 2**63 - 1  # a dimension, and the running product of the shape
INDEX_NAME = "model.safetensors.index.json"

# Every dtype the safetensors format defines: name -> (bits per element, torch dtype or None).
_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
_TORCH_NAMES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "F8_E5M2": "float8_e5m2",
    "F8_E4M3": "float8_e4m3fn", "F8_E8M0": "float8_e8m0fnu",
    "I16": "int16", "U16": "uint16", "F16": "float16", "BF16": "bfloat16",
    "I32": "int32", "U32": "uint32", "F32": "float32",
    "I64": "int64", "U64": "uint64", "F64": "float64", "C64": "complex64",
}
DTYPES: dict[str, torch.dtype | None] = {
    name: getattr(torch, _TORCH_NAMES.get(name, ""), None) for name in _DTYPE_BITS
}
SAFETENSORS_NAME = {dtype: name for name, dtype in DTYPES.items() if dtype is not None}


class TensorEntry(NamedTuple):
    """One tensor's place on disk: `offset` is absolute within `file`.

    A named tuple: a checkpoint may hold 100,000 of them, and a tuple is built in C.
    """

    name: str
    file: Path
    offset: int
    nbytes: int
    dtype_name: str
    shape: tuple[int, ...]

    @property
    def dtype(self) -> torch.dtype | None:
        return DTYPES[self.dtype_name]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ShardFile:
    """One safetensors file: where its data region starts, its size, its metadata."""

    path: Path
    size: int
    data_start: int
    nbytes: int
    tensors: int
    metadata: dict[str, str] = field(default_factory=dict)
    identity: tuple[int, int, int] = (0, 0, 0)  # (device, inode, mtime_ns) when the header was read

    def changed(self) -> str | None:
        """Why the file on disk is no longer the one this table describes; None while it is.

        A table is a plan: a shard replaced or rewritten after it was made would be read at
        the old offsets, silently. Loaders call this just before reading.
        """
        try:
            now = os.stat(self.path)
        except OSError as e:
            return f"cannot stat: {e.strerror or e}"
        if (now.st_dev, now.st_ino) != self.identity[:2]:
            return "replaced since the checkpoint was opened (another file at this path)"
        if now.st_size != self.size or now.st_mtime_ns != self.identity[2]:
            return f"modified since the checkpoint was opened ({self.size} -> {now.st_size} bytes)"
        return None


@dataclass(frozen=True)
class Checkpoint:
    """The tensor table of a checkpoint, ordered by file then offset (the order to read it in)."""

    root: Path
    tensors: tuple[TensorEntry, ...]
    files: tuple[ShardFile, ...]
    index: Path | None = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Checkpoint":
        """A `.safetensors` file, a directory (with or without an HF index) or an index file."""
        return open_checkpoint(path)

    @classmethod
    def of_files(cls, root: str | os.PathLike, paths: list[str | os.PathLike]) -> "Checkpoint":
        """The table of these safetensors files together (one rank's files of a pre-sharded set, say)."""
        shards, tensors, owner = [], [], {}
        for path in paths:
            shard, entries = read_header(path)
            for entry in entries:
                if entry.name in owner:
                    raise CheckpointError(entry.file, f"tensor {entry.name!r} is also in {owner[entry.name]}")
                owner[entry.name] = entry.file.name
            shards.append(shard)
            tensors.extend(entries)
        return cls(Path(root), tuple(tensors), tuple(shards))

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def __getitem__(self, name: str) -> TensorEntry:
        for entry in self.tensors:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def by_file(self) -> dict[Path, list[TensorEntry]]:
        grouped: dict[Path, list[TensorEntry]] = {f.path: [] for f in self.files}
        for entry in self.tensors:
            grouped[entry.file].append(entry)
        return grouped

    def dtype_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.tensors:
            counts[entry.dtype_name] = counts.get(entry.dtype_name, 0) + 1
        return counts

    def summary(self) -> str:
        """What `gdslab inspect` prints: totals, shards, dtypes."""
        from .sizes import format_size

        lines = [
            f"{self.root}: {len(self.tensors)} tensors, {format_size(self.nbytes)} "
            f"in {len(self.files)} file(s)" + (f", index {self.index.name}" if self.index else ""),
            "dtypes: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.dtype_counts().items())),
        ]
        for shard in self.files:
            lines.append(
                f"  {shard.path.name}: {shard.tensors} tensors, {format_size(shard.nbytes)}, "
                f"data at byte {shard.data_start}"
            )
        return "\n".join(lines)


# --- one safetensors file -------------------------------------------------------------


def _no_duplicates(path: Path):
    """JSON object hook: refuse duplicate names, and strings that are not Unicode text.

    Python's parser turns an escaped lone surrogate ("\\ud800") into a string that no
    UTF-8 encoder accepts; the safetensors library refuses such a header, so we do too.
    """

    def hook(pairs):
        seen = {}
        for key, value in pairs:
            if key in seen:
                raise CheckpointError(path, f"duplicate name {key!r} in the header")
            for text in (key, value) if isinstance(value, str) else (key,):
                if not _is_text(text):
                    raise CheckpointError(path, f"{text!r} in the header is not valid Unicode (lone surrogate)")
            seen[key] = value
        return seen

    return hook


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _count_keys(header) -> int:
    """Keys of the top level and of the objects right under it (entries, metadata): all a valid header has.

    An object nested anywhere else is not counted, so its keys make the count disagree with
    the raw text and the header goes through the checking parse.
    """
    if type(header) is not dict:
        return -1
    return len(header) + sum(map(len, [v for v in header.values() if type(v) is dict]))


def _parse_header(raw: bytes, path: Path):
    """The header's JSON, refusing duplicate names and strings that are not Unicode text.

    Fast path: without a backslash the header can hold no escaped quote and no escaped
    surrogate, so every `":` ends a key (a string value is followed by `,` or `}`); one
    C-speed `json.loads` whose objects hold exactly that many keys has no duplicate anywhere. Anything else (escapes,
    or a count that disagrees) is parsed again with a hook that checks every object.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(path, "header is not valid UTF-8") from None
    try:
        if b"\\" not in raw:
            header = json.loads(text)
            if _count_keys(header) == raw.count(b'":'):  # a key written "name" : (spaced) just takes the slow way
                return header
        return json.loads(text, object_pairs_hook=_no_duplicates(path))
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(path, "header JSON is nested too deeply") from None
    except ValueError as e:
        raise CheckpointError(path, f"header is not valid JSON: {e}") from None


def read_header(path: str | os.PathLike) -> tuple[ShardFile, list[TensorEntry]]:
    """Parse and validate one safetensors file's header; the data itself is not read."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            stat = os.fstat(f.fileno())
            size = stat.st_size
            if size < 8:
                raise CheckpointError(path, f"truncated: {size} bytes, shorter than the 8-byte header length")
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > MAX_HEADER_BYTES:
                raise CheckpointError(path, f"header length {header_len} is absurd (limit {MAX_HEADER_BYTES})")
            if 8 + header_len > size:
                raise CheckpointError(
                    path, f"header length {header_len} runs past the end of the file ({size} bytes): truncated?"
                )
            raw = f.read(header_len)
    except CheckpointError:
        raise
    except IsADirectoryError:
        raise CheckpointError(path, "is a directory, not a safetensors file") from None
    except OSError as e:
        raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None
    if len(raw) != header_len:
        raise CheckpointError(path, "file shrank while its header was read")
    if not raw.startswith(b"{"):
        raise CheckpointError(path, "header does not start with '{': not a safetensors file")
    header = _parse_header(raw, path)
    if not isinstance(header, dict):
        raise CheckpointError(path, "header JSON is not an object")

    data_start = 8 + header_len
    data_len = size - data_start
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise CheckpointError(path, "__metadata__ must map strings to strings")
    if len(header) > MAX_TENSORS:
        raise CheckpointError(path, f"header lists {len(header)} tensors (limit {MAX_TENSORS})")

    entries = [_entry(path, name, info, data_start, data_len) for name, info in header.items()]
    spans = sorted(entries, key=_BY_PLACE)  # (offset, nbytes): the same order as (offset, end)
    cursor = data_start
    for entry in spans:
        if entry.offset < cursor:
            raise CheckpointError(path, f"tensor {entry.name!r} overlaps the tensor before it")
        if entry.offset > cursor:
            raise CheckpointError(path, f"gap of {entry.offset - cursor} bytes before tensor {entry.name!r}")
        cursor = entry.offset + entry.nbytes
    if cursor != size:
        raise CheckpointError(
            path, f"tensors end at byte {cursor} but the file has {size} bytes: truncated or padded"
        )
    identity = (stat.st_dev, stat.st_ino, stat.st_mtime_ns)
    shard = ShardFile(path, size, data_start, data_len, len(spans), dict(metadata), identity)
    return shard, spans


_ENTRY_KEYS = frozenset(("dtype", "shape", "data_offsets"))
_BY_PLACE = operator.itemgetter(2, 3)  # TensorEntry (offset, nbytes)


def _entry(path: Path, name: str, info, data_start: int, data_len: int) -> TensorEntry:
    """One tensor's entry, every rule checked; the common case takes the fewest steps."""
    if type(info) is not dict or info.keys() != _ENTRY_KEYS:
        raise CheckpointError(path, f"tensor {name!r}: expected exactly dtype, shape and data_offsets")
    dtype_name, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    bits = _DTYPE_BITS.get(dtype_name) if type(dtype_name) is str else None
    if bits is None:
        raise CheckpointError(path, f"tensor {name!r}: unknown dtype {dtype_name!r}")
    if type(shape) is not list or len(shape) > MAX_RANK:
        if type(shape) is list:
            raise CheckpointError(path, f"tensor {name!r}: rank {len(shape)} exceeds {MAX_RANK}")
        raise CheckpointError(path, f"tensor {name!r}: shape must be a list of non-negative integers")
    numel = 1
    for dim in shape:  # torch sizes are int64; the safetensors library refuses a product past 64 bits
        if type(dim) is not int or dim < 0:
            raise CheckpointError(path, f"tensor {name!r}: shape must be a list of non-negative integers")
        numel *= dim
        if numel > MAX_DIM or dim > MAX_DIM:
            raise CheckpointError(path, f"tensor {name!r}: shape {shape} exceeds the largest tensor size (2**63-1)")
    if type(offsets) is not list or len(offsets) != 2 or type(offsets[0]) is not int or type(offsets[1]) is not int:
        raise CheckpointError(path, f"tensor {name!r}: data_offsets must be two integers")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise CheckpointError(path, f"tensor {name!r}: data_offsets [{begin}, {end}] are not an interval")
    if end > data_len:
        raise CheckpointError(
            path, f"tensor {name!r}: data_offsets [{begin}, {end}] outside the data region of {data_len} bytes"
            + (" (truncated file?)" if begin < data_len else "")
        )
    bits *= numel
    if bits % 8 or end - begin != bits // 8:
        raise CheckpointError(
            path,
            f"tensor {name!r}: {end - begin} bytes stored but shape {shape} of {dtype_name} needs {bits / 8:g}",
        )
    return TensorEntry(name, path, data_start + begin, end - begin, dtype_name, tuple(shape))


# --- a checkpoint: file, directory, index ------------------------------------------------


def _shard_path(root: Path, index: Path, name) -> Path:
    """A shard named by an index must be a plain file name inside the index's folder."""
    if not isinstance(name, str) or not name:
        raise CheckpointError(index, f"shard name {name!r} is not a file name")
    if "/" in name or "\\" in name or name in (".", "..") or os.path.isabs(name) or "\x00" in name:
        raise CheckpointError(index, f"shard name {name!r} escapes the checkpoint folder")
    path = root / name
    if not path.exists():
        raise CheckpointError(path, f"missing shard listed in {index.name}")
    if path.resolve().parent != root.resolve():
        raise CheckpointError(path, f"shard {name!r} is a symlink leading out of the checkpoint folder")
    if not path.is_file():
        raise CheckpointError(path, "shard is not a regular file")
    return path


def _read_index(index: Path) -> dict[str, str]:
    try:
        raw = index.read_bytes()
    except OSError as e:
        raise CheckpointError(index, f"cannot read: {e.strerror or e}") from None
    if len(raw) > MAX_HEADER_BYTES:
        raise CheckpointError(index, f"index is {len(raw)} bytes (limit {MAX_HEADER_BYTES})")
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates(index))
    except CheckpointError:
        raise
    except (UnicodeDecodeError, RecursionError, ValueError) as e:
        raise CheckpointError(index, f"index is not valid JSON: {e}") from None
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise CheckpointError(index, "index has no weight_map of tensor name -> shard file name")
    if not weight_map:
        raise CheckpointError(index, "index weight_map is empty")
    return weight_map


def open_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Build the validated tensor table; see `Checkpoint.open`."""
    with paused_gc():  # a header of 100,000 tensors is 400,000 small objects, none of them in a cycle
        return _open_checkpoint(Path(path))


def _open_checkpoint(path: Path) -> Checkpoint:
    if not path.exists():
        raise CheckpointError(path, "no such file or directory")
    if path.is_file() and path.name.endswith(".json"):
        return _open_index(path.parent, path)
    if path.is_file():
        shard, entries = read_header(path)
        return Checkpoint(path, tuple(entries), (shard,))
    if not path.is_dir():
        raise CheckpointError(path, "neither a file nor a directory")
    index = path / INDEX_NAME
    if index.exists():
        return _open_index(path, index)
    names = sorted(p.name for p in path.glob("*.safetensors"))
    if not names:
        raise CheckpointError(path, "empty checkpoint folder: no *.safetensors files and no index")
    if any(name.startswith("model-rank-") for name in names):
        raise CheckpointError(path, "holds a pre-sharded set (model-rank-*-part-*.safetensors): load it with "
                                    "gdslab.load_sharded, which reads its manifest")
    return Checkpoint.of_files(path, [_shard_path(path, path, name) for name in names])


def _open_index(root: Path, index: Path) -> Checkpoint:
    weight_map = _read_index(index)
    paths = {name: _shard_path(root, index, name) for name in sorted(set(weight_map.values()))}
    shards, tensors = [], []
    for name, shard_path in paths.items():
        shard, entries = read_header(shard_path)
        for entry in entries:
            listed = weight_map.get(entry.name)
            if listed is None:
                raise CheckpointError(shard.path, f"tensor {entry.name!r} is not listed in {index.name}")
            if listed != name:
                raise CheckpointError(shard.path, f"tensor {entry.name!r} is also in {listed} per {index.name}")
        shards.append(shard)
        tensors.extend(entries)
    found = {entry.name for entry in tensors}
    missing = [n for n in weight_map if n not in found]
    if missing:
        shard_name = weight_map[missing[0]]
        raise CheckpointError(
            root / shard_name, f"tensor {missing[0]!r} listed in {index.name} is not in this shard"
            + (f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else "")
        )
    return Checkpoint(root, tuple(tensors), tuple(shards), index)
