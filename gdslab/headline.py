"""The headline comparison (`make demo`, notebook 02): every data path, cold and warm.

One small sweep — every path available on the device × cold/warm × repeats, at one io
size and thread count — summarized as a table (path, what really ran, cache, median GB/s,
median seconds, × the slowest) and a bar chart with each repeat and its range.
`direct_vs_buffered` is the same comparison for one host path with and without O_DIRECT,
and `page_cache_footprint` shows what each leaves in the page cache.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from . import datapaths
from .cache import evict_all, resident_fraction_all
from .checkpoint import Checkpoint
from .loader import load, resolve_device
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
    options: str = ""  # the path's own knobs where the comparison varies them, e.g. "direct=True"

    @property
    def variant(self) -> str:
        return variant(self.datapath, self.options)


def variant(datapath: str, options: str = "") -> str:
    """A path and the knobs it ran with: "host-direct", "host-direct [direct=True]"."""
    return f"{datapath} [{options}]" if options else datapath


@dataclass
class Headline:
    device: str
    nbytes: int
    rows: list[Row]
    records: list[dict]
    unavailable: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # the knobs each cache state ran with, and why; caveats

    def table(self) -> str:
        """Plain-text table, fastest first within each cache state."""
        width = max([16] + [len(row.variant) for row in self.rows])
        lines = [f"{format_size(self.nbytes)} checkpoint → {self.device}; medians of the repeats "
                 f"(GB/s = 1e9 B/s)", "",
                 f"{'path':{width}} {'cache':5} {'GB/s':>7} {'seconds':>8} {'× slowest':>10}  effective path"]
        for row in self.rows:
            lines.append(f"{row.variant:{width}} {row.cache:5} {row.gbps:7.2f} {row.seconds:8.3f} "
                         f"{row.vs_slowest:9.2f}×  {row.effective}")
        for name, reason in self.unavailable.items():
            lines.append(f"{name:{width}} —     not run here: {reason}")
        if self.notes:
            lines += [""] + self.notes
        return "\n".join(lines)

    def figure(self):
        from .plots import plot_throughput

        if any(r.get("options") for r in self.records):
            return plot_throughput([{**r, "variant": variant(r["datapath"], r.get("options", ""))}
                                    for r in self.records], by="variant")
        return plot_throughput(self.records)


def _rows(records: list[dict]) -> list[Row]:
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for record in records:
        groups.setdefault((record["datapath"], record.get("options", ""), record["cache"]), []).append(record)
    rows = [Row(path, runs[0]["effective"], cache, statistics.median(r["gbps"] for r in runs),
                statistics.median(r["seconds"] for r in runs), len(runs), options=options)
            for (path, options, cache), runs in groups.items()]
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
    threads: int | str = "auto",
    io_size: int | str = "auto",
    caches: tuple[str, ...] = ("cold", "warm"),
    progress: bool = True,
    checkpoint: str | Path | None = None,
) -> Headline:
    """Measure every available path afresh (earlier results in `out` are replaced).

    `checkpoint` (a safetensors file or HF model folder) replaces the synthetic one.
    "auto" knobs are the policy's for each cache state (the same for every path, so the
    paths differ only in how they move bytes); the table says which.
    """
    device = str(resolve_device(device))
    infos = datapaths.available(device)
    names = [i.name for i in infos if i.available]
    for old in results_files(out):
        old.unlink(missing_ok=True)
    knobs = _knobs_per_cache(caches, threads, io_size, device, size, shards, checkpoint)
    for cache in caches:  # one sweep per cache state, each with its knobs, into one results folder
        grid = Grid(datapaths=names, io_sizes=(knobs[cache][1],), threads=(knobs[cache][0],), shards=(shards,),
                    caches=(cache,), repeats=repeats, size=size, checkpoint=str(checkpoint or ""))
        result = sweep(out, grid, device=device, progress=progress)
    records = result.ok()
    unavailable = {i.name: i.reason for i in infos if not i.available}
    for record in result.records:
        if record.get("status") != "ok":
            label = f"{record['datapath']} ({record['cache_asked']})"
            unavailable.setdefault(label, f"{record['status']}: {record.get('reason', '')}")
    headline = Headline(device, grid.size, _rows(records), records, unavailable)
    headline.notes = [f"{cache}: {n} threads, {format_size(io)} for every path ({why})"
                      for cache, (n, io, why) in knobs.items()] + host_direct_vs_bounce(records)
    return headline


def _knobs_per_cache(caches, threads, io_size, device, size, shards, checkpoint) -> dict:
    """cache -> (threads, io_size, why): the explicit values, or the policy's for that cache state."""
    from .policy import LoadFacts, choose, this_machine
    from .synthetic import cached_checkpoint

    folder = Path(checkpoint) if checkpoint else cached_checkpoint(size, shards)
    machine = this_machine(folder if folder.is_dir() else folder.parent)
    kind = resolve_device(device).type
    out = {}
    for cache in caches:
        pick = choose(machine, LoadFacts(kind, 0.0 if cache == "cold" else 1.0), "host-direct" if kind == "cpu"
                      else "pinned-bounce")
        n = pick.threads if threads == "auto" else threads
        io = pick.io_size if io_size == "auto" else parse_size(io_size)
        why = "; ".join(w for w in (pick.why["threads"] if threads == "auto" else "",
                                    pick.why["io_size"] if io_size == "auto" else "") if w) or "asked for"
        out[cache] = (n, io, why)
    return out


