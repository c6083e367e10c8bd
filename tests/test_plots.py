"""Each plot function returns a Figure with the expected series, values and labels."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from gdslab import plots
from gdslab.loader import load
from gdslab.profile import Event, FillCurve, summarize
from gdslab.synthetic import write_checkpoint


def ev(stage, start, end, nbytes=0, thread="t0", device="cpu", landed=False):
    return Event(stage, start, end, nbytes, thread, "f", device, landed)


EVENTS = [
    ev("alloc", 0.0, 0.1, 0, "t0", "cuda:0"),
    ev("read", 0.1, 1.0, 2e9, "t0", "host"),
    ev("copy", 1.0, 1.5, 2e9, "t0", "cuda:0", landed=True),
    ev("read", 0.2, 1.2, 1e9, "t1", "host"),
    ev("wait", 1.2, 1.4, 0, "t1", "cuda:1"),
    ev("copy", 1.4, 2.0, 1e9, "t1", "cuda:1", landed=True),
]
RECORD = {"datapath": "gds", "effective": "gds (cuFile compatibility mode)", "cache": "cold", "device": "cuda:0",
          "nbytes": int(3e9)}


def title(fig: Figure) -> str:
    return fig.get_suptitle()


def bars(ax) -> list[BarContainer]:
    return [c for c in ax.containers if isinstance(c, BarContainer)]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    path = write_checkpoint(tmp_path_factory.mktemp("ckpt"), size="4MiB", shards=2, seed=3)
    return load(path, datapath="host-direct", device="cpu", threads=2, io_size="256KiB")


def test_describe_run_says_path_effective_cache_and_device():
    assert plots.describe_run(RECORD) == "gds → ran: gds (cuFile compatibility mode) · cold cache · cuda:0"
    assert plots.describe_run({"datapath": "x", "effective": "x", "resident_before": 0.5}) == "x · 50% in page cache"
    with pytest.raises(TypeError):
        plots.describe_run(42)


def test_fill_curves_one_line_per_device_plus_sampled_and_rate():
    sampled = FillCurve("cuda:0", np.array([0.0, 0.5, 1.6]), np.array([0, 2_000_000_000, 2_000_000_000]),
                        source="sampled: torch.cuda.memory_allocated")
    fig = plots.plot_fill_curves(EVENTS, sampled=[sampled], record=RECORD)
    assert isinstance(fig, Figure)
    fill_ax, rate_ax = fig.axes
    lines = {line.get_label(): line for line in fill_ax.get_lines()}
    assert set(lines) == {"cuda:0 (events)", "cuda:1 (events)", "cuda:0 (sampled: torch.cuda.memory_allocated)",
                          "total 2.79 GiB"}
    assert lines["cuda:0 (events)"].get_ydata().tolist() == [0.0, 2.0]  # GB
    assert lines["cuda:1 (events)"].get_xdata().tolist() == [0.0, 2.0]
    assert lines["cuda:0 (sampled: torch.cuda.memory_allocated)"].get_linestyle() == "--"
    assert lines["total 2.79 GiB"].get_ydata()[0] == pytest.approx(3.0)
    assert fill_ax.get_ylabel() == "bytes at destination (GB)"
    assert rate_ax.get_xlabel() == "time since the load started (s)"
    assert rate_ax.get_ylabel() == "fill rate (GB/s)"
    assert len(rate_ax.get_lines()) == 2
    assert "mean 1.33 GB/s" in rate_ax.get_lines()[0].get_label()  # 2 GB by 1.5 s
    for words in ("gds", "cuFile compatibility mode", "cold cache", "cuda:0"):
        assert words in title(fig)


def test_fill_curves_from_a_real_load_result(result):
    fig = plots.plot_fill_curves(result, rate=False)
    (ax,) = fig.axes
    line = ax.get_lines()[0]
    assert line.get_label() == "cpu (events)"
    assert line.get_ydata()[-1] == pytest.approx(result.nbytes / 1e9)
    assert "host-direct" in title(fig) and result.cache in title(fig) and "cpu" in title(fig)


def test_fill_chart_shows_what_the_load_held_besides_the_weights():
    record = {**RECORD, "staging_bytes": 64 << 20, "pinned_bytes": 64 << 20, "staging_reused": True,
              "host_overhead_bytes": 5 << 20, "device_overhead_bytes": 1 << 30}
    fig = plots.plot_fill_curves(EVENTS, record=record)
    fill_ax = fig.axes[0]
    peak = [line for line in fill_ax.get_lines() if line.get_label().startswith("device peak")]
    assert peak and peak[0].get_ydata()[0] == pytest.approx((RECORD["nbytes"] + (1 << 30)) / 1e9)
    words = [t.get_text() for t in fill_ax.texts]
    assert words == ["besides the weights: staging 64 MiB pinned (reused) · host peak +5 MiB · device peak +1 GiB"]
    assert plots.costs_words({}) == ""


def test_fill_curves_from_curves_directly():
    curve = FillCurve("cuda:3", np.array([0.0, 1.0]), np.array([0, 10**9]))
    fig = plots.plot_fill_curves({"cuda:3": curve}, rate=False)
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["cuda:3 (events)"]
    assert plots.plot_fill_curves([curve], rate=False).axes[0].get_lines()[0].get_ydata()[-1] == 1.0


def test_timeline_one_row_per_thread_bars_coloured_by_stage(result):
    fig = plots.plot_timeline(EVENTS, record=RECORD)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["t0", "t1"]
    assert len(ax.collections) == 6  # t0: alloc, read, copy; t1: read, wait, copy
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["alloc", "read", "copy", "wait"]
    assert ax.get_xlabel() == "time since the load started (s)"
    assert "cuda:0" in title(fig)
    real = plots.plot_timeline(result).axes[0]
    assert {t.get_text() for t in real.get_yticklabels()} == {e.thread for e in result.events}


def test_time_split_busy_is_stacked_thread_seconds():
    other = [ev("read", 0.0, 3.0, 10, "a", landed=True), ev("read", 0.0, 3.0, 10, "b", landed=True)]
    fig = plots.plot_time_split({"gpu run": EVENTS, "two readers": summarize(other)})
    (ax,) = fig.axes
    containers = {c.get_label(): c for c in bars(ax)}
    assert list(containers) == ["alloc", "read", "copy", "wait"]  # stages that occurred, in STAGES order
    assert [p.get_height() for p in containers["read"]] == pytest.approx([1.9, 6.0])  # busy, not wall
    assert [p.get_y() for p in containers["copy"]] == pytest.approx([2.0, 6.0])  # stacked on alloc + read
    assert "thread-seconds" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["gpu run", "two readers"]


def test_time_split_wall_shows_unions_side_by_side(result):
    fig = plots.plot_time_split([result], measure="wall")
    (ax,) = fig.axes
    containers = {c.get_label(): c for c in bars(ax)}
    summary = summarize(result.events)
    assert containers["read"][0].get_height() == pytest.approx(summary.stages["read"].wall_s)
    assert containers["unrecorded"][0].get_height() == pytest.approx(summary.unrecorded_s)
    assert containers["read"][0].get_y() == 0  # not stacked
    assert [t.get_text() for t in ax.get_xticklabels()] == ["host-direct"]
    assert "union" in ax.get_ylabel()
    with pytest.raises(ValueError):
        plots.plot_time_split([result], measure="cpu")


def _records():
    out = []
    for path, effective in (("pinned-bounce", "pinned ring"), ("gds", "gds (compat mode)")):
        for cache, scale in (("cold", 1.0), ("warm", 2.0)):
            for gbps in (1.0, 2.0, 3.0):
                out.append({"datapath": path, "effective": effective, "cache": cache, "device": "cuda:0",
                            "gbps": gbps * scale})
    return out


def test_throughput_bars_mean_and_std_of_repeats():
    fig = plots.plot_throughput(_records(), error="std")
    (ax,) = fig.axes
    cold, warm = bars(ax)
    assert cold.get_label() == "cache: cold" and warm.get_label() == "cache: warm"
    assert [p.get_height() for p in cold] == [2.0, 2.0]
    assert [p.get_height() for p in warm] == [4.0, 4.0]
    segments = warm.errorbar.lines[2][0].get_segments()
    assert [tuple(s[:, 1]) for s in segments] == [(2.0, 6.0), (2.0, 6.0)]  # 4 ± sample std 2
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0].startswith("pinned-bounce") and "ran: gds (compat mode)" in ticks[1]
    assert ax.get_ylabel().startswith("throughput (GB/s")
    assert "cuda:0" in title(fig)
    ranged = plots.plot_throughput(_records())  # the default: each repeat a dot, the bar spans min..max
    segments = bars(ranged.axes[0])[1].errorbar.lines[2][0].get_segments()
    assert tuple(segments[0][:, 1]) == (2.0, 6.0)  # min..max of 2, 4, 6
    dots = [c for c in ranged.axes[0].collections if c.get_offsets().shape[0] == 3]
    assert len(dots) == 4 and sorted(dots[0].get_offsets()[:, 1]) == [1.0, 2.0, 3.0]  # every repeat shown
    with pytest.raises(ValueError):
        plots.plot_throughput([])


def test_throughput_accepts_load_results(result):
    fig = plots.plot_throughput([result, result])
    (container,) = bars(fig.axes[0])
    assert container[0].get_height() == pytest.approx(result.gbps)
    assert container.get_label() == f"cache: {result.cache}"


def test_sweep_heatmap_sorts_sizes_by_bytes_and_averages_repeats():
    records = []
    for io_size in ("16MiB", 1 << 20, "4MiB"):
        for threads in (8, 1):
            for repeat in (0, 1):
                nbytes = io_size if isinstance(io_size, int) else {"16MiB": 16 << 20, "4MiB": 4 << 20}[io_size]
                records.append({"datapath": "gds", "effective": "gds", "cache": "cold", "device": "cuda:0",
                                "io_size": io_size, "threads": threads,
                                "gbps": threads * nbytes / (1 << 20) + repeat})
    fig = plots.plot_sweep_heatmap(records)
    ax, colorbar = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1 MiB", "4 MiB", "16 MiB"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1", "8"]
    grid = ax.images[0].get_array()
    assert grid.tolist() == [[1.5, 4.5, 16.5], [8.5, 32.5, 128.5]]
    assert "1.50" in [t.get_text() for t in ax.texts]
    assert ax.get_xlabel().startswith("io size") and ax.get_ylabel().startswith("threads")
    assert colorbar.get_ylabel().startswith("throughput (GB/s")
    assert "gds" in title(fig) and "cold cache" in title(fig)
    with pytest.raises(ValueError, match="mix datapath"):
        plots.plot_sweep_heatmap(records + [dict(records[0], datapath="pinned-bounce")])


def test_scaling_lines_with_ideal():
    records = [{"datapath": p, "device": "cuda:0", "cache": "cold", "gpus": g, "gbps": g * f + r}
               for p, f in (("gds", 10.0), ("pinned-bounce", 5.0)) for g in (1, 2, 4) for r in (0.0, 1.0)]
    fig = plots.plot_scaling(records, x="gpus")
    (ax,) = fig.axes
    labels = [line.get_label() for line in ax.get_lines()]
    assert "gds: linear from 1" in labels and "pinned-bounce: linear from 1" in labels
    ideal = ax.get_lines()[labels.index("gds: linear from 1")]
    assert ideal.get_ydata().tolist() == [10.5, 21.0, 42.0]
    measured = [c for c in ax.containers if c.get_label() == "gds"][0]
    assert measured.lines[0].get_ydata().tolist() == [10.5, 20.5, 40.5]
    assert ax.get_xlabel() == "GPUs" and ax.get_ylabel().startswith("throughput (GB/s")
    assert "cuda:0" in title(fig)


def test_cold_start_chart_marks_published_figures_and_the_rest_of_the_start():
    from gdslab import coldstart as cs

    rows = cs.scenarios()
    fig = plots.plot_cold_start(rows, startup=100.0)
    ax = fig.axes[0]
    published = [line for line in ax.get_lines() if line.get_marker() == "D" and len(line.get_xdata())]
    assert sorted(line.get_xdata()[0] for line in published) == sorted(r.published_s for r in rows if r.published_s)
    assert "projection" in ax.get_title() and ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("rest of the start" in t for t in labels) and "published" in labels


def test_hbm_budget_stacks_weights_reserve_and_kv_and_labels_a_projection():
    from gdslab import kvcache

    rows = kvcache.budgets()
    fig = plots.plot_hbm_budget(rows)
    ax = fig.axes[0]
    assert len(ax.patches) == 3 * len(rows)  # weights, reserve, KV cache per configuration
    assert "projection" in fig._suptitle.get_text() and "P5en" in fig._suptitle.get_text()
    texts = [t.get_text() for t in ax.texts]
    assert any("K\ntokens" in t for t in texts)


def test_restore_vs_recompute_marks_where_restoring_wins():
    from gdslab.kvcache import Attention

    model = Attention.of_preset("llama-3.1-405b")
    fig = plots.plot_restore_vs_recompute(model, {"slow disk": 1.0, "fast file system": 100.0}, max_tokens=1 << 20)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.lines]
    assert any(label.startswith("recompute") for label in labels)
    assert any("1.00 GB/s: slow disk" in label for label in labels)
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(dots) == 1  # the slow disk crosses the prefill within 1M tokens; the fast one wins from the start
    assert "projection" in fig._suptitle.get_text()
