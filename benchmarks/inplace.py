"""In-place loading against fresh destinations: what the page faults of new memory cost a warm load.

    .venv/bin/python benchmarks/inplace.py --size 1GiB --repeats 5 --out docs/results/inplace.md

A warm (page-cached) checkpoint is loaded by host-direct, the same knobs each way, interleaved
in a rotated order within each repeat:
- fresh: `gdslab.load`, which allocates new destination tensors every time; every page of
  them is faulted in by the reads (huge pages where gdslab asks for them);
- in place: `gdslab.load_into` a dict of tensors allocated once and already touched (by an
  untimed load before the repeats): the reads land in memory that is mapped;
- fault limit: new host memory the size of the checkpoint (`empty_host`, as the loader
  allocates it) first touched by the same number of threads, writing zeros: the rate the
  kernel maps fresh pages, which caps any loader that returns new tensors.
Before each run the heap is trimmed (`malloc_trim`), so that memory freed by the previous
run is given back rather than silently reused: a new server process has no such memory.
Reported: the median GB/s of each and the minor page faults each took (getrusage, process-wide).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import gdslab
from gdslab.cache import resident_fraction_all, warm
from gdslab.checkpoint import Checkpoint
from gdslab.costs import trim_heap
from gdslab.datapaths.base import empty_host, huge_pages_without_stalls
from gdslab.sizes import format_size, parse_size
from gdslab.synthetic import cached_checkpoint


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def fault_limit(nbytes: int, threads: int) -> float:
    """Seconds for `threads` threads to first-touch `nbytes` of new host memory (zeros written)."""
    buffer = empty_host(nbytes)
    array = buffer.numpy()
    step = -(-nbytes // threads)

    def touch(k: int) -> None:
        array[k * step:(k + 1) * step] = 0  # numpy releases the GIL for the fill

    workers = [threading.Thread(target=touch, args=(k,)) for k in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - start
    del array, buffer
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--io-size", default="16MiB")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 (a median of fewer says little)")
    folder = cached_checkpoint(args.size, args.shards)
    ckpt = Checkpoint.open(folder)
    files = [f.path for f in ckpt.files]
    knobs = dict(datapath="host-direct", device="cpu", threads=args.threads, io_size=args.io_size)
    target = {e.name: torch.empty(e.shape, dtype=e.dtype) for e in ckpt.tensors}
    warm(files)
    gdslab.load_into(target, ckpt, **knobs, measure_costs=False)  # untimed: every page of the target mapped
    nbytes = ckpt.nbytes
    runs: dict[str, list[tuple[float, int]]] = {"fresh": [], "in place": [], "fault limit": []}

    def fresh() -> float:
        result = gdslab.load(ckpt, **knobs, measure_costs=False)
        seconds = result.seconds
        del result
        return seconds

    def in_place() -> float:
        return gdslab.load_into(target, ckpt, **knobs, measure_costs=False).seconds

    kinds = [("fresh", fresh), ("in place", in_place), ("fault limit", lambda: fault_limit(nbytes, args.threads))]
    for r in range(args.repeats):
        order = kinds[r % 3:] + kinds[:r % 3]
        for name, run in order:
            warm(files)
            resident = resident_fraction_all(files)
            if resident < 0.95:
                print(f"warning: only {resident:.0%} of the checkpoint is cached before {name}", file=sys.stderr)
            trim_heap()  # memory freed by the last run goes back to the OS: new memory is new, as in a new server
            before = _faults()
            seconds = run()
            runs[name].append((seconds, _faults() - before))
            print(f"repeat {r + 1} {name}: {nbytes / seconds / 1e9:.2f} GB/s, {runs[name][-1][1]} minor faults",
                  flush=True)
    rows = {name: (nbytes / statistics.median(s for s, _ in got) / 1e9, statistics.median(f for _, f in got),
                   [nbytes / s / 1e9 for s, _ in got]) for name, got in runs.items()}
    lines = [
        "# In-place loading vs fresh destinations (warm cache, host)",
        "",
        "Command: `.venv/bin/python benchmarks/inplace.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "`",
        "",
        f"Run {datetime.now(timezone.utc).isoformat(timespec='seconds')} on {platform.node()} "
        f"({os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}, torch {torch.__version__}; "
        f"load average {os.getloadavg()[0]:.1f} at the end, the machine shared); "
        f"checkpoint {folder.name}: {format_size(nbytes)} in {len(files)} files, {len(ckpt.tensors)} tensors; "
        f"host-direct, {args.threads} threads, io_size {args.io_size}; huge-page advice "
        f"{'given' if huge_pages_without_stalls() else 'not given (THP defrag setting could stall)'}; "
        f"{args.repeats} repeats, interleaved in rotated order, page cache warmed and heap trimmed before each run.",
        "",
        "| run | median GB/s | every repeat (GB/s) | median minor page faults |",
        "|---|---:|---|---:|",
    ]
    for name, (gbps, faults, every) in rows.items():
        lines.append(f"| {name} | {gbps:.2f} | {', '.join(f'{g:.2f}' for g in every)} | {faults:,.0f} |")
    inplace, fresh_gbps, limit = rows["in place"][0], rows["fresh"][0], rows["fault limit"][0]
    lines += [
        "",
        f"In place the warm load ran at {inplace:.2f} GB/s: {inplace / fresh_gbps:.2f}x the fresh-destination load "
        f"({fresh_gbps:.2f} GB/s) and {inplace / limit:.2f}x the rate at which this machine faults in new memory "
        f"({limit:.2f} GB/s), the limit of every loader that returns new tensors.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
