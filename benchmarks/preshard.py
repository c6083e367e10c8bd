"""The recipe, measured: one checkpoint loaded by N ranks three ways, cold — sliced on the fly (`span`,
`rows`) or pre-sharded (`gdslab reshard`, bf16 and FP8).

    .venv/bin/python benchmarks/preshard.py --size 1GiB --tp 4 8 --repeats 3 --out docs/results/preshard.md
    .venv/bin/python benchmarks/preshard.py --size 1GiB --tp 4 8 --repeats 3 --direct --methods span presharded \
        presharded-fp8 --out docs/results/preshard-direct.md

For each TP degree: the 405B-shaped synthetic checkpoint is resharded once (bf16 and FP8),
then every method runs once per repeat in a rotated order, each cold (pages evicted,
residency checked). Reported per method: bytes read by all ranks over the checkpoint's
bytes, reads per rank and their median size, and the time until every rank is ready
(the slowest rank), as medians, with the ratio of `span` to pre-sharded in the same run.
Without GPUs the ranks are simulated (worker threads into host memory, one disk shared):
with buffered reads the ranks share one page cache, so bytes one rank's span read twice
come from memory the second time; `--direct` reads with O_DIRECT, as GDS does, and every
rank's bytes come from the disk.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

from gdslab import dist
from gdslab.checkpoint import Checkpoint
from gdslab.reshard import is_preshard, open_set, reshard
from gdslab.sizes import format_size
from gdslab.synthetic import cached_checkpoint, checkpoints_home

METHODS = ("span", "rows", "presharded", "presharded-fp8")


def preshard_once(source: Path, tp: int, dtype: str) -> Path:
    """The pre-sharded set of `source` at `tp` (and dtype), written once beside the cached checkpoints."""
    target = checkpoints_home() / f"{source.name}-tp{tp}-{'fp8' if dtype == 'fp8_e4m3' else 'bf16'}"
    if is_preshard(target):
        try:
            open_set(target)
            return target
        except Exception:  # noqa: BLE001 - an unusable set is written again
            pass
    reshard(source, target, tp, dtype=dtype, force=True, progress=False)
    return target


def run(method: str, source: Path, sets: dict, tp: int, threads: int, direct: bool) -> dict:
    if method.startswith("presharded"):
        result = dist.load_sharded(sets[method], tp, threads=threads, cache="cold", direct=direct)
    else:
        result = dist.load_sharded(source, tp, threads=threads, cache="cold", strided=method, direct=direct)
    record = {**result.record(), "method": method}
    del result
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--preset", default="llama-3.1-405b")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--tp", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="reader threads per rank")
    parser.add_argument("--direct", action="store_true", help="O_DIRECT reads (the page cache bypassed, as by GDS)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", default=None, help="write the markdown report here")
    args = parser.parse_args(argv)

    source = cached_checkpoint(args.size, args.shards, args.preset)
    ckpt_bytes = Checkpoint.open(source).nbytes
    lines = [
        f"# Pre-sharded vs sliced on the fly ({datetime.now(timezone.utc):%Y-%m-%d})",
        "",
        f"Command: `.venv/bin/python benchmarks/preshard.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        f"Machine: {platform.node()}; checkpoint {args.preset}-shaped, {format_size(ckpt_bytes)} in {args.shards} "
        f"files; host-direct{' with O_DIRECT' if args.direct else ' (buffered: the ranks share one page cache)'}, "
        f"{args.threads} reader threads per rank; every run cold; medians of {args.repeats} interleaved repeats. "
        "Ranks are simulated (threads into host memory on one machine, one disk).",
        "",
        "| TP | method | bytes read / checkpoint | read / kept | reads per rank | median read | all ranks ready (s) | "
        "useful GB/s | × span time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for tp in args.tp:
        sets = {"presharded": preshard_once(source, tp, "source"),
                "presharded-fp8": preshard_once(source, tp, "fp8_e4m3")}
        methods = list(args.methods)
        records: dict[str, list[dict]] = {m: [] for m in methods}
        for repeat in range(args.repeats):
            order = methods[repeat % len(methods):] + methods[:repeat % len(methods)]
            for method in order:
                record = run(method, source, sets, tp, args.threads, args.direct)
                records[method].append(record)
                print(f"TP {tp} repeat {repeat + 1} {method:15} {record['seconds']:7.3f} s, read "
                      f"{record['read_nbytes'] / ckpt_bytes:.3f}× the checkpoint, {record['reads']} reads "
                      f"({record['cache']})", flush=True)
        span = statistics.median(r["seconds"] for r in records["span"]) if "span" in records else float("nan")
        for method in methods:
            runs = records[method]
            seconds = statistics.median(r["seconds"] for r in runs)
            read = runs[0]["read_nbytes"]
            useful = statistics.median(r["nbytes"] / r["seconds"] / 1e9 for r in runs)
            per_rank = runs[0]["reads"] / tp
            median_read = runs[0]["read_median"]
            lines.append(f"| {tp} | {method} | {read / ckpt_bytes:.3f}× | {runs[0]['amplification']:.3f}× | {per_rank:.0f} | "
                         f"{format_size(median_read)} | {seconds:.3f} | {useful:.2f} | {span / seconds:.2f}× |")
    lines += ["", "bytes read / checkpoint: every rank's reads together over the checkpoint's bytes (pre-sharded "
                  "bf16: each byte once, plus the replicated norms once per rank; FP8: the MLP weights of the inner "
                  "layers at one byte). read / kept: bytes read over the bytes the ranks keep (their slices). "
                  "× span time: how many times faster than `span` in the same run (above 1: faster)."]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