def host_direct_vs_bounce(records: list[dict]) -> list[str]:
    """Where host-direct is not level with the pinned bounce on a host, say by how much and whether it is noise."""
    notes = []
    for cache in dict.fromkeys(r["cache_asked"] for r in records):
        runs = {p: [r["gbps"] for r in records if r["datapath"] == p and r["cache_asked"] == cache and
                    r["device"] == "cpu"] for p in ("host-direct", "pinned-bounce")}
        if not all(runs.values()):
            continue
        direct, bounce = statistics.median(runs["host-direct"]), statistics.median(runs["pinned-bounce"])
        if direct >= bounce:
            continue
        overlap = min(runs["host-direct"]) <= max(runs["pinned-bounce"]) and \
            min(runs["pinned-bounce"]) <= max(runs["host-direct"])
        notes.append(f"{cache}: host-direct {direct:.2f} GB/s is behind the pinned bounce's {bounce:.2f} GB/s "
                     + ("within the repeats' spread (their ranges overlap): noise on this machine, not the paths"
                        if overlap else "beyond the repeats' spread: the one-copy path lost here; see the records"))
    return notes


def host_path(device: str) -> str:
    """The path whose reads land in host memory first: host-direct on a host, the pinned bounce on a GPU."""
    return "host-direct" if resolve_device(device).type == "cpu" else "pinned-bounce"


def direct_vs_buffered(
    checkpoint: str | Path,
    out: str | Path = "results/direct",
    device: str | None = None,
    repeats: int = 2,
    threads: int = 8,
    io_size: int | str = "16MiB",
    progress: bool = False,
) -> Headline:
    """The host path with O_DIRECT and without, cold and warm: does the page cache matter to it?

    A buffered read is faster warm (the bytes come from the page cache); a direct read, like
    GDS, goes to storage every time, so warm and cold are the same experiment for it.
    """
    device = str(resolve_device(device))
    for old in results_files(out):
        old.unlink(missing_ok=True)
    grid = Grid(datapaths=(host_path(device),), io_sizes=(io_size,), threads=(threads,), caches=("cold", "warm"),
                repeats=repeats, options={"direct": (False, True)}, checkpoint=str(checkpoint))
    result = sweep(out, grid, device=device, progress=progress)
    unavailable = {f"{r['datapath']} [{r['options']}] ({r['cache_asked']})": f"{r['status']}: {r.get('reason', '')}"
                   for r in result.records if r.get("status") != "ok"}
    return Headline(device, grid.size, _rows(result.ok()), result.ok(), unavailable)


@dataclass(frozen=True)
class Footprint:
    """What one cold load left in the page cache: the fraction of the checkpoint resident before and after."""

    direct: bool
    effective: str
    direct_share: float
    resident_before: float
    resident_after: float


def page_cache_footprint(checkpoint: str | Path, device: str | None = None, threads: int = 8,
                         io_size: int | str = "16MiB") -> list[Footprint]:
    """Load cold with and without O_DIRECT and measure the page cache after each.

    A buffered load fills the cache (the next run is warm); an O_DIRECT load leaves it as it
    found it: a direct read neither uses nor fills the cache, which is why "warm" means
    nothing for it. Needs eviction that works (`cache.can_evict`).
    """
    device = str(resolve_device(device))
    ckpt = Checkpoint.open(checkpoint)
    files = [f.path for f in ckpt.files]
    out = []
    for direct in (False, True):
        evict_all(files)
        before = resident_fraction_all(files)
        result = load(ckpt, host_path(device), device=device, threads=threads, io_size=io_size, direct=direct)
        record = result.record()
        out.append(Footprint(direct, result.effective, float(record.get("direct_share", 0.0)), before,
                             resident_fraction_all(files)))
        del result
    evict_all(files)
    return out


__all__ = ["Footprint", "Headline", "Row", "compare_paths", "direct_vs_buffered", "host_path",
           "page_cache_footprint", "variant"]
