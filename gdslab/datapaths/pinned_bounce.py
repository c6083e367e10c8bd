"""pinned-bounce: the tuned CPU path — a ring of pinned staging buffers, reads overlapping copies.

Reader threads take a free staging buffer of `io_size`, pread into it, and copy it to the
device with `non_blocking=True` on their own CUDA stream; the buffer is reused only after
its copy's event has completed, so reads of the next chunk overlap the copy of the last.
Without CUDA there is no page-locked memory: the same ring stages into ordinary host
buffers and memcpys into the destination (labelled so).
"""

from __future__ import annotations

import queue
import threading

import torch

from .base import Chunk, Datapath, LoadJob, OpenFiles, copy_bytes, empty_host, pread_into, run_tasks

BUFFERS_PER_THREAD = 2


class StagingRing:
    """`count` staging buffers of `size` bytes cut from one allocation; each carries its copy's event."""

    def __init__(self, job: LoadJob, count: int, size: int):
        self.job, self.cuda = job, job.device.type == "cuda"
        self.memory = (torch.empty(count * size, dtype=torch.uint8, pin_memory=True) if self.cuda
                       else empty_host(count * size))
        self.buffers = [self.memory[k * size:(k + 1) * size] for k in range(count)]
        self.free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for k in range(count):
            self.free.put(k)
        self.pending: dict[int, tuple] = {}  # buffer -> (cuda event, issue time, chunk)
        self.lock = threading.Lock()

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

    def release(self, k: int, event=None, issued: float = 0.0, chunk: Chunk | None = None) -> None:
        if event is not None:
            with self.lock:
                self.pending[k] = (event, issued, chunk)
        self.free.put(k)

    def reap_one(self, k: int, block: bool) -> None:
        with self.lock:
            entry = self.pending.get(k)
            if entry is None or not (block or entry[0].query()):
                return
            del self.pending[k]
        event, issued, chunk = entry
        event.synchronize()
        self.job.log.add("copy", issued, chunk.nbytes, chunk.file, self.job.device, landed=True)

    def close(self) -> None:
        """Wait for copies in flight, then drop the staging memory (pinned memory back to the OS)."""
        if self.cuda:
            torch.cuda.synchronize(self.job.device)
        self.pending.clear()
        self.buffers, self.memory = [], None
        if self.cuda and hasattr(torch._C, "_host_emptyCache"):
            torch._C._host_emptyCache()  # torch caches freed pinned blocks; give them back

    def reap(self, block: bool) -> None:
        """Log every copy that has landed (all of them, waiting, when `block`)."""
        with self.lock:
            keys = list(self.pending)
        for k in keys:
            self.reap_one(k, block)


class PinnedBounce(Datapath):
    name = "pinned-bounce"
    description = "reader threads → ring of pinned staging buffers → async copies on CUDA streams, overlapped"

    def run(self, job: LoadJob) -> str:
        self.check(job)
        chunks = job.chunks()
        largest = max((c.nbytes for c in chunks), default=1)
        ring = StagingRing(job, max(1, min(BUFFERS_PER_THREAD * job.threads, len(chunks))), largest)
        local = threading.local()
        try:
            with OpenFiles(job.files) as files:

                def bounce(chunk: Chunk) -> None:
                    k, event, issued = ring.acquire(), None, 0.0
                    try:
                        staging = ring.buffers[k][:chunk.nbytes]
                        start = job.log.now()
                        pread_into(files.fds[chunk.file], staging.numpy(), chunk.file_offset, chunk.file)
                        job.log.add("read", start, chunk.nbytes, chunk.file, "host")
                        dest = job.destination_bytes(chunk.read)[chunk.dest_offset:chunk.dest_offset + chunk.nbytes]
                        issued = job.log.now()
                        if ring.cuda:
                            if not hasattr(local, "stream"):
                                local.stream = torch.cuda.Stream(job.device)
                            with torch.cuda.stream(local.stream):
                                dest.copy_(staging, non_blocking=True)
                                event = torch.cuda.Event()
                                event.record(local.stream)
                        else:
                            copy_bytes(dest, staging)
                    finally:
                        ring.release(k, event, issued, chunk)  # reusable once `event` (if any) completes
                    if event is None:
                        job.log.add("copy", issued, chunk.nbytes, chunk.file, job.device, landed=True)

                run_tasks(job, chunks, bounce, "gdslab-pinned")
                ring.reap(block=True)
        finally:
            ring.close()
        if job.device.type == "cuda":
            return f"pinned-bounce (pinned ring {BUFFERS_PER_THREAD}x{job.threads} buffers, async H2D copies)"
        return "pinned-bounce analogue (staging ring + memcpy; no page-locked memory without CUDA)"
