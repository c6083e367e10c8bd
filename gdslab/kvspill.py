"""KV-cache blocks spilled to storage and restored, through the lab's data paths, bit-exact, measured.

When a context does not fit in HBM (`gdslab.kvcache`), its KV blocks can go to storage and
come back instead of being recomputed. A block is what paged-attention servers allocate:
`tokens` (16 in vLLM) × layers × KV heads × head dim × 2 (K and V) values.

One spill is one file: a header page (magic, JSON: block count, block bytes, shape, dtype, a
CRC-32 per block), then the blocks, each starting on a 4 KiB boundary so that O_DIRECT and
cuFile can move them whole. Writing goes to `<name>.partial`, is fsynced (a spill is timed
until it is on storage, not in the page cache), then renamed: a failed or cancelled spill
removes its partial file, so nothing is left behind. Restoring checks the header and the
file's size before reading (a file cut short is refused, naming both sizes) and every
block's CRC after (a changed block is named).

Data paths: `host` (pwrite/pread of host memory; `direct=True` for O_DIRECT), on a GPU
`pinned-bounce` (device ↔ pinned host buffers ↔ file) and `kvikio` (KvikIO `CuFile`
pwrite/pread of device memory: GDS where the stack allows, else compatibility mode, with the
bytes each backend carried, from KvikIO's counters).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .cache import evict, resident_fraction
from .datapaths.base import BLOCK, aligned_host, round_up
from .devices import resolve_device
from .errors import DatapathUnavailable, FileError
from .kvcache import Attention, kv_heads_per_rank
from .loader import cache_state

MAGIC = b"GDSLABKV"
VERSION = 1
_PREFIX = struct.Struct("<8sQ")  # magic, header length
DATAPATHS = ("host", "pinned-bounce", "kvikio")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8_e4m3": torch.float8_e4m3fn, "uint8": torch.uint8}
_NAMES = {v: k for k, v in _DTYPES.items()}


class KVSpillError(FileError):
    """A spill file cannot be written, or read back as what was written: the message names it and why."""


@dataclass(frozen=True)
class BlockShape:
    """One KV block: `tokens` × layers × KV heads (of one rank) × head dim, K and V."""

    tokens: int
    layers: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype = torch.bfloat16

    @property
    def dims(self) -> tuple[int, ...]:
        return (self.layers, 2, self.tokens, self.kv_heads, self.head_dim)

    @property
    def nbytes(self) -> int:
        return math.prod(self.dims) * torch.empty(0, dtype=self.dtype).element_size()

    @classmethod
    def of_model(cls, model: Attention, tp: int = 1, tokens: int = 16, dtype: torch.dtype = torch.bfloat16):
        """A rank's block of `model` under tensor parallelism `tp` (vLLM's block: 16 tokens)."""
        return cls(tokens, model.layers, kv_heads_per_rank(model, tp), model.head_dim, dtype)


def random_blocks(shape: BlockShape, count: int, seed: int = 0, device: str | torch.device = "cpu") -> torch.Tensor:
    """`count` blocks of `shape` with random bytes (every bit pattern, so the check is bit-exact), aligned on the host."""
    nbytes = shape.nbytes * count
    generator = torch.Generator().manual_seed(seed)
    host = aligned_host(nbytes)
    host.copy_(torch.randint(0, 256, (nbytes,), dtype=torch.uint8, generator=generator))
    blocks = host.view(shape.dtype).view(count, *shape.dims)
    return blocks if torch.device(device).type == "cpu" else blocks.to(device)


# --- the file ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where each block lies in a spill file."""

    blocks: int
    block_bytes: int
    dims: tuple[int, ...]
    dtype: str
    checksums: tuple[int, ...] = ()

    @property
    def stride(self) -> int:
        return round_up(self.block_bytes)

    def header(self) -> bytes:
        body = json.dumps({"version": VERSION, "blocks": self.blocks, "block_bytes": self.block_bytes,
                           "dims": list(self.dims), "dtype": self.dtype, "crc32": list(self.checksums)}).encode()
        return _PREFIX.pack(MAGIC, len(body)) + body

    @property
    def data_offset(self) -> int:
        return round_up(len(self.header()))

    def offset(self, block: int) -> int:
        return self.data_offset + block * self.stride

    @property
    def file_bytes(self) -> int:
        return self.offset(self.blocks)

    @classmethod
    def read(cls, path: Path) -> "Layout":
        """The layout a spill file's header promises, checked against the file's size."""
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if hasattr(os, "posix_fadvise"):  # no read-ahead: reading the header must not warm the blocks
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                prefix = os.pread(fd, _PREFIX.size, 0)
                if len(prefix) < _PREFIX.size or _PREFIX.unpack(prefix)[0] != MAGIC:
                    raise KVSpillError(path, "not a gdslab KV spill file (no GDSLABKV header)")
                length = _PREFIX.unpack(prefix)[1]
                raw = os.pread(fd, length, _PREFIX.size) if length < (64 << 20) else b""
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
        except OSError as e:
            raise KVSpillError(path, f"cannot read: {e.strerror or e}") from None
        if len(raw) != length:
            raise KVSpillError(path, f"header cut short or damaged: {len(raw)} of {length} bytes")
        try:
            head = json.loads(raw)
            layout = cls(int(head["blocks"]), int(head["block_bytes"]), tuple(int(d) for d in head["dims"]),
                         str(head["dtype"]), tuple(int(c) for c in head["crc32"]))
            version = head["version"]
        except (ValueError, KeyError, TypeError) as e:
            raise KVSpillError(path, f"header damaged: {e}") from None
        if version != VERSION:
            raise KVSpillError(path, f"written by another version of gdslab (format {version}, this one reads {VERSION})")
        if layout.dtype not in _DTYPES or len(layout.checksums) != layout.blocks or layout.blocks < 0:
            raise KVSpillError(path, "header damaged: its block count, checksums or dtype disagree")
        if math.prod(layout.dims) * torch.empty(0, dtype=_DTYPES[layout.dtype]).element_size() != layout.block_bytes:
            raise KVSpillError(path, "header damaged: block shape and block bytes disagree")
        if size < layout.file_bytes:
            raise KVSpillError(path, f"cut short: {size} bytes, its header promises {layout.file_bytes} "
                                     f"({layout.blocks} blocks of {layout.block_bytes} B)")
        return layout


