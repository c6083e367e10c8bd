"""A sweep's results as a report: markdown tables and PNG figures (`gdslab report RESULTS`).

Every number is a median over the repeats of one configuration (path, io size, threads,
shards, cache state), from the runs recorded `ok`; skipped and failed runs are listed
with their reasons, never averaged in. The tables answer three questions: which
configuration is best for each path; how much io size and thread count matter (each
value at the best of the other knobs); how throughput scales with the shard count.
"""

from __future__ import annotations

import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .sizes import format_size
from .sweep import read_records

CONFIG = ("datapath", "cache", "device", "io_size", "threads", "shards")


@dataclass
class Report:
    """Where the report went, and its text."""

    markdown: Path
    figures: list[Path] = field(default_factory=list)
    text: str = ""


def configurations(records: Sequence[dict]) -> dict[tuple, list[dict]]:
    """The ok runs grouped by configuration (CONFIG), in first-seen order."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("status", "ok") == "ok":
            groups[tuple(r.get(k) for k in CONFIG)].append(r)
    return dict(groups)


def median_gbps(runs: Sequence[dict]) -> float:
    return statistics.median(float(r["gbps"]) for r in runs)


def best_configurations(records: Sequence[dict]) -> dict[tuple, tuple[tuple, list[dict]]]:
    """(datapath, cache, device) -> (its best configuration, that configuration's runs), by median GB/s."""
    best: dict[tuple, tuple[tuple, list[dict]]] = {}
    for config, runs in configurations(records).items():
        where = config[:3]
        if where not in best or median_gbps(runs) > median_gbps(best[where][1]):
            best[where] = (config, runs)
    return best


def sensitivity(records: Sequence[dict], knob: str) -> dict[tuple, dict]:
    """(datapath, cache, device) -> {value of `knob`: best median GB/s over the other knobs}."""
    out: dict[tuple, dict] = defaultdict(dict)
    for config, runs in configurations(records).items():
        value = config[CONFIG.index(knob)]
        where = config[:3]
        out[where][value] = max(out[where].get(value, 0.0), median_gbps(runs))
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def _label(knob: str, value) -> str:
    return format_size(int(value)) if knob == "io_size" else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _knob_table(records: Sequence[dict], knob: str, title: str, ratio_words: str) -> list[str]:
    table = sensitivity(records, knob)
    values = sorted({v for by_value in table.values() for v in by_value})
    if len(values) < 2:
        return [f"_{title}: one value only ({', '.join(_label(knob, v) for v in values)}); nothing to compare._", ""]
    header = ["path", "cache", *[_label(knob, v) for v in values], ratio_words]
    rows = []
    for (path, cache, _device), by_value in table.items():
        cells = [f"{by_value[v]:.2f}" if v in by_value else "–" for v in values]
        if knob == "shards":
            first = by_value.get(values[0])
            spread = f"{by_value[max(by_value)] / first:.2f}×" if first else "–"
        else:
            spread = f"{max(by_value.values()) / min(by_value.values()):.2f}×" if len(by_value) > 1 else "–"
        rows.append([path, cache, *cells, spread])
    return [f"### {title}", "", *_table(header, rows), ""]


def markdown(records: Sequence[dict], source: str = "", figures: Sequence[Path] = ()) -> str:
    """The report's text: best configuration per path, sensitivities, shard scaling, what did not run."""
    ok = [r for r in records if r.get("status", "ok") == "ok"]
    lines = ["# Sweep report", ""]
    if source:
        lines += [f"Results: `{source}` — {len(records)} records, {len(ok)} measured runs.", ""]
    devices = sorted({str(r.get("device")) for r in ok})
    sizes = sorted({int(r["nbytes"]) for r in ok if r.get("nbytes") not in (None, "")})
    if ok:
        lines += [f"Device(s): {', '.join(devices)}; bytes per load: {', '.join(format_size(s) for s in sizes)}; "
                  f"file system: {', '.join(sorted({str(r.get('fs_type') or '?') for r in ok}))}. "
                  "GB/s are decimal (1e9 B/s), medians over repeats; each cold run had its pages evicted "
                  "and checked, each warm run had its files read first and checked.", ""]
    lines += ["## Best configuration per path", ""]
    rows = []
    for (path, cache, device), (config, runs) in sorted(best_configurations(ok).items(),
                                                       key=lambda kv: (kv[0][1], -median_gbps(kv[1][1]))):
        gbps = [float(r["gbps"]) for r in runs]
        rows.append([path, cache, device, format_size(int(config[3])), config[4], config[5],
                     f"{statistics.median(gbps):.2f}", f"{min(gbps):.2f}–{max(gbps):.2f}", len(runs),
                     runs[0].get("effective", "")])
    lines += _table(["path", "cache", "device", "io size", "threads", "shards", "median GB/s", "range", "n",
                     "what ran"], rows) if rows else ["_No measured runs._"]
    lines += ["", "## Sensitivity", "",
              "Each cell: the best median GB/s at that value over the other knobs. The last column is "
              "best ÷ worst: how much getting this knob right is worth.", ""]
    lines += _knob_table(ok, "io_size", "I/O size", "best ÷ worst")
    lines += _knob_table(ok, "threads", "Threads", "best ÷ worst")
    lines += ["## Shard-count scaling", "",
              "The same tensors written as 1…N files. The last column is the most shards ÷ the fewest.", ""]
    lines += _knob_table(ok, "shards", "Shards", "most ÷ fewest")
    others = [r for r in records if r.get("status", "ok") != "ok"]
    if others:
        lines += ["## Not measured", ""]
        reasons: dict[tuple, int] = defaultdict(int)
        for r in others:
            reasons[(r.get("status"), r.get("datapath"), r.get("cache_asked"), r.get("reason"))] += 1
        lines += _table(["status", "path", "cache asked", "reason", "runs"],
                        [[s, p, c, str(why).replace("|", "/"), n] for (s, p, c, why), n in reasons.items()])
        lines.append("")
    if figures:
        lines += ["## Figures", ""] + [f"![{f.stem}]({f.name})" for f in figures] + [""]
    return "\n".join(lines)


def _slug(*parts) -> str:
    return "-".join(str(p).replace(":", "").replace("/", "_") for p in parts)


def figures(records: Sequence[dict], out: Path) -> list[Path]:
    """PNGs (gdslab.plots): best configuration per path, io size × threads heatmaps, shard scaling."""
    from . import plots

    ok = [r for r in records if r.get("status", "ok") == "ok"]
    written: list[Path] = []

    def save(fig, name: str) -> None:
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110)
        written.append(path)

    best = best_configurations(ok)
    if not best:
        return written
    at_best = [r for _, runs in best.values() for r in runs]
    save(plots.plot_throughput(at_best, by="datapath", hue="cache"), "throughput-best")
    for (path, cache, device), (config, _) in best.items():
        same = [r for r in ok if (r["datapath"], r["cache"], r["device"], r["shards"]) == (path, cache, device, config[5])]
        if len({r["io_size"] for r in same}) > 1 or len({r["threads"] for r in same}) > 1:
            save(plots.plot_sweep_heatmap(same), _slug("heatmap", path, cache, device))
    for cache in sorted({k[1] for k in best}):
        lines = []
        for (path, c, device), (config, _) in best.items():
            if c == cache:
                lines += [r for r in ok if (r["datapath"], r["cache"], r["device"], r["io_size"], r["threads"])
                          == (path, c, device, config[3], config[4])]
        if len({r["shards"] for r in lines}) > 1:
            save(plots.plot_scaling(lines, x="shards"), _slug("scaling-shards", cache))
    return written


def report(results: str | os.PathLike, out: str | os.PathLike | None = None) -> Report:
    """Write `report.md` and the PNGs for a sweep's results (folder, .jsonl or .csv) into `out`.

    `out` defaults to the results folder (the folder of a results file).
    """
    results = Path(results)
    records = read_records(results)
    folder = Path(out) if out is not None else (results if results.is_dir() else results.parent)
    folder.mkdir(parents=True, exist_ok=True)
    written = figures(records, folder)
    text = markdown(records, str(results), written)
    path = folder / "report.md"
    path.write_text(text)
    return Report(path, written, text)


__all__ = ["Report", "best_configurations", "configurations", "figures", "markdown", "report", "sensitivity"]
