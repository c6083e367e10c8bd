"""Matplotlib figures for loads and sweeps: pure functions, records in, `Figure` out.

Every function builds a fresh `matplotlib.figure.Figure` (no pyplot state, safe on the Agg
backend and in threads) and returns it; a notebook displays it, a script saves it with
`fig.savefig(...)`. Inputs are what the rest of gdslab produces: `LoadResult`s (or their
`record()` dicts), event lists, fill curves and `ProfileSummary`s. Byte amounts are shown
in decimal GB and rates in GB/s (1e9 B/s), like `LoadResult.gbps`; every axis says so.
Titles carry what ran: the path asked for, the path that really ran, the cache state and
the device.
"""

from __future__ import annotations

import textwrap
from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .profile import STAGES, Event, FillCurve, ProfileSummary, fill_curves, fill_rate, summarize, thread_timeline
from .sizes import format_size, parse_size

GB = 1e9
STAGE_COLORS = {
    "alloc": "#9467bd", "read": "#1f77b4", "copy": "#2ca02c", "wait": "#d62728", "overhead": "#7f7f7f",
    "unrecorded": "#dddddd",
    # time to first token (gdslab.ttft)
    "construct": "#8c564b", "weights": "#17becf", "forward": "#ff7f0e", "token": "#e377c2", "from_pretrained": "#bcbd22",
}
TIME_AXIS = "time since the load started (s)"
RATE_AXIS = "throughput (GB/s, 1 GB = 1e9 B)"


# --- what a run was, in words -----------------------------------------------------------------


def as_record(run: Any) -> dict:
    """A flat record from a `LoadResult` (its `record()`) or a mapping."""
    if hasattr(run, "record") and callable(run.record):
        return run.record()
    if isinstance(run, Mapping):
        return dict(run)
    raise TypeError(f"expected a LoadResult or a record dict, got {type(run).__name__}")


def _cache_words(record: Mapping) -> str:
    if record.get("cache"):
        return f"{record['cache']} cache"
    if record.get("resident_before") is not None:
        return f"{float(record['resident_before']):.0%} in page cache"
    return ""


def describe_run(record: Mapping | Any) -> str:
    """'pinned-bounce → ran: pinned-bounce (…) · cold cache · cuda:0' for one run."""
    record = as_record(record)
    parts = []
    path, effective = record.get("datapath", ""), record.get("effective", "")
    if path:
        parts.append(path + (f" → ran: {effective}" if effective and effective != path else ""))
    elif effective:
        parts.append(f"ran: {effective}")
    parts += [p for p in (_cache_words(record), str(record.get("device", "") or "")) if p]
    return " · ".join(parts)


def costs_words(record: Mapping) -> str:
    """What the load held besides the weights, in words ('' when nothing was measured)."""
    parts = []
    if record.get("staging_bytes"):
        kind = "pinned" if record.get("pinned_bytes") else "host"
        reused = " (reused)" if record.get("staging_reused") else ""
        parts.append(f"staging {format_size(int(record['staging_bytes']))} {kind}{reused}")
    if record.get("host_overhead_bytes") is not None:
        parts.append(f"host peak +{format_size(int(record['host_overhead_bytes']))}")
    if record.get("device_overhead_bytes") is not None:
        parts.append(f"device peak +{format_size(int(record['device_overhead_bytes']))}")
    return ("besides the weights: " + " · ".join(parts)) if parts else ""


def describe_ranks(record: Mapping | Any) -> str:
    """'4 ranks · cuda:0, cuda:1, … · nccl · warm cache' from a sharded run's record (what really ran)."""
    record = as_record(record)
    devices = str(record.get("device", ""))
    parts = [f"{record.get('world', '?')} rank(s)", devices]
    if record.get("backend") and record.get("backend") != "threads":
        parts.append(str(record["backend"]))
    parts.append(str(record.get("note") or "") if record.get("simulated") else "real GPUs")
    if record.get("cache"):
        parts.append(f"{record['cache']} cache")
    return " · ".join(p for p in parts if p)


def _common(records: Sequence[Mapping], key: str) -> str:
    """The value of `key` shared by the records, or the distinct values joined."""
    values = list(dict.fromkeys(str(r[key]) for r in records if r.get(key) not in (None, "")))
    return ", ".join(values)


