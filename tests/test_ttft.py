"""Time to first token: the stages on one clock, the same token as from_pretrained, the CLI and the charts."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import require_eviction
from gdslab import write_checkpoint
from gdslab.cli import main
from gdslab.plots import plot_first_token, plot_timeline
from gdslab.ttft import BASELINE, LANE, STAGES, compare, first_token, from_pretrained_first_token, medians

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ttft") / "ckpt", size="4MiB", shards=2)


def test_stages_lie_on_one_clock_and_the_token_is_from_pretrained_s(folder):
    run = first_token(folder, "host-direct", "cpu", cache="warm", threads=2)
    base = from_pretrained_first_token(folder, "cpu", cache="warm")
    assert list(run.stages) == list(STAGES) and all(s > 0 for s in run.stages.values())
    assert list(base.stages) == [BASELINE, "forward", "token"]
    assert run.token == base.token  # the same weights and prompt pick the same greedy token
    assert run.cache == "warm" and run.load.datapath == "host-direct"
    lane = [e for e in run.events if e.thread == LANE]
    assert [e.stage for e in lane] == list(STAGES)
    assert all(a.end <= b.start for a, b in zip(lane, lane[1:]))  # one after another
    weights = lane[1]
    reads = [e for e in run.events if e.thread != LANE]
    assert reads and all(weights.start <= e.start and e.end <= weights.end + 1e-6 for e in reads)
    assert run.seconds == pytest.approx(sum(run.stages.values()))


def test_cold_runs_are_measured_cold(folder):
    require_eviction(folder)
    run = first_token(folder, "pageable-bounce", "cpu", cache="cold", threads=2)
    assert run.cache == "cold" and run.resident_before < 0.05 and run.record()["asked"] == "cold"


def test_compare_interleaves_and_medians_group(folder):
    runs = compare(folder, ["host-direct"], "cpu", caches=("warm",), repeats=2, warmup=False, threads=2)
    assert [r.label for r in runs] == ["host-direct", BASELINE] * 2
    rows = medians(runs)
    assert {(r["label"], r["runs"]) for r in rows} == {("host-direct", 2), (BASELINE, 2)}
    for row in rows:
        group = [r.seconds for r in runs if r.label == row["label"]]
        assert min(group) <= row["seconds"] <= max(group)
    fig = plot_first_token(rows)
    assert len(fig.axes[0].patches) == 5 * 2  # a segment per stage (construct, weights, from_pretrained, forward, token) per bar
    assert plot_timeline(runs[0].events).axes


def test_missing_config_is_a_clear_error(folder, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in folder.glob("*.safetensors*"):
        (bare / f.name).write_bytes(f.read_bytes())
    (bare / "model.safetensors.index.json").write_text((folder / "model.safetensors.index.json").read_text())
    with pytest.raises(FileNotFoundError, match="no config.json"):
        first_token(bare, "host-direct", "cpu")


def test_cli_prints_a_record_per_run(folder, capsys):
    assert main(["ttft", str(folder), "--datapath", "host-direct", "--cache", "warm", "--no-baseline",
                 "--threads", "2", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 1 and lines[0]["label"] == "host-direct" and lines[0]["weights_s"] > 0
    assert lines[0]["device"] == str(torch.device("cpu"))
