"""Every data path against the floors, cold and warm, interleaved repeats, medians and ratios.

    .venv/bin/python benchmarks/floor.py --size 4GiB --shards 4 --repeats 5 --out docs/results/cpu.md
    python3 benchmarks/floor.py --device cuda:0 --size 2GiB --repeats 2 --out gpu.md --json gpu.json

The read floor is a plain multi-threaded os.preadv of the same files into fresh buffers
(gdslab.floors.read_floor); on a GPU the pinned and pageable host→device copy ceilings
are measured in the same run too, and every path's ratio to the pinned ceiling is shown,
with what really ran (for gds: the bytes each KvikIO backend carried).
Every method first runs `--warmup` times untimed (one-time costs of a process: CUDA context,
KvikIO's pool and cuFile's driver, pinned staging, allocator caches). Each repeat then runs
every method once per cache state, in a rotated order, so drift on a
shared machine hits all of them alike. Cold runs evict the files first and check that
under 5% stayed resident; warm runs read them first.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from datetime import datetime, timezone

import gdslab
from gdslab import cache, datapaths
from gdslab.floors import h2d_ceiling, read_floor
from gdslab.sweep import prepare_cache
from gdslab.synthetic import cached_checkpoint

FLOOR = "read floor"
PINNED, PAGEABLE = "H2D ceiling (pinned)", "H2D ceiling (pageable)"
HOST_PATHS = ("host-direct", "pinned-bounce", "pageable-bounce", "safetensors")
GPU_PATHS = ("gds", "pinned-bounce", "pageable-bounce", "safetensors")


def run_once(method: str, ckpt, files, threads: int, io_size: str, device: str) -> dict:
    """The record of one run of `method` (a floor's, or the load's own)."""
    if method == FLOOR:
        return read_floor(files, threads, io_size).record()
    if method in (PINNED, PAGEABLE):
        return h2d_ceiling(device, min(ckpt.nbytes, 1 << 30), pinned=method == PINNED).record()
    result = gdslab.load(ckpt, datapath=method, device=device, threads=threads, io_size=io_size)
    record = result.record()
    del result
    return record


def prepare(state: str, files) -> float:
    """The sweep's cold/warm protocol; a cold run that cannot be made stops the benchmark."""
    ok, resident, why = prepare_cache(files, state)
    if not ok:
        sys.exit(f"cannot make a {state} run here: {why}")
    return resident


def _device_name(device: str) -> str:
    import torch

    return f"({torch.cuda.get_device_name(device)})" if device.startswith("cuda") else "(host memory)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="2GiB")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--io-size", default="16MiB")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--paths", nargs="*", default=None, help="default: every gdslab path available on the device")
    parser.add_argument("--out", help="write a markdown report here")
    parser.add_argument("--json", help="write every run's record here (a JSON list)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed runs of every method first (CUDA context, KvikIO's pool and cuFile's driver, "
                             "pinned staging, allocator caches), not recorded (default 1)")
    args = parser.parse_args(argv)

    folder = cached_checkpoint(args.size, args.shards)
    ckpt = gdslab.Checkpoint.open(folder)
    files = [f.path for f in ckpt.files]
    ok, reason = cache.can_evict(folder)
    states = ["cold", "warm"] if ok else ["warm"]
    if not ok:
        print(f"cold runs skipped: {reason}")
    cuda = args.device.startswith("cuda")
    wanted = GPU_PATHS if cuda else HOST_PATHS
    paths = args.paths or [i.name for i in datapaths.available(args.device) if i.available and i.name in wanted]
    methods = [FLOOR, *((PINNED, PAGEABLE) if cuda else ()), *paths]
    results: dict[tuple[str, str], list[float]] = {(m, s): [] for m in methods for s in states}
    ran: dict[str, str] = {}
    records = []
    for _ in range(args.warmup):  # what a first run pays once per process is not the path's speed
        for method in methods:
            prepare(states[-1], files)
            run_once(method, ckpt, files, args.threads, args.io_size, args.device)
            print(f"warm-up    {method:16} (not timed)", flush=True)
    for repeat in range(args.repeats):
        order = methods[repeat % len(methods):] + methods[:repeat % len(methods)]
        for state in states:
            for method in order:
                resident = prepare(state, files)
                record = run_once(method, ckpt, files, args.threads, args.io_size, args.device)
                records.append({**record, "method": method, "cache_asked": state, "resident_checked": resident,
                                "repeat": repeat})
                ran[method] = "" if method in (FLOOR, PINNED, PAGEABLE) else record["effective"]
                gbps = record["gbps"]
                results[(method, state)].append(gbps)
                print(f"repeat {repeat + 1} {state:4} {method:16} {gbps:6.2f} GB/s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1, default=str)

    lines = [
        f"# {'Every path against the floors' if cuda else 'Host paths against the read floor'} "
        f"({datetime.now(timezone.utc):%Y-%m-%d})",
        "",
        f"Command: `.venv/bin/python benchmarks/floor.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        f"Machine: {platform.node()}, {gdslab.probe(folder).as_dict().get('cpu_count', '?')} CPUs, "
        f"device {args.device} {_device_name(args.device)}, "
        f"file system {gdslab.probe(folder).as_dict().get('fs_type', '?')}; checkpoint "
        f"{gdslab.format_size(ckpt.nbytes)} in {len(files)} shards; threads {args.threads}, io size {args.io_size}; "
        f"{args.warmup} untimed warm-up run(s) of every method, then {args.repeats} interleaved repeats; "
        "medians (GB/s = 1e9 B/s).",
        "",
        "| path | cache | median GB/s | min | max | × read floor |" + (" × pinned H2D |" if cuda else "")
        + " what ran |",
        "|---|---|---|---|---|---|" + ("---|" if cuda else "") + "---|",
    ]
    for state in states:
        floor = statistics.median(results[(FLOOR, state)])
        pinned = statistics.median(results[(PINNED, state)]) if cuda else 0.0
        for method in methods:
            values = results[(method, state)]
            median = statistics.median(values)
            lines.append(f"| {method} | {state} | {median:.2f} | {min(values):.2f} | {max(values):.2f} | "
                         f"{median / floor:.2f}× |" + (f" {median / pinned:.2f}× |" if cuda else "")
                         + f" {ran.get(method, '')} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