def _describe_set(records: Sequence[Mapping], skip: Iterable[str] = ()) -> str:
    """Path, effective path, cache and device of a set of records, leaving out `skip`."""
    skip = set(skip)
    parts = []
    for key, words in (("datapath", "path {}"), ("effective", "ran: {}"), ("cache", "{} cache"), ("device", "{}")):
        if key not in skip and (value := _common(records, key)):
            parts.append(words.format(value))
    return " · ".join(parts)


def _title(fig: Figure, what: str, detail: str) -> None:
    width = int(fig.get_figwidth() * 72 / 6.5)  # characters of 10-point text across the figure
    wrapped = "\n".join(textwrap.wrap(detail, width)) if detail else ""
    fig.suptitle(f"{what}\n{wrapped}" if wrapped else what, fontsize=10)


def _wrap(label: str, width: int = 22) -> str:
    return "\n".join(textwrap.wrap(str(label), width)) or str(label)


# --- one load -------------------------------------------------------------------------------


def _events_and_record(run: Any) -> tuple[list[Event], dict]:
    if hasattr(run, "events") and hasattr(run, "record"):
        return list(run.events), run.record()
    return list(run), {}


def plot_fill_curves(
    run: Any,
    *,
    sampled: Sequence[FillCurve] = (),
    record: Mapping | None = None,
    rate: bool = True,
    total: int | None = None,
) -> Figure:
    """Bytes at the destination per device over time, and (with `rate`) the smoothed rate.

    `run` is a `LoadResult`, its events, or fill curves (a list or device → curve mapping).
    `sampled` adds curves from `DeviceMemorySampler.curve()` (dashed) on the same axes, as a
    cross-check. `record` (or the result's own) gives the title; `total` draws the target.
    """
    if isinstance(run, Mapping):
        curves, record_in = dict(run), {}
    elif isinstance(run, Sequence) and run and isinstance(run[0], FillCurve):
        curves, record_in = {c.device: c for c in run}, {}
    else:
        events, record_in = _events_and_record(run)
        curves = fill_curves(events)
    record = dict(record) if record is not None else record_in
    fig = Figure(figsize=(8, 5.5 if rate else 4), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1)) if rate else [fig.subplots()]
    fill_ax = axes[0]
    for device, curve in curves.items():
        (line,) = fill_ax.plot(curve.times, curve.nbytes / GB, drawstyle="steps-post", label=f"{device} (events)")
        if rate and curve.end > 0:
            r = fill_rate(curve)
            axes[1].plot(r.times, r.smoothed / GB, color=line.get_color(),
                         label=f"{device}: {r.window * 1e3:.3g} ms window, mean {r.mean / GB:.2f} GB/s")
    for curve in sampled:
        fill_ax.plot(curve.times, curve.nbytes / GB, linestyle="--", drawstyle="steps-post",
                     label=f"{curve.device} ({curve.source})")
    if total is None and record.get("nbytes"):
        total = int(record["nbytes"])
    if total:
        fill_ax.axhline(total / GB, color="black", linewidth=0.8, linestyle=":", label=f"total {format_size(total)}")
        extra = record.get("device_overhead_bytes")
        if extra:  # what the device held at its peak: the weights and the load's temporaries
            fill_ax.axhline((total + extra) / GB, color="#d62728", linewidth=0.8, linestyle="--",
                            label=f"device peak: weights + {format_size(extra)} temporary")
    costs = costs_words(record)
    if costs:
        fill_ax.text(0.01, 0.97, costs, transform=fill_ax.transAxes, fontsize=7.5, va="top", color="#444444")
    fill_ax.set_ylabel("bytes at destination (GB)")
    fill_ax.set_ylim(bottom=0)
    fill_ax.grid(alpha=0.3)
    fill_ax.legend(loc="lower right", fontsize=8)
    if rate:
        axes[1].set_ylabel("fill rate (GB/s)")
        axes[1].set_ylim(bottom=0)
        axes[1].grid(alpha=0.3)
        if axes[1].lines:
            axes[1].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel(TIME_AXIS)
    axes[-1].set_xlim(left=0)
    _title(fig, "Fill curve: bytes landed per device", describe_run(record) if record else "")
    return fig


