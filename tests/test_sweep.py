"""Sweeps: grid expansion, the cold/warm protocol, the results schema, resume, the report and the CLI.

Everything runs real loads on real (tiny, 1-2 MiB) checkpoints written by the safetensors
library, with real page-cache eviction where the file system allows it.
"""

from __future__ import annotations

import csv
import json
import sys
import threading
from pathlib import Path

import pytest

from gdslab import cli
from gdslab.cache import can_evict, eviction_must_work, resident_fraction_all
from gdslab.checkpoint import Checkpoint
from gdslab.errors import DatapathUnavailable
from gdslab.report import best_configurations, report
from gdslab.sweep import FIELDS, PATH_FIELDS, Cell, Grid, SweepError, prepare_cache, read_records, sweep

SWEEP = sys.modules["gdslab.sweep"]  # the module (the attribute gdslab.sweep is the function)

TINY = dict(datapaths=["host-direct"], io_sizes=["256KiB", "1MiB"], threads=[1, 2], shards=[1, 2],
            caches=["cold", "warm"], repeats=1, size="2MiB")


@pytest.fixture(scope="module")
def ckroot(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="module")
def evictable(ckroot) -> bool:
    """Whether cold runs can be made here; on ext4/xfs they must, or the tests fail."""
    ok, why = can_evict(ckroot)
    if not ok and eviction_must_work(ckroot):
        pytest.fail(f"page-cache eviction must work on this file system, and does not: {why}")
    return ok


@pytest.fixture(scope="module")
def done(tmp_path_factory, ckroot):
    """One finished tiny sweep (8 host-direct runs + safetensors + gds, which is unavailable on the CPU)."""
    out = tmp_path_factory.mktemp("sweep")
    grid = Grid(**{**TINY, "datapaths": ["host-direct", "safetensors", "gds"]})
    return out, grid, sweep(out, grid, device="cpu", root=ckroot, progress=False)


# --- the grid -------------------------------------------------------------------------------


def test_grid_expands_every_combination_once():
    grid = Grid(datapaths=["host-direct", "safetensors"], io_sizes=["1MiB", "4MiB", "1MiB"], threads=[1, 2],
                shards=[1, 2], caches=["cold", "warm"], repeats=2)
    assert grid.io_sizes == (1 << 20, 4 << 20)  # parsed, duplicates dropped
    cells = grid.cells()
    # host-direct: 2 io × 2 threads × 2 caches; safetensors uses neither knob: 2 caches; × 2 shards × 2 repeats
    assert len(cells) == (8 + 2) * 2 * 2
    keys = [c.key(grid.checkpoint_id, "cpu") for c in cells]
    assert len(set(keys)) == len(keys)
    assert [c.repeat for c in cells] == sorted(c.repeat for c in cells)  # repeats outermost: interleaved
    safetensors = {(c.io_size, c.threads) for c in cells if c.datapath == "safetensors"}
    assert safetensors == {(1 << 20, 1)}
    assert Cell("host-direct", 1, 2, 3, "cold", 0) in Grid(datapaths=["host-direct"], io_sizes=[1], threads=[2],
                                                           shards=[3], caches=["cold"], repeats=1).cells()


@pytest.mark.parametrize("bad, error", [
    (dict(datapaths=["no-such-path"]), DatapathUnavailable),
    (dict(caches=["hot"]), SweepError),
    (dict(repeats=0), SweepError),
    (dict(threads=[0]), SweepError),
    (dict(shards=[]), SweepError),
    (dict(io_sizes=["-1MiB"]), Exception),
])
def test_grid_refuses_bad_input(bad, error):
    with pytest.raises(error):
        Grid(**bad)


# --- the cold/warm protocol -------------------------------------------------------------------


def test_prepare_cache_cold_then_warm(ckroot, evictable):
    from gdslab.synthetic import cached_checkpoint

    files = [f.path for f in Checkpoint.open(cached_checkpoint("1MiB", 2, root=ckroot)).files]
    ok, resident, why = prepare_cache(files, "warm")
    assert ok and resident > 0.95 and resident_fraction_all(files) > 0.95
    ok, resident, why = prepare_cache(files, "cold")
    if not evictable:
        assert not ok and "cannot be made here" in why
        return
    assert ok and resident < 0.05 and resident_fraction_all(files) < 0.05


