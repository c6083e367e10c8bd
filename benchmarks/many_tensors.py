"""Checkpoints of many small tensors (mixture-of-experts scale): per-tensor cost, not bandwidth.

    .venv/bin/python benchmarks/many_tensors.py --tensors 10000 100000 --repeats 5 --out docs/results/many-tensors.md

One safetensors file of N three-element float32 tensors (DeepSeek-V3/R1 hold about 90,000
tensors), warm in the page cache. Each repeat times, in a rotated order: the safetensors
library's `load_file`, `gdslab.Checkpoint.open` (the strict parse) and `gdslab.load`
(host-direct). Reported: medians and the ratios to `load_file` in the same run, the I/O
tasks gdslab issued (coalesced small tensors share one read) and, for the gds path, how many
cuFile reads its plan would issue.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import gdslab
from gdslab import datapaths
from gdslab.cache import warm
from gdslab.datapaths.base import LoadJob, TensorRead
from gdslab.profile import EventLog
from gdslab.sizes import parse_size

TARGETS = {"gdslab.load": 0.5, "Checkpoint.open": 0.3}


def write(folder: Path, count: int) -> Path:
    path = folder / f"tiny-{count}.safetensors"
    if not path.exists():
        g = torch.Generator().manual_seed(count)
        save_file({f"model.layers.{k // 256}.mlp.experts.{k % 256}.w": torch.randn(3, generator=g)
                   for k in range(count)}, str(path))
    return path


def gds_reads(path: Path, io_size: int) -> int:
    """The cuFile reads a gds load of `path` would issue: its plan's I/O tasks (small tensors coalesced)."""
    ckpt = gdslab.Checkpoint.open(path)
    job = LoadJob([TensorRead.whole(e) for e in ckpt.tensors], torch.device("cpu"), 1, parse_size(io_size), EventLog(),
                  threading.Event(), coalesce_below=datapaths.get("gds").coalesce_below)
    return len(job.chunks())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tensors", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--io-size", default="16MiB")
    parser.add_argument("--dir", default=None, help="where the files are written (default: a temporary folder)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    folder = Path(args.dir or tempfile.mkdtemp(prefix="gdslab-many-"))
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Many small tensors ({datetime.now(timezone.utc):%Y-%m-%d})", "",
        f"Command: `.venv/bin/python benchmarks/many_tensors.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "", f"Machine: {platform.node()}, {gdslab.probe(folder).cpu_count} CPUs; one file of N float32[3] tensors, "
            f"warm; medians of {args.repeats} interleaved repeats; ratios to `safetensors.torch.load_file` in the "
            "same run (below 1: faster).", "",
        "| tensors | what | median s | µs per tensor | × load_file | target | I/O tasks |",
        "|---|---|---|---|---|---|---|",
    ]
    for count in args.tensors:
        path = write(folder, count)
        warm([path])
        tasks = {"load_file": lambda: load_file(str(path)),
                 "Checkpoint.open": lambda: gdslab.Checkpoint.open(path),
                 "gdslab.load": lambda: gdslab.load(path, "host-direct", "cpu", io_size=args.io_size)}
        times: dict[str, list[float]] = {name: [] for name in tasks}
        events = 0
        for repeat in range(args.repeats):
            order = list(tasks)[repeat % 3:] + list(tasks)[:repeat % 3]
            for name in order:
                start = time.perf_counter()
                result = tasks[name]()
                times[name].append(time.perf_counter() - start)
                if name == "gdslab.load":
                    events = sum(e.stage == "read" for e in result.events)
                del result
            print(f"{count} tensors, repeat {repeat + 1}: " + ", ".join(f"{n} {times[n][-1]:.3f} s" for n in order),
                  flush=True)
        base = statistics.median(times["load_file"])
        for name in tasks:
            median = statistics.median(times[name])
            target = TARGETS.get(name)
            verdict = "" if target is None else (f"≤ {target}×: {'met' if median / base <= target else 'missed'}")
            io = {"gdslab.load": f"{events} reads (host-direct); gds plan: {gds_reads(path, args.io_size)} cuFile reads"
                  }.get(name, "")
            lines.append(f"| {count} | {name} | {median:.3f} | {median / count * 1e6:.1f} | {median / base:.2f}× | "
                         f"{verdict} | {io} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