def plot_timeline(run: Any, *, record: Mapping | None = None, max_lanes: int = 64) -> Figure:
    """The task timeline (Gantt): one row per thread, one bar per event, coloured by stage."""
    events, record_in = _events_and_record(run)
    record = dict(record) if record is not None else record_in
    lanes = thread_timeline(events)[:max_lanes]
    fig = Figure(figsize=(9, 1.6 + 0.35 * max(1, len(lanes))), layout="constrained")
    ax = fig.subplots()
    seen = []
    for row, lane in enumerate(lanes):
        by_stage: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for e in lane.events:
            by_stage[e.stage].append((e.start, max(e.end - e.start, 0.0)))
        for stage, spans in by_stage.items():
            ax.broken_barh(spans, (row - 0.4, 0.8), facecolors=STAGE_COLORS.get(stage, "#bcbd22"), label=stage)
            if stage not in seen:
                seen.append(stage)
    order = [s for s in STAGES if s in seen] + [s for s in seen if s not in STAGES]
    fig.legend(handles=[Patch(color=STAGE_COLORS.get(s, "#bcbd22"), label=s) for s in order],
               loc="outside lower center", fontsize=8, ncols=max(1, len(order)))
    ax.set_yticks(range(len(lanes)), [lane.thread for lane in lanes], fontsize=8)
    ax.set_ylim(len(lanes) - 0.5, -0.5)
    ax.set_xlabel(TIME_AXIS)
    ax.set_ylabel("thread")
    ax.set_xlim(left=0)
    ax.grid(axis="x", alpha=0.3)
    _title(fig, "Task timeline per thread", describe_run(record) if record else "")
    return fig


def _as_summary(run: Any) -> ProfileSummary:
    if isinstance(run, ProfileSummary):
        return run
    events, _ = _events_and_record(run)
    return summarize(events)


def plot_time_split(runs: Mapping[str, Any] | Sequence[Any], *, measure: str = "busy") -> Figure:
    """Where the time went, per run: one bar per run, one segment per stage.

    `runs` maps a label to a `LoadResult`, an event list or a `ProfileSummary` (a plain list
    of `LoadResult`s is labelled by data path). `measure='busy'` (the default) stacks busy
    thread-seconds — the stages add up to the time every thread spent; `'wall'` shows the
    wall-clock union of each stage side by side (unions overlap, so they are not stacked)
    with the time no stage covered ('unrecorded').
    """
    if measure not in ("busy", "wall"):
        raise ValueError(f"measure must be 'busy' or 'wall', got {measure!r}")
    if not isinstance(runs, Mapping):
        runs = {(as_record(r).get("datapath") or f"run {k}") if hasattr(r, "record") else f"run {k}": r
                for k, r in enumerate(runs)}
    summaries = {label: _as_summary(run) for label, run in runs.items()}
    stages = list(dict.fromkeys(s for summary in summaries.values() for s in summary.stages))
    stages = [s for s in stages if any(summary.stages[s].count for summary in summaries.values() if s in summary.stages)]
    labels = list(summaries)
    x = np.arange(len(labels))
    fig = Figure(figsize=(max(5, 1.6 * len(labels) + 3), 4.5), layout="constrained")
    ax = fig.subplots()
    if measure == "busy":
        bottom = np.zeros(len(labels))
        for stage in stages:
            values = np.array([summaries[lb].stages[stage].busy_s if stage in summaries[lb].stages else 0.0
                               for lb in labels])
            ax.bar(x, values, bottom=bottom, color=STAGE_COLORS.get(stage), label=stage)
            bottom += values
        ax.set_ylabel("busy time (thread-seconds, summed over threads)")
        what = "Time split per stage: busy thread-seconds, stacked"
    else:
        groups = stages + ["unrecorded"]
        width = 0.8 / len(groups)
        for k, stage in enumerate(groups):
            values = [summaries[lb].unrecorded_s if stage == "unrecorded"
                      else summaries[lb].stages[stage].wall_s if stage in summaries[lb].stages else 0.0
                      for lb in labels]
            ax.bar(x - 0.4 + width * (k + 0.5), values, width, color=STAGE_COLORS.get(stage), label=stage)
        ax.scatter(x, [summaries[lb].span_s for lb in labels], marker="_", s=800, color="black", label="load span")
        ax.set_ylabel("wall-clock time in stage (s, union over threads)")
        what = "Time split per stage: wall-clock union (stages overlap across threads)"
    ax.set_xticks(x, [_wrap(lb) for lb in labels], fontsize=8)
    ax.margins(y=0.1)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    records = [as_record(r) for r in runs.values() if hasattr(r, "record") or isinstance(r, Mapping)]
    _title(fig, what, _describe_set(records, skip=("datapath", "effective")) if records else "")
    return fig


