"""The headline comparison (`make demo`, notebook 02): every data path, cold and warm.

One small sweep — every path available on the device × cold/warm × repeats, at one io
size and thread count — summarized as a table (path, what really ran, cache, median GB/s,
median seconds, × the slowest) and a bar chart with error bars from the repeats.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from . import datapaths
from .loader import resolve_device
from .sizes import format_size, parse_size
from .sweep import Grid, results_files, sweep


@dataclass(frozen=True)
class Row:
    datapath: str
    effective: str
    cache: str
    gbps: float
    seconds: float
    runs: int
    vs_slowest: float = 1.0


@dataclass
class Headline:
    device: str
    nbytes: int
    rows: list[Row]
    records: list[dict]
    unavailable: dict[str, str] = field(default_factory=dict)

    def table(self) -> str:
        """Plain-text table, fastest first within each cache state."""
        lines = [f"{format_size(self.nbytes)} checkpoint → {self.device}; medians of the repeats "
                 f"(GB/s = 1e9 B/s)", "",
                 f"{'path':16} {'cache':5} {'GB/s':>7} {'seconds':>8} {'× slowest':>10}  effective path"]
        for row in self.rows:
            lines.append(f"{row.datapath:16} {row.cache:5} {row.gbps:7.2f} {row.seconds:8.3f} "
                         f"{row.vs_slowest:9.2f}×  {row.effective}")
        for name, reason in self.unavailable.items():
            lines.append(f"{name:16} —     not run here: {reason}")
        return "\n".join(lines)

    def figure(self):
        from .plots import plot_throughput

        return plot_throughput(self.records)


def _rows(records: list[dict]) -> list[Row]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        groups.setdefault((record["datapath"], record["cache"]), []).append(record)
    rows = [Row(path, runs[0]["effective"], cache, statistics.median(r["gbps"] for r in runs),
                statistics.median(r["seconds"] for r in runs), len(runs))
            for (path, cache), runs in groups.items()]
    out = []
    for cache in dict.fromkeys(r.cache for r in rows):
        same = sorted((r for r in rows if r.cache == cache), key=lambda r: -r.gbps)
        slowest = min(r.gbps for r in same)
        out += [Row(**{**r.__dict__, "vs_slowest": r.gbps / slowest if slowest else 0.0}) for r in same]
    return out


def compare_paths(
    out: str | Path = "results/demo",
    size: int | str = "2GiB",
    device: str | None = None,
    repeats: int = 2,
    shards: int = 4,
    threads: int = 8,
    io_size: int | str = "16MiB",
    caches: tuple[str, ...] = ("cold", "warm"),
    progress: bool = True,
) -> Headline:
    """Measure every available path afresh (earlier results in `out` are replaced)."""
    device = str(resolve_device(device))
    infos = datapaths.available(device)
    names = [i.name for i in infos if i.available]
    for old in results_files(out):
        old.unlink(missing_ok=True)
    grid = Grid(datapaths=names, io_sizes=(io_size,), threads=(threads,), shards=(shards,), caches=caches,
                repeats=repeats, size=size)
    result = sweep(out, grid, device=device, progress=progress)
    records = result.ok()
    unavailable = {i.name: i.reason for i in infos if not i.available}
    for record in result.records:
        if record.get("status") != "ok":
            label = f"{record['datapath']} ({record['cache_asked']})"
            unavailable.setdefault(label, f"{record['status']}: {record.get('reason', '')}")
    return Headline(device, parse_size(size), _rows(records), records, unavailable)


__all__ = ["Headline", "Row", "compare_paths"]