def _crc(block: torch.Tensor) -> int:
    return zlib.crc32(block.contiguous().view(torch.uint8).numpy())


def checksums(blocks: torch.Tensor) -> tuple[int, ...]:
    """CRC-32 of each block (copied to the host first when on a device)."""
    host = blocks.detach().cpu() if blocks.device.type != "cpu" else blocks
    return tuple(_crc(host[i]) for i in range(host.shape[0]))


# --- data paths -------------------------------------------------------------------------------------------


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def _pread_all(fd: int, view: memoryview, offset: int, path: Path) -> None:
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            raise KVSpillError(path, f"cut short while reading: the file ended at byte {offset + done}")
        done += n


class _Files:
    """A spill file's descriptors: buffered, and O_DIRECT where asked and allowed (EINVAL: buffered, said)."""

    def __init__(self, path: Path, write: bool, direct: bool):
        flags = os.O_WRONLY if write else os.O_RDONLY  # a spill's file exists already (`_create`)
        self.path, self.note = path, "" if direct else "not asked for"
        self.fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
        self.direct_fd: int | None = None
        self.direct_bytes = self.buffered_bytes = 0
        if direct:
            try:
                self.direct_fd = os.open(path, (os.O_WRONLY if write else os.O_RDONLY) | os.O_DIRECT)
            except (OSError, AttributeError) as e:
                self.note = f"O_DIRECT refused ({getattr(e, 'strerror', None) or e}): buffered"

    def io(self, array: np.ndarray, offset: int, write: bool) -> None:
        view = memoryview(array).cast("B")
        fd = self.direct_fd
        if fd is not None and (array.ctypes.data % BLOCK == 0 and offset % BLOCK == 0 and len(view) % BLOCK == 0):
            try:
                self._move(fd, view, offset, write)
                self.direct_bytes += len(view)
                return
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                verb = "write" if write else "read"
                self.note, self.direct_fd = f"O_DIRECT refused at the first {verb} (EINVAL): buffered", None
                os.close(fd)
        self._move(self.fd, view, offset, write)
        self.buffered_bytes += len(view)

    def _move(self, fd: int, view: memoryview, offset: int, write: bool) -> None:
        if write:
            _pwrite_all(fd, view, offset)
        else:
            _pread_all(fd, view, offset, self.path)

    def describe(self) -> str:
        total = self.direct_bytes + self.buffered_bytes
        if not self.direct_bytes:
            return "buffered" + (f" ({self.note})" if self.note and self.note != "not asked for" else "")
        return f"O_DIRECT {self.direct_bytes / total:.0%} of bytes" + (f" ({self.note})" if self.note else "")

    def close(self) -> None:
        for fd in (self.fd, self.direct_fd):
            if fd is not None:
                os.close(fd)
        self.direct_fd = None