# --- many loads ---------------------------------------------------------------------------------


def _groups(records: Sequence[Mapping], keys: Sequence[str], value: str) -> dict[tuple, list[float]]:
    out: dict[tuple, list[float]] = {}
    for r in records:
        out.setdefault(tuple(r.get(k) for k in keys), []).append(float(r[value]))
    return out


def _spread(values: Sequence[float], error: str) -> tuple[float, float, float]:
    """Mean and the (lower, upper) error bar: sample std (n >= 2) or the min/max range."""
    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, 0.0, 0.0
    if error == "std":
        std = float(v.std(ddof=1))
        return mean, std, std
    return mean, mean - float(v.min()), float(v.max()) - mean


def plot_throughput(
    records: Sequence[Any], *, by: str = "datapath", hue: str = "cache", value: str = "gbps", error: str = "range",
) -> Figure:
    """Mean throughput per `by` (bars) and `hue` (side by side), every repeat a dot, error bars from the repeats.

    `records` are `LoadResult`s or their `record()` dicts (keys datapath, effective, cache,
    device, gbps). `error` is 'range' (min to max: what two or three repeats can honestly
    show) or 'std' (sample standard deviation, for many repeats); each bar is labelled with
    its repeat count n. What ran (`effective`) is written under each data path.
    """
    if error not in ("std", "range"):
        raise ValueError(f"error must be 'std' or 'range', got {error!r}")
    records = [as_record(r) for r in records]
    if not records:
        raise ValueError("no records to plot")
    groups = _groups(records, (by, hue), value)
    xs = list(dict.fromkeys(r.get(by) for r in records))
    hues = list(dict.fromkeys(r.get(hue) for r in records))
    width = 0.8 / len(hues)
    fig = Figure(figsize=(max(6, 1.8 * len(xs) + 2), 4.8), layout="constrained")
    ax = fig.subplots()
    for k, h in enumerate(hues):
        positions, means, lows, highs, counts = [], [], [], [], []
        for i, xv in enumerate(xs):
            if (xv, h) in groups:
                mean, low, high = _spread(groups[(xv, h)], error)
                positions.append(i - 0.4 + width * (k + 0.5))
                means.append(mean)
                lows.append(low)
                highs.append(high)
                counts.append(len(groups[(xv, h)]))
        bars = ax.bar(positions, means, width, yerr=[lows, highs], capsize=3, label=f"{hue}: {h}")
        ax.bar_label(bars, labels=[f"n={n}" for n in counts], fontsize=7, padding=2)
        for position, xv in zip(positions, [xv for xv in xs if (xv, h) in groups]):
            ax.scatter([position] * len(groups[(xv, h)]), groups[(xv, h)], s=9, color="black", zorder=3)
    ticks = []
    for xv in xs:
        effective = (_common([r for r in records if r.get(by) == xv], "effective")
                     if by in ("datapath", "variant") else "")
        ticks.append(_wrap(xv) + (f"\n(ran: {_wrap(effective, 26)})" if effective and effective != xv else ""))
    ax.set_xticks(range(len(xs)), ticks, fontsize=7)
    ax.set_xlabel(by)
    ax.set_ylabel(RATE_AXIS if value == "gbps" else value)
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    bars_what = "mean ± sample std" if error == "std" else "mean, min–max"
    _title(fig, f"Throughput by {by} ({bars_what} over repeats)", _describe_set(records, skip=(by, hue, "effective")))
    return fig


