"""The two floors every loader is measured against, measured here and now.

- the **read floor**: a plain multi-threaded `os.preadv` of the same files into fresh
  buffers — what storage (or the page cache) gives with no loader at all;
- the **direct-read floor**: the same with O_DIRECT into reused aligned buffers — the
  storage's own limit with the page cache out of the way (what GDS, and `direct=True`, face);
- the **host→device ceilings**: `copy_` of a pinned and of a pageable host buffer to the
  GPU — what the link gives a bounce path at best.

A loader's number means little alone; its ratio to these, measured in the same run, is
what a benchmark reports.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .datapaths.base import empty_host
from .sizes import parse_size


@dataclass(frozen=True)
class FloorResult:
    what: str
    nbytes: int
    seconds: float

    @property
    def gbps(self) -> float:
        return self.nbytes / self.seconds / 1e9 if self.seconds > 0 else 0.0

    def record(self) -> dict:
        return {"datapath": self.what, "effective": self.what, "nbytes": self.nbytes,
                "seconds": self.seconds, "gbps": self.gbps}


def read_floor(files: list[str | Path], threads: int = 8, io_size: int | str = "16MiB") -> FloorResult:
    """Read whole files with `threads` threads of `os.preadv` into fresh numpy buffers."""
    io_size = parse_size(io_size)
    fds = [os.open(f, os.O_RDONLY) for f in files]
    try:
        start = time.perf_counter()
        # fresh buffers, allocated as gdslab allocates its destinations (numpy.empty would ask for huge
        # pages, and on most kernels the faulting thread then compacts memory: floors that swing)
        buffers = [empty_host(os.fstat(fd).st_size).numpy() for fd in fds]
        tasks = iter([(fd, buf, off) for fd, buf in zip(fds, buffers) for off in range(0, len(buf), io_size)])
        lock = threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    task = next(tasks, None)
                if task is None:
                    return
                fd, buf, off = task
                view = memoryview(buf)[off:off + io_size]
                done = 0
                while done < len(view):
                    n = os.preadv(fd, [view[done:]], off + done)
                    if n == 0:
                        raise OSError(f"unexpected end of file at byte {off + done}")
                    done += n

        workers = [threading.Thread(target=worker, name=f"gdslab-floor-{k}") for k in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        seconds = time.perf_counter() - start
        return FloorResult(f"read floor (preadv, {threads} threads)", sum(len(b) for b in buffers), seconds)
    finally:
        for fd in fds:
            os.close(fd)


def direct_read_floor(files: list[str | Path], threads: int = 8, io_size: int | str = "16MiB") -> FloorResult:
    """Read whole files with `threads` threads of O_DIRECT `os.preadv` into one reused aligned buffer each.

    Bytes go nowhere after the read: this is the drive's rate without the page cache, the
    physical floor a cold direct load is measured against. Raises OSError where the file
    system refuses O_DIRECT.
    """
    from .datapaths.base import aligned_host, round_up

    piece = round_up(parse_size(io_size))
    fds = [os.open(f, os.O_RDONLY | os.O_DIRECT) for f in files]
    try:
        sizes = [os.fstat(fd).st_size for fd in fds]
        tasks = iter([(fd, off) for fd, size in zip(fds, sizes) for off in range(0, size, piece)])
        lock = threading.Lock()
        errors: list[BaseException] = []

        def worker() -> None:
            buffer = memoryview(aligned_host(piece).numpy())
            try:
                while True:
                    with lock:
                        task = next(tasks, None)
                    if task is None:
                        return
                    fd, off = task
                    done = 0
                    while done < piece:
                        n = os.preadv(fd, [buffer[done:]], off + done)
                        if n == 0:
                            break
                        done += n
            except BaseException as e:  # noqa: BLE001 - re-raised by the caller
                errors.append(e)

        start = time.perf_counter()
        workers = [threading.Thread(target=worker, name=f"gdslab-direct-floor-{k}") for k in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        seconds = time.perf_counter() - start
        if errors:
            raise errors[0]
        return FloorResult(f"direct-read floor (O_DIRECT, {threads} threads)", sum(sizes), seconds)
    finally:
        for fd in fds:
            os.close(fd)


def h2d_ceiling(device: str | torch.device = "cuda:0", nbytes: int | str = "1GiB", pinned: bool = True,
                repeats: int = 3) -> FloorResult:
    """Best of `repeats` host→device copies of one `nbytes` buffer (pinned or pageable), after one untimed."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError("a host→device ceiling needs a CUDA device")
    nbytes = parse_size(nbytes)
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)
    host.fill_(1)
    dest = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dest.copy_(host, non_blocking=pinned)  # warm-up, untimed: the first copy pays for mapping and driver setup
    torch.cuda.synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        dest.copy_(host, non_blocking=pinned)
        torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    del host, dest
    kind = "pinned" if pinned else "pageable"
    return FloorResult(f"H2D copy ceiling ({kind})", nbytes, best)


__all__ = ["FloorResult", "read_floor", "direct_read_floor", "h2d_ceiling"]