def test_eviction_that_does_not_work_is_recorded_not_measured(tmp_path, ckroot, monkeypatch, evictable):
    if not evictable:
        pytest.skip(f"page-cache eviction does not work here: {can_evict(ckroot)[1]}")
    monkeypatch.setattr(SWEEP, "evict_all", lambda files: None)  # pages stay: the check must catch it
    result = sweep(tmp_path, datapaths=["host-direct"], io_sizes=["1MiB"], threads=[1], shards=[1],
                   caches=["warm", "cold"], repeats=1, size="1MiB", device="cpu", root=ckroot, progress=False)
    by_cache = {r["cache_asked"]: r for r in result.records}
    assert by_cache["warm"]["status"] == "ok"
    cold = by_cache["cold"]
    assert cold["status"] == "skipped" and "eviction left" in cold["reason"] and cold["resident_checked"] > 0.95
    assert cold.get("gbps") in (None, "")


def test_cold_refused_where_eviction_cannot_work(tmp_path, ckroot, monkeypatch):
    monkeypatch.setattr(SWEEP, "can_evict", lambda folder: (False, "pretend tmpfs"))
    result = sweep(tmp_path, datapaths=["host-direct"], io_sizes=["1MiB"], threads=[1], shards=[1],
                   caches=["cold"], repeats=1, size="1MiB", device="cpu", root=ckroot, progress=False)
    (record,) = result.records
    assert record["status"] == "skipped" and "pretend tmpfs" in record["reason"]


# --- records and files --------------------------------------------------------------------------


def test_records_are_measured_under_the_protocol(done, evictable):
    out, grid, result = done
    assert len(result.records) == len(grid.cells())
    ok = result.ok()
    # host-direct: 2 io sizes × 2 threads × 2 shards × 2 caches; safetensors: 2 shards × 2 caches
    assert len(ok) == (16 + 4 if evictable else 8 + 2)
    for r in ok:
        assert r["cache"] == r["cache_asked"]
        assert (r["resident_checked"] < 0.05) if r["cache"] == "cold" else (r["resident_checked"] > 0.95)
        assert r["gbps"] == pytest.approx(r["nbytes"] / r["seconds"] / 1e9)
        assert r["device"] == "cpu" and r["effective"] and r["started"] <= r["finished"]
        assert r["fs_type"] and r["probe_cpu_count"]
    assert len({r["nbytes"] for r in ok}) == 1  # the same tensors whatever the shard count
    assert {r["files"] for r in ok} == {1, 2}
    gds = [r for r in result.records if r["datapath"] == "gds"]
    assert gds and all(r["status"] == "skipped" and "CUDA" in r["reason"] for r in gds)


def test_csv_and_jsonl_schema(done):
    out, grid, result = done
    lines = (out / "sweep.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == result.records
    with open(out / "sweep.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(FIELDS)
    assert len(rows) == 1 + len(result.records)
    for record in result.records:
        assert set(FIELDS) - set(PATH_FIELDS) - {"effective", "source", "files", "tensors", "nbytes", "seconds",
                                                 "gbps", "cache", "resident_before", "started",
                                                 "resident_checked"} <= set(record)
    from_csv = read_records(out / "sweep.csv")
    assert [r["key"] for r in from_csv] == [r["key"] for r in result.records]
    ok = [r for r in from_csv if r["status"] == "ok"]
    assert all(isinstance(r["io_size"], int) and isinstance(r["gbps"], float) for r in ok)


def test_resume_skips_done_cells_and_drops_a_cut_line(tmp_path, ckroot):
    grid = Grid(**{**TINY, "shards": [1]})
    first = sweep(tmp_path, grid, device="cpu", root=ckroot, progress=False)
    total = len(grid.cells())
    assert first.resumed == 0 and len(first.records) == total
    jsonl = tmp_path / "sweep.jsonl"
    lines = jsonl.read_text().splitlines(keepends=True)
    jsonl.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])  # interrupted mid-write
    again = sweep(tmp_path, grid, device="cpu", root=ckroot, progress=False)
    assert again.resumed == 3 and again.ran + again.skipped == total - 3
    keys = [json.loads(line)["key"] for line in jsonl.read_text().splitlines()]
    assert sorted(keys) == sorted(c.key(grid.checkpoint_id, "cpu") for c in grid.cells())
    with open(tmp_path / "sweep.csv", newline="") as f:
        assert len(list(csv.reader(f))) == 1 + total
    assert sweep(tmp_path, grid, device="cpu", root=ckroot, progress=False).resumed == total


