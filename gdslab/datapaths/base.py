"""What every data path shares: the reads to do, the I/O tasks they split into, the job.

A data path gets a `LoadJob` (which bytes go into which destination tensor, on which
device, with which knobs) and fills the destinations. Destinations are allocated lazily,
the first time a task touches them, so device memory in use follows the load as it runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

import numpy as np
import torch

from ..checkpoint import DTYPES, TensorEntry
from ..errors import DatapathUnavailable, LoadCancelled, LoadError
from ..hostmem import Ledger, load_ledger
from ..profile import EventLog


class TensorRead(NamedTuple):
    """One destination tensor and where its bytes lie: `runs` are (file offset, nbytes), in order.

    A named tuple rather than a dataclass: a checkpoint of 100,000 tensors makes 100,000 of
    them per load, and a tuple is built in C.
    """

    name: str
    file: Path
    dtype_name: str
    shape: tuple[int, ...]
    runs: tuple[tuple[int, int], ...]

    @classmethod
    def whole(cls, entry: TensorEntry) -> "TensorRead":
        return cls(entry.name, entry.file, entry.dtype_name, entry.shape, ((entry.offset, entry.nbytes),))

    @classmethod
    def all_of(cls, entries) -> list["TensorRead"]:
        """Every entry read whole (the common case, built in one pass)."""
        return [cls(name, file, dtype, shape, ((offset, nbytes),)) for name, file, offset, nbytes, dtype, shape in entries]

    @property
    def nbytes(self) -> int:
        runs = self.runs
        return runs[0][1] if len(runs) == 1 else sum(n for _, n in runs)

    @property
    def dtype(self) -> torch.dtype:
        dtype = DTYPES[self.dtype_name]
        if dtype is None:
            raise LoadError(self.file, f"tensor {self.name!r}: dtype {self.dtype_name} has no torch equivalent")
        return dtype


@dataclass(frozen=True)
class Chunk:
    """One I/O task: `nbytes` from `file_offset` into destination `read` at byte `dest_offset`.

    A chunk of a coalesced group (`group` >= 0) fills that group's shared allocation, of
    which `read` is the first member; `dest_offset` then counts from the group's start.
    """

    read: int
    file: Path
    file_offset: int
    dest_offset: int
    nbytes: int
    group: int = -1


@dataclass(frozen=True)
class Group:
    """Small tensors adjacent in one file, read by one I/O task into one allocation they share."""

    file: Path
    file_offset: int
    nbytes: int
    members: tuple[tuple[int, int], ...]  # (read index, byte offset in the group)


@dataclass(frozen=True)
class DatapathInfo:
    name: str
    available: bool
    reason: str
    description: str


@dataclass
class LoadJob:
    """Everything a data path needs for one load; the destinations it fills.

    `options` holds the path's own knobs (see `Datapath.options`); `details` is what the
    path reports besides `effective` (byte split, staging...), merged into the record.
    With `coalesce_below` > 0, single-run tensors smaller than that which lie back to
    back in a file share one allocation and one read of at most `io_size` bytes: the
    per-tensor cost of many small tensors is paid once per group.
    """

    reads: list[TensorRead]
    device: torch.device
    threads: int
    io_size: int
    log: EventLog
    cancel: threading.Event
    options: dict = field(default_factory=dict)
    coalesce_below: int = 0
    known_files: list[Path] | None = None  # the reads' files, when the caller worked them out already
    provided: list[torch.Tensor | None] | None = None  # per read, a tensor the caller made to fill in place
    destinations: list[torch.Tensor | None] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    staging: object = None  # what `Datapath.prepare` set up before the clock started
    cuda_origin: object = None  # a CUDA event recorded when the clock started: GPU timestamps → load time
    stopping: threading.Event = field(default_factory=threading.Event)  # set when a task failed
    host_memory: Ledger = field(default_factory=load_ledger)  # host staging this load holds, counted
    _alloc_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        self._files: list[Path] | None = self.known_files
        self.destinations = [None] * len(self.reads) if self.provided is None else self._check_provided()
        self.groups: list[Group] = self._plan_groups() if self.coalesce_below > 0 else []
        self.member_of: dict[int, tuple[int, int]] = {
            i: (g, at) for g, group in enumerate(self.groups) for i, at in group.members}
        self._group_buffers: list[torch.Tensor | None] = [None] * len(self.groups)

    def _check_provided(self) -> list[torch.Tensor | None]:
        """The caller's destinations (`gdslab.load_into`), each checked to take its read's bytes as they are."""
        if len(self.provided) != len(self.reads):
            raise ValueError(f"{len(self.provided)} destinations for {len(self.reads)} reads")
        for read, tensor in zip(self.reads, self.provided):
            if tensor is not None and (tensor.device != self.device or tensor.dtype != read.dtype or
                                       tuple(tensor.shape) != tuple(read.shape) or not tensor.is_contiguous()):
                raise ValueError(f"destination for {read.name!r} is {tensor.dtype} {list(tensor.shape)} on "
                                 f"{tensor.device}{'' if tensor.is_contiguous() else ', not contiguous'}; the read "
                                 f"needs {read.dtype} {list(read.shape)} on {self.device}, contiguous")
        return list(self.provided)

    def _plan_groups(self) -> list[Group]:
        """Runs of back-to-back small tensors, each group at most `io_size` bytes, in one pass.

        Reads are grouped as they come (a checkpoint's, and a plan's, come in file and offset
        order): two reads join when the second starts where the first ends in the same file.
        """
        limit, io_size = self.coalesce_below, self.io_size
        itemsizes = {name: dtype.itemsize for name, dtype in DTYPES.items() if dtype is not None}
        groups: list[Group] = []
        current: list[tuple[int, int]] = []
        file, start, end = None, -1, -1

        def close() -> None:
            if len(current) > 1:
                groups.append(Group(file, start, end - start, tuple((i, offset - start) for i, offset in current)))
            current.clear()

        provided = self.provided
        for i, (_, path, dtype_name, _, runs) in enumerate(self.reads):
            itemsize = itemsizes.get(dtype_name)
            if len(runs) != 1 or not 0 < runs[0][1] < limit or itemsize is None or (
                    provided is not None and provided[i] is not None):  # a caller's tensor is filled where it is
                if current:
                    close()
                continue
            offset, nbytes = runs[0]
            if not current or offset != end or path != file or offset + nbytes - start > io_size \
                    or (offset - start) % itemsize:
                close()
                file, start = path, offset
            current.append((i, offset))
            end = offset + nbytes
        close()
        return groups

    @property
    def files(self) -> list[Path]:
        """The files the reads touch, in first-seen order (worked out once)."""
        if self._files is None:
            self._files = list(dict.fromkeys(r.file for r in self.reads))
        return self._files

    def chunks(self) -> list[Chunk]:
        """Runs split into tasks of at most io_size bytes (a group is one task), in file then offset order."""
        out = [Chunk(g.members[0][0], g.file, g.file_offset, 0, g.nbytes, k) for k, g in enumerate(self.groups)]
        for i, read in enumerate(self.reads):
            if i in self.member_of:
                continue
            dest = 0
            for offset, nbytes in read.runs:
                for start in range(0, nbytes, self.io_size):
                    n = min(self.io_size, nbytes - start)
                    out.append(Chunk(i, read.file, offset + start, dest + start, n))
                dest += nbytes
        out.sort(key=lambda c: (str(c.file), c.file_offset))
        return out

    def _allocate(self, shape, dtype: torch.dtype, nbytes: int, file: Path, what: str, phase: int = 0) -> torch.Tensor:
        """A destination; for O_DIRECT on the host, placed so its address agrees with its file offset mod 4 KiB."""
        start = self.log.now()
        try:
            if self.device.type != "cpu":
                tensor = torch.empty(shape, dtype=dtype, device=self.device)
            elif self.options.get("direct") and phase % dtype.itemsize == 0:
                tensor = aligned_host(nbytes, phase).view(dtype).view(shape)
            else:
                tensor = empty_host(shape, dtype)
        except (torch.OutOfMemoryError, RuntimeError) as e:
            raise LoadError(file, f"cannot allocate {what} ({nbytes} bytes) on {self.device}: "
                                  f"{str(e).splitlines()[0]}") from None
        self.log.add("alloc", start, nbytes, file, self.device)
        return tensor

    def _group_buffer(self, g: int) -> torch.Tensor:
        """The shared allocation of group `g`, its members' tensors made with it (caller holds the lock)."""
        buffer = self._group_buffers[g]
        if buffer is None:
            group = self.groups[g]
            padded = -(-group.nbytes // 8) * 8  # whole 8-byte words: a typed view of the buffer for every dtype
            buffer = self._allocate((padded,), torch.uint8, padded, group.file,
                                    f"{len(group.members)} coalesced tensors", group.file_offset)
            reads, destinations, members = self.reads, self.destinations, group.members
            k = 0
            while k < len(members):  # members of one dtype, back to back: one split makes all their views
                dtype_name = reads[members[k][0]].dtype_name
                end = k
                while end < len(members) and reads[members[end][0]].dtype_name == dtype_name:
                    end += 1
                run = members[k:end]
                dtype = reads[run[0][0]].dtype
                first = run[0][1]
                last = members[end][1] if end < len(members) else group.nbytes  # members lie back to back
                bounds = [at for _, at in run] + [last]
                sizes = [(b - a) // dtype.itemsize for a, b in zip(bounds, bounds[1:])]
                for (i, _), piece in zip(run, buffer[first:last].view(dtype).split_with_sizes(sizes)):
                    shape = reads[i].shape
                    destinations[i] = piece if len(shape) == 1 else piece.view(shape)
                k = end
            self._group_buffers[g] = buffer
        return buffer

    def destination(self, i: int) -> torch.Tensor:
        """The i-th destination tensor, allocated on first use (thread-safe)."""
        tensor = self.destinations[i]
        if tensor is None:
            with self._alloc_lock:
                tensor = self.destinations[i]
                if tensor is None:
                    if i in self.member_of:
                        self._group_buffer(self.member_of[i][0])
                        tensor = self.destinations[i]
                    else:
                        read = self.reads[i]
                        tensor = self._allocate(read.shape, read.dtype, read.nbytes, read.file, f"tensor {read.name!r}",
                                                read.runs[0][0] if read.runs else 0)
                        self.destinations[i] = tensor
        return tensor

    def allocate_all(self) -> None:
        """Allocate every destination now, before any read starts.

        For host destinations this is faster than allocating on first use: each allocation
        maps memory under the process's memory-map lock, which stalls the page faults of
        every reader thread meanwhile.
        """
        for i in range(len(self.reads)):
            self.destination(i)

    def destination_bytes(self, i: int) -> torch.Tensor:
        """A flat uint8 view of the i-th destination (where the raw bytes go)."""
        tensor = self.destination(i)
        return tensor.reshape(-1).view(torch.uint8) if tensor.dim() else tensor.reshape(1).view(torch.uint8)

    def chunk_view(self, chunk: Chunk) -> torch.Tensor:
        """The flat uint8 destination bytes that `chunk` fills."""
        if chunk.group >= 0:
            self.destination(chunk.read)  # the group's buffer and its members' tensors exist from here on
            whole = self._group_buffers[chunk.group]
        else:
            whole = self.destination_bytes(chunk.read)
        return whole[chunk.dest_offset:chunk.dest_offset + chunk.nbytes]

    def check_cancel(self) -> None:
        """Raise in a task when the user cancelled or another task already failed."""
        if self.cancel.is_set() or self.stopping.is_set():
            raise LoadCancelled(None, "load cancelled" if self.cancel.is_set() else "stopped: another task failed")

    def start_clock(self) -> None:
        """Start the load's clock; on a GPU also record the event that GPU timestamps count from."""
        if self.device.type == "cuda":
            self.cuda_origin = torch.cuda.Event(enable_timing=True)
            self.cuda_origin.record(torch.cuda.current_stream(self.device))
            self.cuda_origin.synchronize()  # the device is idle: the event's time is now
        self.log.origin = time.perf_counter()

    def gpu_seconds(self, event) -> float:
        """A completed CUDA event's time on the load's clock (seconds since the clock started)."""
        return self.cuda_origin.elapsed_time(event) / 1e3

    def result(self) -> dict[str, torch.Tensor]:
        """Name -> tensor; destinations never touched (zero bytes) are allocated here."""
        destinations = self.destinations
        for i, tensor in enumerate(destinations):
            if tensor is None:
                self.destination(i)
        return dict(zip([read.name for read in self.reads], destinations))


class Datapath:
    """A way to move bytes from files into destination tensors. Subclasses set the names.

    `options` are the path's own knobs with their defaults (`gdslab.load(..., name=value)`);
    `knobs` are all the knobs it really uses, which sweeps vary (and no others).
    `prepare` runs before the clock starts (staging memory to pin, say), `finish` after it
    stopped, whatever happened.
    """

    name = ""
    description = ""
    options: dict[str, object] = {}
    coalesce_below = 0  # single-run tensors smaller than this, back to back in a file, share one read

    @property
    def knobs(self) -> tuple[str, ...]:
        return ("threads", "io_size", *self.options)

    def resolve_options(self, given: dict) -> dict:
        """The path's options: defaults, overridden by `given`; an unknown name is an error naming the known."""
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            known = ", ".join(self.options) or "none"
            raise ValueError(f"{self.name} has no option {', '.join(map(repr, unknown))} (its options: {known})")
        options = {**self.options, **given}
        for name, value in options.items():
            default = self.options[name]
            if isinstance(default, bool) and not isinstance(value, bool):
                raise ValueError(f"{self.name} option {name} must be True or False, got {value!r}")
            if isinstance(default, int) and not isinstance(default, bool) and (
                    isinstance(value, bool) or not isinstance(value, int) or value < (0 if default == 0 else 1)):
                raise ValueError(f"{self.name} option {name} must be a positive integer, got {value!r}")
        return options

    def prepare(self, job: LoadJob) -> None:
        """Set up, before the clock starts, what the timed run needs (nothing by default)."""

    def finish(self, job: LoadJob) -> None:
        """Release, after the clock stopped, what `prepare` set up for this load only (nothing by default)."""

    def availability(self, device: torch.device) -> tuple[bool, str]:
        return True, ""

    def info(self, device: torch.device) -> DatapathInfo:
        ok, reason = self.availability(device)
        return DatapathInfo(self.name, ok, reason, self.description)

    def check(self, job: LoadJob) -> None:
        ok, reason = self.availability(job.device)
        if not ok:
            raise DatapathUnavailable(f"{self.name} cannot run on {job.device}: {reason}")

    def run(self, job: LoadJob) -> str:
        """Fill job's destinations; return what really ran (the `effective` path)."""
        raise NotImplementedError


# --- helpers the paths share --------------------------------------------------------------

_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14


@functools.lru_cache(maxsize=1)
def _madvise():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc.madvise


@functools.lru_cache(maxsize=1)
def huge_pages_without_stalls() -> bool:
    """Whether asking for transparent huge pages cannot stall the asking thread.

    With `/sys/kernel/mm/transparent_hugepage/defrag` at `madvise`, `always` or
    `defer+madvise`, a thread that advised huge pages compacts memory itself when none is
    free; once the page cache fills memory that costs seconds of CPU per GiB (measured
    here: a warm 4 GiB host-direct load fell from 2.5–3.6 to 1.0–1.75 GB/s, with 8 s of
    CPU instead of 3). Only `defer` and `never` leave compaction to the kernel's threads.
    """
    try:
        with open("/sys/kernel/mm/transparent_hugepage/defrag") as f:
            mode = f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return False
    return mode in ("defer", "never")


def empty_host(shape, dtype: torch.dtype = torch.uint8, huge_pages: bool | None = None) -> torch.Tensor:
    """`torch.empty` on the host, backed by transparent huge pages where that cannot stall.

    Filling fresh memory costs a page fault per 4 KiB page; with 2 MiB pages there are
    512 times fewer (`benchmarks/page_faults.py` counts them). But asking for them makes the
    faulting thread compact memory itself on most kernels' settings, so by default the
    advice is given only where it cannot stall (`huge_pages_without_stalls`); True or
    False decide. Advice only: without THP nothing changes.
    """
    tensor = torch.empty(shape, dtype=dtype)
    nbytes = tensor.numel() * tensor.element_size()
    if huge_pages is None:
        huge_pages = huge_pages_without_stalls()
    madvise = _madvise() if huge_pages and nbytes >= 2 * _HUGE_PAGE else None
    if madvise is not None:
        start = (tensor.data_ptr() + _HUGE_PAGE - 1) & ~(_HUGE_PAGE - 1)
        end = (tensor.data_ptr() + nbytes) & ~(_HUGE_PAGE - 1)
        if end > start:
            madvise(start, end - start, _MADV_HUGEPAGE)
    return tensor



@functools.lru_cache(maxsize=4096)
def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for dim in reversed(shape):
        strides.append(step)
        step *= max(dim, 1)
    return tuple(reversed(strides))


BLOCK = 4096  # O_DIRECT's alignment: file offsets, lengths and buffer addresses in whole blocks


def round_down(value: int) -> int:
    return value // BLOCK * BLOCK


def round_up(value: int) -> int:
    return -(-value // BLOCK) * BLOCK


def aligned_host(nbytes: int, phase: int = 0) -> torch.Tensor:
    """A host uint8 tensor of `nbytes` whose address is `phase` modulo 4 KiB (a file offset's, say),
    so that O_DIRECT can read the file's aligned blocks straight into it."""
    raw = empty_host(nbytes + BLOCK)
    start = (phase - raw.data_ptr()) % BLOCK
    return raw[start:start + nbytes]


@contextlib.contextmanager
def host_staging(ledger: Ledger, nbytes: int, phase: int = 0) -> Iterator[torch.Tensor]:
    """`aligned_host(nbytes, phase)`, counted in `ledger` (all it allocates) until the block ends.

    The caller drops every reference to the buffer before the block ends (closures too), so
    that what the ledger stops counting is really freed.
    """
    with ledger.holding(nbytes + BLOCK):
        yield aligned_host(nbytes, phase)


class OpenFiles:
    """Read-only descriptors for a load's files, closed on exit whatever happens."""

    def __init__(self, files: Iterable[Path]):
        self.fds: dict[Path, int] = {}
        try:
            for path in files:
                try:
                    self.fds[path] = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                except OSError as e:
                    raise LoadError(path, f"cannot open: {e.strerror or e}") from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def __enter__(self) -> "OpenFiles":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pread_into(fd: int, buffer, file_offset: int, path: Path) -> None:
    """Fill `buffer` (a writable memoryview) from `file_offset`, looping on short reads."""
    view, done, total = memoryview(buffer).cast("B"), 0, len(buffer)
    while done < total:
        try:
            n = os.preadv(fd, [view[done:]], file_offset + done)
        except OSError as e:
            raise LoadError(path, f"read failed at byte {file_offset + done}: {e.strerror or e}") from None
        if n == 0:
            raise LoadError(
                path, f"truncated: needed {total} bytes at byte {file_offset}, the file ended after {done}"
            )
        done += n


def copy_bytes(dest: torch.Tensor, source: torch.Tensor, non_blocking: bool = False) -> None:
    """Copy uint8 `source` into `dest`: to a device with `copy_`, host to host with one memcpy.

    Host copies go through numpy on the calling thread: torch's `copy_` fans copies out to
    its OpenMP pool, and on a busy machine each fan-out waits for a scheduler slice, which
    made many small copies far slower than the bytes justify.
    """
    if dest.device.type == "cpu":
        np.copyto(dest.numpy(), source.numpy())
    else:
        dest.copy_(source, non_blocking=non_blocking)


def as_buffer(tensor: torch.Tensor):
    """A writable buffer over a CPU uint8 tensor, for os.preadv."""
    return tensor.numpy()


def run_tasks(job: LoadJob, tasks: list, work: Callable, prefix: str) -> None:
    """Run `work(task)` on `job.threads` named threads; the first failure stops the rest.

    Threads pull tasks in order (so reads stay roughly sequential per file). The first
    exception or KeyboardInterrupt, in a worker or here, sets `job.stopping`, every worker
    finishes its current task and exits, and that first error is re-raised: no thread
    outlives the call. We wait on per-worker events rather than `Thread.join`, which before
    Python 3.13 can return early when interrupted, leaving a reader running on freed buffers.
    """
    if not tasks:
        return
    errors: list[BaseException] = []
    lock = threading.Lock()
    cursor = iter(tasks)
    count = max(1, min(job.threads, len(tasks)))
    finished = [threading.Event() for _ in range(count)]

    def worker(k: int) -> None:
        try:
            while not job.stopping.is_set():
                job.check_cancel()
                with lock:
                    task = next(cursor, None)
                if task is None:
                    return
                work(task)
        except BaseException as e:  # noqa: BLE001 - handed to the caller below
            with lock:
                if not errors:
                    errors.append(e)
            job.stopping.set()
        finally:
            finished[k].set()

    workers = [threading.Thread(target=worker, args=(k,), name=f"{prefix}-{k}", daemon=True) for k in range(count)]
    started: list[threading.Thread] = []
    try:
        for thread in workers:
            thread.start()
            started.append(thread)
        for event in finished:
            event.wait()
    except BaseException:  # e.g. KeyboardInterrupt while waiting: stop the workers, then re-raise
        job.stopping.set()
        for k in range(len(started)):
            finished[k].wait()
        raise
    for thread in started:
        thread.join()
    if errors:
        raise errors[0]


def require_host(device: torch.device) -> tuple[bool, str]:
    return (True, "") if device.type == "cpu" else (False, "host-only path (device must be 'cpu')")