def available(datapath: str, device: torch.device) -> tuple[bool, str]:
    if datapath not in DATAPATHS:
        return False, f"unknown KV data path {datapath!r}; choose from {', '.join(DATAPATHS)}"
    if datapath == "host":
        return (device.type == "cpu", "" if device.type == "cpu" else "host blocks only: use pinned-bounce or kvikio "
                                                                      "for device memory")
    if device.type != "cuda":
        return False, f"{datapath} needs a CUDA device (the blocks are in host memory here)"
    if datapath == "kvikio":
        from .kvikio_info import kvikio_status

        return kvikio_status()
    return True, ""


def default_datapath(device: torch.device) -> str:
    return "host" if device.type == "cpu" else "kvikio" if available("kvikio", device)[0] else "pinned-bounce"


def _host_io(files: _Files, blocks: torch.Tensor, layout: Layout, write: bool, threads: int) -> None:
    """Each block in one pwrite/pread straight from/into host memory, `threads` at a time."""
    flat = blocks.view(torch.uint8).view(layout.blocks, layout.block_bytes)

    def one(i: int) -> None:
        files.io(flat[i].numpy(), layout.offset(i), write)

    with ThreadPoolExecutor(threads, thread_name_prefix="gdslab-kv") as pool:
        list(pool.map(one, range(layout.blocks)))


def _bounce_staging(layout: Layout, threads: int, device: torch.device) -> list:
    """One pinned, page-aligned host buffer and one CUDA stream per thread: made before the clock starts."""
    return [(torch.empty(layout.stride, dtype=torch.uint8, pin_memory=True), torch.cuda.Stream(device))
            for _ in range(threads)]


def _bounce_io(files: _Files, blocks: torch.Tensor, layout: Layout, write: bool, threads: int, staging: list) -> None:
    """Device blocks through each thread's pinned host buffer (a copy each way, then the file)."""
    flat = blocks.view(torch.uint8).view(layout.blocks, layout.block_bytes)

    def worker(k: int) -> None:
        buffer, stream = staging[k][0][:layout.block_bytes], staging[k][1]
        with torch.cuda.stream(stream):
            for i in range(k, layout.blocks, threads):
                if write:
                    buffer.copy_(flat[i], non_blocking=True)
                    stream.synchronize()
                    files.io(buffer.numpy(), layout.offset(i), True)
                else:
                    files.io(buffer.numpy(), layout.offset(i), False)
                    flat[i].copy_(buffer, non_blocking=True)
                    stream.synchronize()

    with ThreadPoolExecutor(threads, thread_name_prefix="gdslab-kv") as pool:
        list(pool.map(worker, range(threads)))


