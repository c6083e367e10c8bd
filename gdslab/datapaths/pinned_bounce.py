"""pinned-bounce: the tuned CPU path — a ring of pinned staging buffers, reads overlapping copies.

Reader threads take a free staging buffer of `io_size`, pread into it, and copy it to the
device with `non_blocking=True` on their own CUDA stream; the buffer is reused only after
its copy's event has completed, so reads of the next chunk overlap the copy of the last.

Pinning memory is slow, and freeing it (`cudaFreeHost`) synchronizes the device, so the
staging memory is pinned once per process and device and reused by every load after
(`release_staging()` gives it back). A load that needs more pins the larger ring before
its clock starts and says so (`staging_alloc_s`, `staging_reused`). The ring holds
`buffers_per_thread` × `threads` buffers: a knob, since pinned memory is finite.

A copy has landed when its CUDA event completed; its start and end are read from
timing-enabled events on the load's clock (see `LoadJob.start_clock`), not from when a
reader happened to notice. Without CUDA there is no page-locked memory: the same ring
stages into ordinary host buffers and memcpys into the destination (labelled so).
`direct=True` reads with O_DIRECT: each buffer takes the whole blocks around its chunk.
"""

from __future__ import annotations

import queue
import threading
import time

import torch

from .base import BLOCK, Chunk, Datapath, LoadJob, aligned_host, copy_bytes, round_up, run_tasks
from .direct_io import DirectFiles

BUFFERS_PER_THREAD = 2


class _Pool:
    """One staging allocation per device, reused across loads; a load holds it while it runs."""

    def __init__(self):
        self.lock = threading.Lock()
        self.memory: dict[str, torch.Tensor] = {}
        self.busy: set[str] = set()

    def take(self, device: torch.device, nbytes: int) -> tuple[torch.Tensor, bool, bool]:
        """(memory of at least `nbytes`, whether it was reused, whether it is pooled) for one load."""
        key = str(device)
        with self.lock:
            held = self.memory.get(key)
            if key not in self.busy and held is not None and held.numel() >= nbytes:
                self.busy.add(key)
                return held, True, True
            pooled = key not in self.busy
            if pooled:
                self.busy.add(key)
                self.memory.pop(key, None)
        try:
            fresh = _allocate(device, nbytes)
        except BaseException:
            if pooled:
                with self.lock:
                    self.busy.discard(key)
            raise
        if pooled:
            with self.lock:
                self.memory[key] = fresh
        return fresh, False, pooled  # a second load on a busy device gets memory of its own

    def give_back(self, device: torch.device) -> None:
        with self.lock:
            self.busy.discard(str(device))

    def release(self, device: torch.device | str | None = None) -> int:
        """Free idle staging memory (of one device, or all); returns the bytes freed."""
        with self.lock:
            keys = [k for k in self.memory if (device is None or k == str(device)) and k not in self.busy]
            freed = sum(self.memory.pop(k).numel() for k in keys)
        if freed and torch.cuda.is_available() and hasattr(torch._C, "_host_emptyCache"):
            torch._C._host_emptyCache()  # torch caches freed pinned blocks; give them back to the OS
        return freed


def _allocate(device: torch.device, nbytes: int) -> torch.Tensor:
    """Staging memory on 4 KiB boundaries (pinned memory is page-aligned already), so O_DIRECT can fill it."""
    if device.type == "cuda":
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    return aligned_host(nbytes)


POOL = _Pool()


def pinned_block_bytes(nbytes: int) -> int:
    """The page-locked bytes `torch.empty(nbytes, pin_memory=True)` really holds: PyTorch's caching host
    allocator rounds each request up to the next power of two (`PowerOf2Ceil`, CachingHostAllocator.h)."""
    return 1 << (nbytes - 1).bit_length() if nbytes > 0 else 0


def release_staging(device: torch.device | str | None = None) -> int:
    """Give the pooled staging memory back (of `device`, or every device); returns the bytes freed."""
    return POOL.release(device)


