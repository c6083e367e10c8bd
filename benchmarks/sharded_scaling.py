"""Sharded loading on this machine: strided rows vs span, throughput vs ranks and vs shard files.

    .venv/bin/python benchmarks/sharded_scaling.py --size 256MiB --repeats 3 --out docs/results

Four experiments on synthetic Llama-shaped checkpoints, cold (evicted) and warm page cache:

1. strided: the row-parallel slices read row by row ("rows") or as one span then cut ("span"),
   `load_sharded` with 2 and 4 ranks;
2. ranks: `load_sharded` (one worker thread per rank) with 1, 2, 4 ranks;
3. shards: the same checkpoint written as 1, 2, 4, 8 files, 1 and 4 ranks;
4. dist: real torch.distributed ranks (local processes over gloo), mode 'slice' (each rank
   reads its slices) beside mode 'share' (each reads 1/N, then scatter), 1, 2, 4 ranks.

Without a GPU every rank's destination is host memory: simulated ranks on CPU, sharing
the machine's cores, memory bandwidth and disk. Writes sharded_scaling.json (every record),
sharded_strided.png, sharded_scaling.png and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from gdslab.cache import can_evict
from gdslab.dist import SIMULATED, load_sharded, run_local
from gdslab.plan import DEFAULT_STRIDED
from gdslab.plots import plot_throughput
from gdslab.probe import probe
from gdslab.sizes import format_size, parse_size
from gdslab.synthetic import cached_checkpoint


def sharded(experiment: str, folder: Path, world: int, cache: str, repeat: int, **kwargs) -> dict:
    result = load_sharded(folder, world, cache=cache, **kwargs)
    record = {**result.record(), "experiment": experiment, "repeat": repeat, "ranks": world,
              "shards": len(result.ranks[0].load.files), "how": f"threads, {cache}"}
    print(f"{experiment:8} ranks={world} shards={record['shards']} {cache:4} strided={record['strided']:4} "
          f"{record['seconds']:.3f} s {record['gbps']:.3f} GB/s (resident {record['resident_before']:.0%})",
          flush=True)
    return record


def distributed(folder: Path, world: int, cache: str, repeats: int, threads: int) -> list[dict]:
    records = run_local(folder, world, modes=("slice", "share"), repeats=repeats, cache=cache, threads=threads)
    out = []
    for r in records:
        if r["kind"] == "run":
            out.append({**r, "experiment": "dist", "ranks": world, "how": f"{r['mode']} (gloo), {cache}"})
            print(f"dist     ranks={world} {cache:4} mode={r['mode']:5} {r['seconds']:.3f} s {r['gbps']:.3f} GB/s "
                  f"(comm {r['comm_seconds']:.3f} s)", flush=True)
    return out


def table(records: list[dict], rows: str, columns: str) -> str:
    """A markdown table of mean GB/s (± sample std, n) for rows × columns."""
    cells: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        cells[(r[rows], r[columns])].append(r["gbps"])
    row_values = list(dict.fromkeys(r[rows] for r in records))
    col_values = list(dict.fromkeys(r[columns] for r in records))
    lines = [f"| {rows} | " + " | ".join(str(c) for c in col_values) + " |",
             "|---|" + "---|" * len(col_values)]
    for rv in row_values:
        out = []
        for cv in col_values:
            v = cells.get((rv, cv))
            if not v:
                out.append("")
            else:
                std = f" ± {np.std(v, ddof=1):.3f}" if len(v) > 1 else ""
                out.append(f"{np.mean(v):.3f}{std} (n={len(v)})")
        lines.append(f"| {rv} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def scaling_figure(ranks: list[dict], shards: list[dict], size: int) -> Figure:
    """2 × 2 panels: throughput vs ranks and vs shard files (rows), cold and warm (columns)."""
    fig = Figure(figsize=(11, 8), layout="constrained")
    axes = fig.subplots(2, 2, sharey="row")
    for row, (records, x, label) in enumerate(((ranks, "ranks", "ranks (simulated: threads or processes on CPU)"),
                                               (shards, "shards", "shard files in the checkpoint"))):
        for col, cache in enumerate(("cold", "warm")):
            ax = axes[row][col]
            mine = [r for r in records if r["cache_asked"] == cache]
            for series in dict.fromkeys(r["series"] for r in mine):
                points = defaultdict(list)
                for r in mine:
                    if r["series"] == series:
                        points[r[x]].append(r["gbps"])
                xs = sorted(points)
                means = [np.mean(points[v]) for v in xs]
                stds = [np.std(points[v], ddof=1) if len(points[v]) > 1 else 0.0 for v in xs]
                ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=series)
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted({r[x] for r in records}), [str(v) for v in sorted({r[x] for r in records})])
            ax.set_xlabel(label)
            ax.set_ylabel("aggregate GB/s (rank bytes / slowest rank)")
            ax.grid(alpha=0.3)
            ax.set_title(f"{cache} page cache", fontsize=9)
            ax.legend(fontsize=8)
    for ax in axes.flat:  # after every panel is drawn, so shared limits cover them all
        ax.set_ylim(bottom=0)
    retitle(fig, "Sharded loading: throughput vs ranks and vs shard files (mean ± sample std)", size)
    return fig


def retitle(fig, what: str, size: int) -> None:
    fig.suptitle(f"{what}\n{SIMULATED} · host-direct · {format_size(size)} Llama-shaped checkpoint · "
                 f"shared 2-core VM", fontsize=10)


def report(records: list[dict], size: int, out: Path) -> None:
    """The figures and the markdown tables from the records."""
    by = defaultdict(list)
    for r in records:
        by[r["experiment"]].append(r)
    if by["strided"]:
        for r in by["strided"]:
            r["how"] = f"{r['world']} ranks, {r['cache_asked']}"
        fig = plot_throughput(by["strided"], by="how", hue="strided")
        fig.axes[0].set_xlabel("ranks, page cache")
        retitle(fig, "Strided (row-parallel) slices: row by row vs one span then cut", size)
        fig.savefig(out / "sharded_strided.png", dpi=110)
        print("\n### strided: GB/s (rank bytes / slowest rank)\n" + table(by["strided"], "how", "strided"))
    for r in by["ranks"]:
        r["series"] = "load_sharded (threads), slice"
    for r in by["dist"]:
        r["series"] = f"torch.distributed (gloo processes), {r['mode']}"
    for r in by["shards"]:
        r["how"] = f"{r['world']} rank{'s' if r['world'] > 1 else ''}, {r['cache_asked']}"
    for r in by["shards"]:
        r["series"] = f"{r['world']} rank{'s' if r['world'] > 1 else ''} (threads)"
    if by["ranks"] or by["dist"] or by["shards"]:
        scaling_figure(by["ranks"] + by["dist"], by["shards"], size).savefig(out / "sharded_scaling.png", dpi=110)
        print("\n### ranks: GB/s\n" + table(by["ranks"] + by["dist"], "how", "ranks"))
        print("\n### shards: GB/s\n" + table(by["shards"], "how", "shards"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="256MiB")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=4, help="reader threads per rank")
    p.add_argument("--out", default="docs/results")
    p.add_argument("--skip", default="", help="comma list of experiments to skip: strided,ranks,shards,dist")
    p.add_argument("--replot", action="store_true", help="only redraw the figures from OUT/sharded_scaling.json")
    args = p.parse_args(argv)
    size, out = parse_size(args.size), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        saved = json.loads((out / "sharded_scaling.json").read_text())
        report(saved["records"], saved["size"], out)
        return 0
    skip = set(filter(None, args.skip.split(",")))
    folders = {s: cached_checkpoint(size, s) for s in (1, 2, 4, 8)}
    ok, reason = can_evict(folders[4])
    if not ok:
        print(f"cannot make cold runs here: {reason}", file=sys.stderr)
        return 2
    machine = probe(folders[4])
    print(f"{machine.as_dict().get('cpu_model', '')}; {reason}", flush=True)
    caches = ("cold", "warm")
    records: list[dict] = []
    began = time.time()
    for repeat in range(args.repeats):
        for cache in caches:
            if "strided" not in skip:
                for world in (2, 4):
                    for strided in ("rows", "span"):
                        records.append(sharded("strided", folders[4], world, cache, repeat, strided=strided,
                                               threads=args.threads))
            if "ranks" not in skip:
                for world in (1, 2, 4):
                    records.append(sharded("ranks", folders[4], world, cache, repeat, threads=args.threads))
            if "shards" not in skip:
                for shards in (1, 2, 4, 8):
                    for world in (1, 4):
                        records.append(sharded("shards", folders[shards], world, cache, repeat,
                                               threads=args.threads))
    if "dist" not in skip:
        for cache in caches:
            for world in (1, 2, 4):
                records += distributed(folders[4], world, cache, args.repeats, args.threads)
    elapsed = time.time() - began
    (out / "sharded_scaling.json").write_text(json.dumps(
        {"command": "python benchmarks/sharded_scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
         "size": size, "default_strided": DEFAULT_STRIDED, "elapsed_s": elapsed, "probe": machine.as_dict(),
         "records": records}, indent=1, default=str))

    report(records, size, out)
    print(f"\n{len(records)} runs in {elapsed:.0f} s; records: {out / 'sharded_scaling.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
