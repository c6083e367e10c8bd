"""What first-touch page faults cost a read into fresh host memory (the profile behind compare.md).

    .venv/bin/python benchmarks/page_faults.py --size 512MiB --repeats 5

Reads the same warm (page-cached) bytes with `os.preadv`, 16 MiB at a time on one thread,
into a fresh destination of three kinds, interleaved:
- `numpy.empty`: numpy advises the kernel to back large arrays with transparent huge
  pages (2 MiB), so the destination faults in 2 MiB at a time;
- `torch.empty`: plain torch host memory (gdslab's destinations before b2ad4b2): 4 KiB
  pages, one fault each;
- `gdslab.datapaths.base.empty_host(huge_pages=True)`: `torch.empty` + `madvise(MADV_HUGEPAGE)`
  before the first touch (gdslab asks for it only where the kernel's defrag setting cannot
  make the faulting thread compact memory: see `huge_pages_without_stalls`).
It prints GB/s and the minor page faults the read took (getrusage). On a machine whose
`/sys/kernel/mm/transparent_hugepage/enabled` is `never`, the advice does nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from gdslab.cache import warm
from gdslab.checkpoint import Checkpoint
from gdslab.datapaths.base import empty_host
from gdslab.sizes import format_size, parse_size
from gdslab.synthetic import cached_checkpoint

CHUNK = 16 << 20


def fresh(kind: str, nbytes: int):
    if kind == "numpy.empty":
        return np.empty(nbytes, dtype=np.uint8)
    if kind == "gdslab empty_host":
        return empty_host(nbytes, huge_pages=True).numpy()
    return torch.empty(nbytes, dtype=torch.uint8).numpy()


def read_into(kind: str, fd: int, nbytes: int) -> tuple[float, int]:
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    view = memoryview(fresh(kind, nbytes))
    for offset in range(0, nbytes, CHUNK):
        os.preadv(fd, [view[offset:offset + CHUNK]], offset)
    seconds = time.perf_counter() - start
    return nbytes / seconds / 1e9, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="512MiB", help="bytes read per run (from the first shard of a 4-shard checkpoint)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    nbytes = parse_size(args.size)
    shard = Checkpoint.open(cached_checkpoint(max(4 * nbytes, 64 << 20), 4)).files[0].path
    nbytes = min(nbytes, Path(shard).stat().st_size) // CHUNK * CHUNK
    warm([shard])
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    print(f"{format_size(nbytes)} from {shard.name}, warm; THP: {thp.read_text().strip() if thp.exists() else '?'}")
    kinds = ("numpy.empty", "torch.empty", "gdslab empty_host")
    results: dict[str, list[tuple[float, int]]] = {k: [] for k in kinds}
    fd = os.open(shard, os.O_RDONLY)
    try:
        for _ in range(args.repeats):
            for kind in kinds:
                results[kind].append(read_into(kind, fd, nbytes))
    finally:
        os.close(fd)
    print("| destination | median GB/s | min–max | minor faults per run |")
    print("|---|---|---|---|")
    for kind, runs in results.items():
        rates = [r for r, _ in runs]
        print(f"| {kind} | {statistics.median(rates):.2f} | {min(rates):.2f}–{max(rates):.2f} | "
              f"{int(statistics.median(f for _, f in runs))} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