class StagingRing:
    """`count` staging buffers of `size` bytes cut from one pooled allocation; each carries its copy's events."""

    def __init__(self, job: LoadJob, count: int, size: int):
        self.job, self.cuda = job, job.device.type == "cuda"
        start = time.perf_counter()
        self.memory, self.reused, self.pooled = POOL.take(job.device, count * size)
        self.held = self.memory.numel()  # all of it is this load's while it runs, counted
        job.host_memory.take(self.held)
        self.alloc_seconds = time.perf_counter() - start
        self.count, self.size = count, size
        self.buffers = [self.memory[k * size:(k + 1) * size] for k in range(count)]
        self.free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for k in range(count):
            self.free.put(k)
        self.pending: dict[int, tuple] = {}  # buffer -> (start event, end event, chunk)
        self.lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self.count * self.size

    def acquire(self) -> int:
        """A buffer whose last copy has landed; the time spent waiting is logged as 'wait'."""
        start = self.job.log.now()
        while True:
            self.job.check_cancel()
            self.reap(block=False)
            try:
                k = self.free.get(timeout=0.05)
                break
            except queue.Empty:
                continue
        self.reap_one(k, block=True)
        self.job.log.add("wait", start, 0, "", self.job.device)
        return k

    def release(self, k: int, events=None, chunk: Chunk | None = None) -> None:
        if events is not None:
            with self.lock:
                self.pending[k] = (*events, chunk)
        self.free.put(k)

    def reap_one(self, k: int, block: bool) -> None:
        with self.lock:
            entry = self.pending.get(k)
            if entry is None or not (block or entry[1].query()):
                return
            del self.pending[k]
        began, ended, chunk = entry
        ended.synchronize()
        self.job.log.add("copy", self.job.gpu_seconds(began), chunk.nbytes, chunk.file, self.job.device,
                         landed=True, end=self.job.gpu_seconds(ended))

    def reap(self, block: bool) -> None:
        """Log every copy that has landed (all of them, waiting, when `block`)."""
        with self.lock:
            keys = list(self.pending)
        for k in keys:
            self.reap_one(k, block)

    def close(self) -> None:
        """Wait for copies in flight, then hand the staging memory back to the pool (or drop it)."""
        if self.cuda:
            torch.cuda.synchronize(self.job.device)
        self.pending.clear()
        self.buffers, self.memory = [], None
        self.job.host_memory.give(self.held)
        if self.pooled:
            POOL.give_back(self.job.device)


class PinnedBounce(Datapath):
    name = "pinned-bounce"
    description = "reader threads → ring of pinned staging buffers → async copies on CUDA streams, overlapped"
    options = {"buffers_per_thread": BUFFERS_PER_THREAD, "direct": False}

    def prepare(self, job: LoadJob) -> None:
        """Take (or pin) the staging ring before the clock starts: the run measures the copy, not the allocator."""
        self.check(job)
        per_thread = job.options["buffers_per_thread"]
        chunks = job.chunks()
        largest = max((c.nbytes for c in chunks), default=1)
        if job.options["direct"]:  # room for the whole blocks around a chunk, every buffer on a block boundary
            largest = round_up(largest) + 2 * BLOCK
        ring = StagingRing(job, max(1, min(per_thread * job.threads, len(chunks))), largest)
        job.staging = ring
        job.details.update(staging_bytes=ring.nbytes,
                           pinned_bytes=pinned_block_bytes(ring.memory.numel()) if ring.cuda else 0,
                           staging_alloc_s=ring.alloc_seconds, staging_reused=ring.reused,
                           buffers_per_thread=per_thread)

    def finish(self, job: LoadJob) -> None:
        if job.staging is not None:
            job.staging.close()
            job.staging = None

    def run(self, job: LoadJob) -> str:
        self.check(job)
        ring: StagingRing = job.staging
        local = threading.local()
        with DirectFiles(job.files, job.options["direct"], job.host_memory) as files:

            def bounce(chunk: Chunk) -> None:
                k, events = ring.acquire(), None
                try:
                    start = job.log.now()
                    at = files.read_superset(ring.buffers[k].numpy(), chunk.file_offset, chunk.nbytes, chunk.file)
                    staging = ring.buffers[k][at:at + chunk.nbytes]
                    job.log.add("read", start, chunk.nbytes, chunk.file, "host")
                    dest = job.chunk_view(chunk)
                    if ring.cuda:
                        if not hasattr(local, "stream"):
                            local.stream = torch.cuda.Stream(job.device)
                            # After whatever ran on the allocating stream (the device was synchronized
                            # before the clock; this keeps the order explicit).
                            local.stream.wait_stream(torch.cuda.current_stream(job.device))
                        began, ended = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        with torch.cuda.stream(local.stream):
                            began.record(local.stream)
                            dest.copy_(staging, non_blocking=True)
                            ended.record(local.stream)
                        events = (began, ended)
                    else:
                        issued = job.log.now()
                        copy_bytes(dest, staging)
                        job.log.add("copy", issued, chunk.nbytes, chunk.file, job.device, landed=True)
                finally:
                    ring.release(k, events, chunk)  # reusable once its copy (if any) completed

            run_tasks(job, job.chunks(), bounce, "gdslab-pinned")
            ring.reap(block=True)
        how = f"; {files.describe()}" if job.options["direct"] else ""
        if job.options["direct"]:
            job.details.update(files.record())
        if job.device.type == "cuda":
            return (f"pinned-bounce (pinned ring {job.options['buffers_per_thread']}x{job.threads} buffers, "
                    f"async H2D copies{how})")
        return f"pinned-bounce analogue (staging ring + memcpy; no page-locked memory without CUDA{how})"