@contextlib.contextmanager
def _kvikio_setup(path: Path, write: bool, threads: int):
    """Before the clock: KvikIO's thread pool (rebuilt when num_threads changes), the file's cuFile handle
    (opened and registered), cuFile's word and the byte counter; the handle closed after, whatever happened."""
    import kvikio
    import kvikio.defaults

    from .datapaths.gds import driver_state

    with kvikio.defaults.set({"num_threads": threads}):
        handle = kvikio.CuFile(path, "r+" if write else "r")
        try:
            yield handle, driver_state(), kvikio.SummaryMonitor()
        finally:
            handle.close()


def _kvikio_io(handle, state: dict, monitor, path: Path, blocks: torch.Tensor, layout: Layout, write: bool):
    """CuFile pwrite/pread of device memory, all blocks issued at once; returns KvikIO's byte split.

    Every future is waited for before returning, also when one failed: the handle may close
    only once nothing of KvikIO's still reads or writes through it."""
    from .datapaths.gds import ByteSplit

    flat = blocks.view(torch.uint8).view(layout.blocks, layout.block_bytes)
    futures = []
    try:
        for i in range(layout.blocks):
            futures.append((handle.pwrite if write else handle.pread)(flat[i], layout.block_bytes, layout.offset(i)))
        for i, future in enumerate(futures):
            if future.get() != layout.block_bytes:
                raise KVSpillError(path, f"block {i}: KvikIO moved fewer bytes than the block holds")
    finally:
        for future in futures:
            with contextlib.suppress(Exception):
                future.get()
        summary = monitor.get()
        monitor.stop()
    return ByteSplit.from_summary(summary, scope="this spill" if write else "this restore", **state)


# --- spill and restore ---------------------------------------------------------------------------------------