def _size_key(value: Any) -> int:
    return parse_size(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else int(value)


def plot_sweep_heatmap(
    records: Sequence[Any], *, x: str = "io_size", y: str = "threads", value: str = "gbps",
) -> Figure:
    """A sweep as a heatmap: mean `value` for each (`x`, `y`) cell, annotated.

    The records must share one data path, cache state and device (filter them first: a
    cell that mixes paths would average different things). Sizes ('16MiB' or ints) on
    either axis are sorted by bytes and labelled in binary units.
    """
    records = [as_record(r) for r in records]
    if not records:
        raise ValueError("no records to plot")
    for key in ("datapath", "cache", "device"):
        distinct = {r.get(key) for r in records}
        if len(distinct) > 1:
            raise ValueError(f"records mix {key} values {sorted(map(str, distinct))}: plot one at a time")
    sizes = {"io_size"}

    def order(axis: str) -> list:
        values = list(dict.fromkeys(r[axis] for r in records))
        return sorted(values, key=_size_key if axis in sizes else (lambda v: (str(type(v)), v)))

    def label(axis: str, v: Any) -> str:
        return format_size(_size_key(v)) if axis in sizes else str(v)

    xs, ys = order(x), order(y)
    key = {axis: (lambda v, axis=axis: _size_key(v) if axis in sizes else v) for axis in (x, y)}
    cells: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        cells[(key[x](r[x]), key[y](r[y]))].append(float(r[value]))
    grid = np.full((len(ys), len(xs)), np.nan)
    for j, yv in enumerate(ys):
        for i, xv in enumerate(xs):
            found = cells.get((key[x](xv), key[y](yv)))
            if found:
                grid[j, i] = float(np.mean(found))
    fig = Figure(figsize=(1.1 * len(xs) + 3, 0.6 * len(ys) + 2.5), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
    finite = grid[np.isfinite(grid)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0
    for j in range(len(ys)):
        for i in range(len(xs)):
            if np.isfinite(grid[j, i]):
                ax.text(i, j, f"{grid[j, i]:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if grid[j, i] > middle else "white")
    ax.set_xticks(range(len(xs)), [label(x, v) for v in xs], fontsize=8)
    ax.set_yticks(range(len(ys)), [label(y, v) for v in ys], fontsize=8)
    ax.set_xlabel(x.replace("_", " ") + (" (bytes per read)" if x == "io_size" else ""))
    ax.set_ylabel(y.replace("_", " ") + (" (reader threads)" if y == "threads" else ""))
    fig.colorbar(image, ax=ax, label=RATE_AXIS if value == "gbps" else value)
    _title(fig, f"Sweep: mean {value} by {x} × {y}", _describe_set(records))
    return fig


def plot_scaling(
    records: Sequence[Any], *, x: str = "shards", value: str = "gbps", series: str = "datapath",
    ideal: bool = True, error: str = "std",
) -> Figure:
    """Throughput as `x` grows (shards, GPUs, ranks), one line per `series`, error bars from repeats.

    With `ideal`, a dotted line per series scales its first point linearly with `x`: the
    gap to it is what the added shards or GPUs failed to deliver.
    """
    records = [as_record(r) for r in records]
    if not records:
        raise ValueError("no records to plot")
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for name in dict.fromkeys(r.get(series) for r in records):
        groups = _groups([r for r in records if r.get(series) == name], (x,), value)
        points = sorted((float(k[0]), *_spread(v, error)) for k, v in groups.items())
        xv = np.array([p[0] for p in points])
        mean = np.array([p[1] for p in points])
        line = ax.errorbar(xv, mean, yerr=[[p[2] for p in points], [p[3] for p in points]], marker="o",
                           capsize=3, label=str(name))
        if ideal and len(xv) > 1 and xv[0] > 0:
            ax.plot(xv, mean[0] * xv / xv[0], linestyle=":", color=line.lines[0].get_color(),
                    label=f"{name}: linear from {xv[0]:g}")
    ax.set_xlabel({"shards": "shards (files loaded in parallel)", "gpus": "GPUs", "ranks": "ranks (one per GPU)"}
                  .get(x, x))
    ax.set_ylabel(RATE_AXIS if value == "gbps" else value)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    skip = (series, "effective") if series == "datapath" else (series,)
    _title(fig, f"Scaling of {value} with {x}", _describe_set(records, skip=skip))
    return fig




def plot_owners(checkpoint: Any, names: Sequence[str], world: int) -> Figure:
    """Which rank owns every element of a few tensors (colours = ranks), as `gdslab.plan` slices them."""
    from .plan import split_kind, tensor_slice

    fig = Figure(figsize=(5 * len(names), 3.2), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        entry = checkpoint[name]
        owner = np.zeros(entry.shape, dtype=int)
        for r in range(world):
            s = tensor_slice(entry, r, world)
            if s.dim is not None:
                index = [slice(None)] * len(entry.shape)
                index[s.dim] = slice(s.start, s.stop)
                owner[tuple(index)] = r
        ax.imshow(owner.reshape(entry.shape[0], -1), cmap="tab10", vmin=0, vmax=9, aspect="auto",
                  interpolation="nearest")
        kind, dim = split_kind(name, len(entry.shape))
        ax.set_title(f"{name.split('.')[-2]}: {kind}-parallel, split on dim {dim}", fontsize=9)
        ax.set_xlabel("dim 1 (inputs): contiguous in the file")
        ax.set_ylabel("dim 0 (outputs)")
    fig.suptitle(f"Owner of every element, {world} ranks (colours = ranks 0..{world - 1})", fontsize=10)
    return fig


def plot_slice_vs_share(runs: Sequence[Mapping]) -> Figure:
    """Each mode's time split into reading (from the common start) and exchange (scatter/broadcast)."""
    runs = [as_record(r) for r in runs]
    fig = Figure(figsize=(7, 1.2 * len(runs) + 1.2), layout="constrained")
    ax = fig.subplots()
    names = [f"{r['mode']}\nread {format_size(r['read_nbytes'])}" for r in runs]
    reading = [r["seconds"] - r["comm_seconds"] for r in runs]
    ax.barh(names, reading, label="reading (from the common start)")
    ax.barh(names, [r["comm_seconds"] for r in runs], left=reading, label="exchange (scatter / broadcast)")
    ax.set_xlabel("seconds until every rank holds its slices")
    ax.legend(fontsize=8)
    ax.set_title(f"slice vs share · {describe_ranks(runs[0])} · ran: {runs[0].get('effective', '')}", fontsize=9)
    return fig


def plot_recipe(records: Mapping[str, Mapping], checkpoint_bytes: int) -> Figure:
    """One checkpoint loaded several ways by the same ranks: bytes read, reads per rank, time to all ready.

    `records` maps a way ("span", "rows", "presharded"...) to its sharded run's record
    (`ShardedResult.record()`); the title says where the ranks ran.
    """
    names = list(records)
    recs = [dict(records[n]) for n in names]
    fig = Figure(figsize=(10, 0.5 * len(names) + 2.2), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    colors = [("tab:green" if n.startswith("pre") else "tab:blue") for n in names]
    panels = [
        ([r["read_nbytes"] / checkpoint_bytes for r in recs], "bytes read by all ranks\n(× the checkpoint)", "{:.2f}×"),
        ([r["reads"] / max(1, r["world"]) for r in recs], "reads per rank\n(log scale)", "{:.0f}"),
        ([r["seconds"] for r in recs], "until every rank is ready (s)", "{:.3f} s"),
    ]
    for ax, (values, label, fmt) in zip(axes, panels):
        bars = ax.barh(names, values, color=colors)
        for bar, value in zip(bars, values):
            ax.annotate(" " + fmt.format(value), (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                        va="center", fontsize=8)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlim(0, max(values) * 1.35 if max(values) > 0 else 1)
    axes[1].set_xscale("log")
    axes[1].set_xlim(0.5, max(1.0, max(panels[1][0])) * 6)
    axes[0].invert_yaxis()
    _title(fig, "The same weights, the same ranks: sliced on the fly or pre-sharded",
           f"{describe_ranks(recs[0])} · {format_size(checkpoint_bytes)} checkpoint")
    return fig


def plot_cold_start(projections: Sequence[Any], *, startup: float = 0.0) -> Figure:
    """Horizontal bars of projected seconds (log scale), each labelled a projection, with its published figure.

    `projections` are `gdslab.coldstart.Projection`s (or `ScenarioRow`s, whose projection is
    used). Each bar's label says what the row is: calibrated (on its own published figure),
    predicted or assumed (`coldstart.classify`), and "· your runs" where measured inputs went in.
    A published figure is a black mark on its bar; `startup` (seconds, e.g. the sum of
    `coldstart.startup()`) is drawn after the weights, in grey: the rest of a cold start.
    """
    from .coldstart import LABEL, classify, format_seconds

    kinds = [getattr(p, "kind", None) or classify(getattr(p, "projection", p))[0] for p in projections]
    projections = [getattr(p, "projection", p) for p in projections]
    fig = Figure(figsize=(11.5, 0.62 * len(projections) + 2.2), layout="constrained")
    ax = fig.subplots()
    names = [_wrap(p.scenario.title, 44) + f"\n[{kind}]" + (" · your runs" if p.measured else "")
             for p, kind in zip(projections, kinds)]
    seconds = [p.seconds if not p.unavailable else 0.0 for p in projections]
    colors = ["tab:green" if p.scenario.loader.endswith("gds") else "tab:blue" for p in projections]
    bars = ax.barh(names, seconds, color=colors, hatch="//", edgecolor="white", label=f"weights ({LABEL})")
    if startup:
        ax.barh(names, [startup if s else 0 for s in seconds], left=seconds, color="#cccccc",
                label=f"rest of the start ({LABEL}): image, compile, graphs, KV cache")
    for bar, p in zip(bars, projections):
        text = (f" not possible: {p.unavailable}" if p.unavailable else
                f" {format_seconds(p.seconds)}; bound by {p.slowest.binding.name}")
        ax.annotate(text, (max(bar.get_width() + startup * bool(bar.get_width()), 1e-3),
                           bar.get_y() + bar.get_height() / 2), va="center", fontsize=7.5)
        published = p.scenario.published_s
        if published:
            y = bar.get_y() + bar.get_height() / 2
            ax.plot([published], [y], marker="D", color="black", markersize=6, zorder=3)
            if p.ratio is not None:
                ax.annotate(f"×{p.ratio:.2f} of published", (published, y), xytext=(0, -9),
                            textcoords="offset points", ha="center", va="top", fontsize=6.5)
    if any(p.scenario.published_s for p in projections):
        ax.plot([], [], marker="D", color="black", linestyle="", label="published")
    shown = [s for s in seconds if s] + [p.scenario.published_s for p in projections if p.scenario.published_s]
    if shown:
        ax.set_xscale("log")
        ax.set_xlim(min(shown) / 3, (max(shown) + startup) * 60)
    ax.invert_yaxis()
    ax.set_xlabel(f"seconds until the weights are in HBM ({LABEL}, log scale)")
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    ax.set_title(f"Cold starts: {LABEL}s beside what was published (a {LABEL}, not a measurement)", fontsize=10)
    return fig


def plot_hbm_budget(budgets: Sequence[Any]) -> Figure:
    """Stacked bars of a node's HBM per configuration: weights, reserve, KV cache; the tokens it holds on each.

    `budgets` are `gdslab.kvcache.Budget`s. Every bar is a projection from named inputs.
    """
    from .kvcache import LABEL

    fig = Figure(figsize=(max(7.0, 1.15 * len(budgets) + 2.5), 5.0), layout="constrained")
    ax = fig.subplots()
    names = [_wrap(b.label.split(" ", 1)[1].replace(" weights,", " weights\n"), 16) for b in budgets]
    x = np.arange(len(budgets))
    weights = np.array([b.weights for b in budgets]) / GB
    reserved = np.array([b.reserved for b in budgets]) / GB
    kv = np.array([b.kv_cache for b in budgets]) / GB
    ax.bar(x, weights, color="#7f7f7f", label="weights (pre-sharded)")
    ax.bar(x, reserved, bottom=weights, color="#d6a756", label="reserve: " + budgets[0].reserve.name)
    ax.bar(x, kv, bottom=weights + reserved, color="tab:green", label="KV cache")
    for i, b in enumerate(budgets):
        ax.annotate(f"{b.tokens / 1e3:,.0f}K\ntokens", (i, b.hbm / GB), ha="center", va="bottom", fontsize=7.5)
    ax.axhline(budgets[0].hbm / GB, color="black", linewidth=0.8, linestyle=":")
    ax.set_xticks(x, names, fontsize=7)
    ax.set_ylabel("GB of HBM across the node (1 GB = 1e9 B)")
    ax.set_ylim(0, budgets[0].hbm / GB * 1.18)
    ax.legend(fontsize=8, loc="lower right")
    b = budgets[0]
    _title(fig, f"{b.model} on {b.node.name}: the HBM after the weights ({LABEL})",
           f"KV per token counts {b.heads_counted}; tensor parallel over {b.node.gpus} GPUs")
    return fig


def plot_restore_vs_recompute(model: Any, rates: Mapping[str, float], *, kv: str = "bf16", tp: int = 8,
                              gpu: str = "h200-bf16", gpus: int = 8, max_tokens: int = 131072) -> Figure:
    """Seconds to get a context's KV cache back: recompute it (prefill) or restore it at each rate.

    `model` is a `gdslab.kvcache.Attention`; `rates` maps a label ('measured here: host
    O_DIRECT', 'published: FSx for Lustre with GDS') to GB/s. Lines are projections from
    those rates and the stated FLOP rate; where a restore line crosses the prefill is where
    restoring starts to win.
    """
    from .kvcache import GPUS, LABEL, MFU, crossover_tokens, recompute_seconds, restore_seconds

    tokens = np.unique(np.geomspace(256, max_tokens, 60).astype(int))
    fig = Figure(figsize=(8.5, 5.0), layout="constrained")
    ax = fig.subplots()
    ax.plot(tokens, [recompute_seconds(model, int(t), gpu, gpus) for t in tokens], color="black", linewidth=2,
            label=f"recompute (prefill) on {gpus}× {GPUS[gpu].name} at {MFU:.0%} of peak")
    for label, gbps in rates.items():
        line, = ax.plot(tokens, [restore_seconds(model, int(t), gbps, kv, tp) for t in tokens],
                        label=f"restore at {gbps:.2f} GB/s: {label}")
        cross = crossover_tokens(model, gbps, kv, tp, gpu, gpus)
        if cross and cross <= max_tokens:
            ax.plot([cross], [restore_seconds(model, cross, gbps, kv, tp)], "o", color=line.get_color())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel(f"seconds to have its KV cache in HBM ({LABEL})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7.5, loc="upper left")
    _title(fig, f"{model.name}: restore the KV cache or recompute it ({LABEL})",
           f"{kv} KV, tensor parallel {tp}; a dot marks where restoring starts to win")
    return fig


def plot_first_token(rows: Sequence[Mapping | Any]) -> Figure:
    """Time to first token per run: one stacked bar each (construct, weights, first forward, token).

    `rows` are `gdslab.ttft` runs or their records / `ttft.medians` rows (`<stage>_s` columns,
    `label`, `cache`); `from_pretrained` is one segment, construction and weights together.
    """
    rows = [r.record() if hasattr(r, "record") else dict(r) for r in rows]
    stages = [s for s in ("construct", "weights", "from_pretrained", "forward", "token")
              if any(f"{s}_s" in r for r in rows)]
    labels = [f"{r['label']}\n{r.get('cache', '')}" + (f" (median of {r['runs']})" if r.get("runs", 1) > 1 else "")
              for r in rows]
    x = np.arange(len(rows))
    fig = Figure(figsize=(max(5, 1.5 * len(rows) + 2.5), 4.5), layout="constrained")
    ax = fig.subplots()
    bottom = np.zeros(len(rows))
    for stage in stages:
        values = np.array([r.get(f"{stage}_s", 0.0) for r in rows])
        ax.bar(x, values, bottom=bottom, color=STAGE_COLORS.get(stage), label=stage)
        bottom += values
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("seconds to the first token")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    devices = sorted({str(r.get("device", "")) for r in rows})
    _title(fig, "Time to first token, by stage", f"on {', '.join(devices)}")
    return fig


__all__ = [
    "plot_first_token",
    "describe_run", "describe_ranks", "costs_words", "as_record", "plot_fill_curves", "plot_timeline", "plot_time_split",
    "plot_throughput", "plot_sweep_heatmap", "plot_scaling", "plot_owners", "plot_slice_vs_share", "plot_recipe",
    "plot_cold_start", "plot_hbm_budget", "plot_restore_vs_recompute", "STAGE_COLORS",
]