def test_resume_after_a_record_whose_newline_was_cut(tmp_path, ckroot):
    grid = Grid(datapaths=["host-direct"], io_sizes=["1MiB"], threads=[1, 2], shards=[1], caches=["warm"],
                repeats=1, size="1MiB")
    sweep(tmp_path, grid, device="cpu", root=ckroot, progress=False)
    jsonl = tmp_path / "sweep.jsonl"
    first = jsonl.read_text().splitlines()[0]
    jsonl.write_text(first)  # one whole record, its newline never written
    again = sweep(tmp_path, grid, device="cpu", root=ckroot, progress=False)
    assert again.resumed == 1 and again.ran == 1
    assert [json.loads(line)["threads"] for line in jsonl.read_text().splitlines()] == [1, 2]


def test_cancel_stops_after_the_run_in_progress_and_resumes(tmp_path, ckroot):
    stop = threading.Event()
    seen = []

    def after(record):
        seen.append(record)
        if len(seen) == 2:
            stop.set()

    grid = Grid(**{**TINY, "shards": [1], "caches": ["warm"]})
    part = sweep(tmp_path, grid, device="cpu", root=ckroot, progress=False, cancel=stop, on_record=after)
    assert part.cancelled and len(part.records) == 2
    rest = sweep(tmp_path, grid, device="cpu", root=ckroot, progress=False)
    assert rest.resumed == 2 and len(rest.records) == len(grid.cells())


def test_a_bad_results_line_is_named(tmp_path):
    (tmp_path / "sweep.jsonl").write_text('{"key": "a", "status": "ok"}\nnot json\n{"key": "b"}\n')
    with pytest.raises(SweepError, match=r"sweep.jsonl: line 2"):
        read_records(tmp_path)


# --- the report and the CLI ---------------------------------------------------------------------


def test_report_tables_and_figures(done, tmp_path):
    out, grid, result = done
    made = report(out, tmp_path / "report")
    text = made.markdown.read_text()
    for heading in ("## Best configuration per path", "### I/O size", "### Threads", "## Shard-count scaling",
                    "## Not measured"):
        assert heading in text
    best = best_configurations(result.records)
    for (path, cache, device), (config, runs) in best.items():
        assert f"| {path} | {cache} | {device} |" in text
    assert "gds is unavailable here" in text
    assert made.figures and all(f.suffix == ".png" and f.stat().st_size > 1000 for f in made.figures)
    names = {f.name for f in made.figures}
    assert "throughput-best.png" in names and any(n.startswith("heatmap-host-direct") for n in names)
    assert any(n.startswith("scaling-shards") for n in names)
    assert all(f"]({f.name})" in text for f in made.figures)
    from_csv = report(out / "sweep.csv", tmp_path / "csv")
    assert from_csv.text.split("## Sensitivity")[0].split("\n", 3)[3] == text.split("## Sensitivity")[0].split("\n", 3)[3]


def test_cli_sweep_and_report(tmp_path, ckroot, capsys):
    out = tmp_path / "cli"
    assert cli.main(["sweep", str(out), "--datapaths", "host-direct", "--io-sizes", "1MiB", "--threads", "1",
                     "--shards", "1", "--caches", "warm", "--repeats", "2", "--size", "1MiB",
                     "--root", str(ckroot), "--no-progress", "--report"]) == 0
    said = capsys.readouterr().out
    assert "2 measured" in said and (out / "report.md").exists()
    assert cli.main(["report", str(out / "sweep.jsonl"), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.md").exists()
    assert cli.main(["report", str(tmp_path / "nothing-here")]) == 2


def test_paths_sweep_their_own_options_only(tmp_path, ckroot):
    grid = Grid(datapaths=["host-direct", "pinned-bounce"], io_sizes=["64KiB"], threads=[2], shards=[1],
                caches=["warm"], repeats=1, size="1MiB", options={"buffers_per_thread": [1, 3]})
    cells = grid.cells()
    assert [(c.datapath, c.options) for c in cells] == [
        ("host-direct", ()), ("pinned-bounce", (("buffers_per_thread", 1),)),
        ("pinned-bounce", (("buffers_per_thread", 3),))]
    assert len({c.key("x", "cpu") for c in cells}) == 3
    result = sweep(tmp_path, grid, device="cpu", root=ckroot, progress=False)
    pinned = [r for r in result.ok() if r["datapath"] == "pinned-bounce"]
    assert sorted(r["buffers_per_thread"] for r in pinned) == [1, 3]
    assert sorted(r["staging_bytes"] for r in pinned) == [2 * (64 << 10), 6 * (64 << 10)]
    with pytest.raises(SweepError, match="no path of this grid has the option"):
        Grid(datapaths=["host-direct"], options={"buffers_per_thread": [2]})