@dataclass
class Transfer:
    """One spill or restore: bytes, seconds on the clock, and what really ran."""

    direction: str  # "spill" or "restore"
    path: Path
    datapath: str
    effective: str
    device: str
    blocks: int
    block_bytes: int
    seconds: float
    cache: str = ""  # restore: "cold", "partial" or "warm", measured before the read
    details: dict = field(default_factory=dict)
    tensor: torch.Tensor | None = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        return self.blocks * self.block_bytes

    @property
    def gbps(self) -> float:
        return self.nbytes / self.seconds / 1e9 if self.seconds > 0 else 0.0

    def record(self) -> dict:
        return {"direction": self.direction, "datapath": self.datapath, "effective": self.effective,
                "device": self.device, "blocks": self.blocks, "block_bytes": self.block_bytes,
                "nbytes": self.nbytes, "seconds": self.seconds, "gbps": self.gbps, "cache": self.cache,
                **self.details}

    def __str__(self) -> str:
        cache = f", {self.cache} cache" if self.cache else ""
        return (f"{self.direction} {self.blocks} blocks × {self.block_bytes / 2**20:.2f} MiB "
                f"({self.nbytes / 1e9:.3f} GB) in {self.seconds:.3f} s = {self.gbps:.2f} GB/s{cache}; "
                f"ran: {self.effective}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def spill(blocks: torch.Tensor, path: str | os.PathLike, *, datapath: str | None = None, threads: int = 4,
          direct: bool = False) -> Transfer:
    """Write `blocks` ([count, *block dims], contiguous) to `path`, durable; time it; leave nothing if it fails.

    The checksums are taken before the clock starts; the clock covers the writes and the
    fsync, so a spill is on storage (not only in the page cache) when it says it is done.
    """
    path = Path(path)
    device = blocks.device
    datapath = datapath or default_datapath(device)
    ok, why = available(datapath, device)
    if not ok:
        raise DatapathUnavailable(f"{datapath}: {why}")
    if not blocks.is_contiguous() or blocks.dim() < 2:
        raise ValueError("blocks must be one contiguous tensor of [count, *block dims]")
    count = blocks.shape[0]
    layout = Layout(count, blocks[0].numel() * blocks.element_size(), tuple(blocks.shape[1:]),
                    _NAMES.get(blocks.dtype) or _unsupported(blocks.dtype), checksums(blocks))
    partial = path.with_name(path.name + ".partial")
    try:
        _create(partial, layout)
        seconds, effective, details = _timed_transfer(partial, blocks, layout, True, datapath, threads, direct)
        os.replace(partial, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            partial.unlink()
        if isinstance(e, OSError):
            raise KVSpillError(path, f"spill failed, nothing kept: {e.strerror or e}") from None
        raise
    return Transfer("spill", path, datapath, effective, str(device), count, layout.block_bytes, seconds,
                    details=details)


def _timed_transfer(path: Path, blocks: torch.Tensor, layout: Layout, write: bool, datapath: str, threads: int,
                    direct: bool) -> tuple[float, str, dict]:
    """Move every block between `blocks` and the file by `datapath`: (seconds, what ran, details).

    The clock starts on a synchronized device and stops when the last byte has landed; a
    spill's clock includes the fsync (on storage, not only in the page cache).
    """
    device, verb = blocks.device, "pwrite" if write else "pread"
    if datapath == "kvikio":
        with _kvikio_setup(path, write, threads) as (handle, state, monitor):
            _sync(device)
            start = time.perf_counter()
            split = _kvikio_io(handle, state, monitor, path, blocks, layout, write)
            if write:
                _fsync(path)
            _sync(device)
            seconds = time.perf_counter() - start
        return seconds, f"kvikio {verb}: {split.kind}: {split.describe()}", split.record()
    files = _Files(path, write=write, direct=direct)
    try:
        if datapath == "host":
            move = functools.partial(_host_io, files, blocks, layout, write, threads)
        else:
            move = functools.partial(_bounce_io, files, blocks, layout, write, threads,
                                     _bounce_staging(layout, threads, device))
        _sync(device)
        start = time.perf_counter()
        move()
        if write:
            os.fsync(files.fd)
        _sync(device)
        seconds = time.perf_counter() - start
    finally:
        files.close()
    moved = layout.blocks * layout.block_bytes
    return seconds, _effective(datapath, files, threads, verb), {
        "direct_bytes": files.direct_bytes, "direct_share": files.direct_bytes / moved if moved else 0.0,
        "direct_note": files.note}


def _create(path: Path, layout: Layout) -> None:
    """The spill file with its header page, at its full size (the blocks are written into it)."""
    with open(path, "wb") as f:
        f.write(layout.header().ljust(layout.data_offset, b"\0"))
        f.truncate(layout.file_bytes)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unsupported(dtype: torch.dtype) -> str:
    raise ValueError(f"blocks of {dtype} cannot be spilled; use one of {', '.join(map(str, _DTYPES.values()))}")


def _effective(datapath: str, files: _Files, threads: int, verb: str) -> str:
    if datapath == "host":
        return f"host {verb}, {files.describe()}, {threads} threads"
    return f"pinned-bounce (device ↔ pinned host buffer ↔ file), {files.describe()}, {threads} threads"


def restore(path: str | os.PathLike, *, device: str | torch.device | None = None, datapath: str | None = None,
            threads: int = 4, direct: bool = False, verify: bool = True) -> Transfer:
    """Read a spill back into fresh memory on `device`; the tensor is the one spilled, or an error says why not.

    The header and size are checked before the clock; the clock covers the reads (and the
    copies to the device); each block's CRC is checked after it (`verify`).
    """
    path = Path(path)
    device = resolve_device(device)
    datapath = datapath or default_datapath(device)
    ok, why = available(datapath, device)
    if not ok:
        raise DatapathUnavailable(f"{datapath}: {why}")
    resident = resident_fraction(path) if path.exists() else 0.0  # before the header is read
    layout = Layout.read(path)
    dtype = _DTYPES[layout.dtype]
    nbytes = layout.blocks * layout.block_bytes
    dest = aligned_host(nbytes) if device.type == "cpu" else torch.empty(nbytes, dtype=torch.uint8, device=device)
    dest = dest.view(dtype).view(layout.blocks, *layout.dims)
    try:
        seconds, effective, details = _timed_transfer(path, dest, layout, False, datapath, threads, direct)
    except OSError as e:
        raise KVSpillError(path, f"restore failed: {e.strerror or e}") from None
    if verify:
        for i, (want, got) in enumerate(zip(layout.checksums, checksums(dest))):
            if want != got:
                raise KVSpillError(path, f"block {i} changed since it was spilled (CRC-32 {got:08x}, "
                                         f"written {want:08x})")
    return Transfer("restore", path, datapath, effective, str(device), layout.blocks, layout.block_bytes, seconds,
                    cache=cache_state(resident), details={"resident_before": resident, **details}, tensor=dest)


@dataclass(frozen=True)
class RoundTrip:
    spill: Transfer
    cold: Transfer
    warm: Transfer | None
    bit_exact: bool


def round_trip(blocks: torch.Tensor, path: str | os.PathLike, *, datapath: str | None = None, threads: int = 4,
               direct: bool = False) -> RoundTrip:
    """Spill, restore cold (pages evicted), restore again (warm where the page cache kept it); compare bytes."""
    out = spill(blocks, path, datapath=datapath, threads=threads, direct=direct)
    evict(out.path)
    cold = restore(out.path, device=blocks.device, datapath=out.datapath, threads=threads, direct=direct)
    exact = torch.equal(cold.tensor.view(torch.uint8), blocks.view(torch.uint8))
    cold.tensor = None
    warm = restore(out.path, device=blocks.device, datapath=out.datapath, threads=threads, direct=direct)
    exact = exact and torch.equal(warm.tensor.view(torch.uint8), blocks.view(torch.uint8))
    warm.tensor = None
    return RoundTrip(out, cold, warm, exact)


def measure(shape: BlockShape, count: int, folder: str | os.PathLike, *, device: str | torch.device | None = None,
            directs: tuple[bool, ...] = (False, True), repeats: int = 2, threads: int = 4) -> list[dict]:
    """Spill and restore `count` blocks by every KV path available on `device`, with and without O_DIRECT.

    One record per spill, cold restore and warm restore (`stage`), each bit-exact or an
    error; repeats interleave the variants. The file is removed after each round trip.
    """
    device = resolve_device(device)
    paths = [p for p in DATAPATHS if available(p, device)[0]]
    blocks = random_blocks(shape, count, device=device)
    records = []
    for repeat in range(repeats):
        for datapath in paths:
            for direct in (directs if datapath != "kvikio" else (False,)):  # cuFile decides its own I/O mode
                path = Path(folder) / f"gdslab-kv-{datapath}-{int(direct)}.bin"
                try:
                    trip = round_trip(blocks, path, datapath=datapath, threads=threads, direct=direct)
                finally:
                    path.unlink(missing_ok=True)
                if not trip.bit_exact:
                    raise KVSpillError(path, "restored blocks differ from those spilled")
                variant = datapath + (" O_DIRECT" if direct else "")
                for stage, transfer in (("spill", trip.spill), ("restore cold", trip.cold), ("restore warm", trip.warm)):
                    records.append({**transfer.record(), "variant": variant, "stage": stage, "direct": direct,
                                    "repeat": repeat})
    return records


def rates(records: list[dict]) -> dict[tuple[str, str], float]:
    """Median GB/s per (variant, stage)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in records:
        groups.setdefault((r["variant"], r["stage"]), []).append(r["gbps"])
    return {key: float(np.median(values)) for key, values in groups.items()}


def rates_table(records: list[dict]) -> str:
    """Median GB/s of each variant and stage, with what ran."""
    ran = {}
    for r in records:
        ran.setdefault((r["variant"], r["stage"]), r["effective"])
    n = max((r["repeat"] for r in records), default=0) + 1
    lines = [f"{'path':22} {'stage':13} {'GB/s':>6}  (median of {n}; what ran)"]
    for (variant, stage), gbps in rates(records).items():
        lines.append(f"{variant:22} {stage:13} {gbps:6.2f}  {ran[(variant, stage)]}")
    return "\n".join(lines)


__all__ = ["BlockShape", "DATAPATHS", "KVSpillError", "Layout", "RoundTrip", "Transfer", "available", "checksums",
           "default_datapath", "measure", "random_blocks", "rates", "rates_table", "restore", "round_trip", "spill"]
