"""The cold-start model: arithmetic with known answers, bottlenecks, scaling, calibration, records files."""

from __future__ import annotations

import json
from dataclasses import replace as replace_

import pytest

from gdslab import coldstart
from gdslab.coldstart import GB, Params, bounce, calibrate, gds, model_bytes, project
from gdslab.errors import GdslabError

MINUTE = 60.0


def test_model_bytes_405b():
    bf16 = model_bytes("llama-3.1-405b", "bf16")
    assert bf16 == pytest.approx(810e9, rel=0.01)
    assert model_bytes("llama-3.1-405b", "fp8_e4m3") * 2 == bf16
    assert model_bytes("llama-3.1-8b", "bf16") == pytest.approx(16.06e9, rel=0.01)
    with pytest.raises(ValueError, match="unknown model"):
        model_bytes("gpt-5", "bf16")
    with pytest.raises(ValueError, match="unknown dtype"):
        model_bytes("llama-3.1-405b", "int3")


def test_storage_throughput_is_capacity_times_tier():
    assert coldstart.storage_gbps(Params(storage_capacity_tib=4.8, storage_tier_mbps_per_tib=250)) == pytest.approx(1.2)
    assert coldstart.storage_gbps(Params(storage_capacity_tib=100, storage_tier_mbps_per_tib=1000)) == pytest.approx(100)
    assert coldstart.client_gbps(Params(node_network_gbit=3200, client_max_gbit=1200)) == pytest.approx(150)
    assert coldstart.client_gbps(Params(node_network_gbit=400, client_max_gbit=1200)) == pytest.approx(50)


def test_bounce_serial_is_sum_of_bytes_over_rates():
    p = Params(bounce_stream_read_gbps=1.0, cpu_materialize_gbps=4.0, pageable_h2d_gbps=10.0)
    n = model_bytes() / GB
    result = bounce(p)
    assert [s.seconds for s in result.stages] == pytest.approx([n / 1.0, n / 4.0, n / 10.0])
    assert result.seconds == pytest.approx(n / 1.0 + n / 4.0 + n / 10.0)
    assert result.bottleneck.startswith("read:") and "buffered read stream" in result.bottleneck
    overlapped = bounce(replace_(p, bounce_overlap=True))
    assert overlapped.seconds == pytest.approx(n / 1.0)
    assert overlapped.gbps == pytest.approx(1.0)


def test_gds_is_per_gpu_bytes_over_slowest_limit():
    # 100 TiB × 1000 MB/s/TiB = 100 GB/s over 8 GPUs = 12.5 GB/s each; network 150/8 = 18.75; link 53.
    p = Params(storage_capacity_tib=100, storage_tier_mbps_per_tib=1000)
    result = gds(p)
    assert result.stages[0].nbytes == pytest.approx(model_bytes() / 8)
    assert result.seconds == pytest.approx(model_bytes() / (100 * GB))
    assert "file system" in result.bottleneck
    # A huge file system: the per-client network cap (1200 Gbit/s = 150 GB/s) binds next.
    big = gds(replace_(p, storage_capacity_tib=1000))
    assert big.seconds == pytest.approx(model_bytes() / (150 * GB))
    assert "client network" in big.bottleneck
    # Without the client cap and with a faster network, the PCIe links bind: 8 × 53 GB/s.
    link = gds(replace_(p, storage_capacity_tib=1000, client_max_gbit=1e6, node_network_gbit=1e6))
    assert link.seconds == pytest.approx(model_bytes() / (8 * 53 * GB))
    assert "PCIe" in link.bottleneck


def test_bottleneck_follows_the_slowest_stage():
    slow_copy = bounce(Params(pageable_h2d_gbps=0.5, bounce_overlap=True))
    assert slow_copy.slowest.name.startswith("copy:") and "pageable copy" in slow_copy.bottleneck
    slow_cpu = bounce(Params(cpu_materialize_gbps=0.25))
    assert slow_cpu.slowest.name.startswith("materialize:")
    small_fs = bounce(Params(storage_capacity_tib=1.2, storage_tier_mbps_per_tib=125))  # 0.15 GB/s
    assert "file system" in small_fs.bottleneck
    assert small_fs.stages[0].gbps == pytest.approx(0.15)


def test_scaling_with_storage_and_gpus():
    base = Params(storage_capacity_tib=24, storage_tier_mbps_per_tib=1000)
    assert gds(replace_(base, storage_capacity_tib=48)).seconds == pytest.approx(gds(base).seconds / 2)
    # Storage-bound: more GPUs do not help, the file system is shared.
    assert gds(replace_(base, nodes=2)).seconds == pytest.approx(gds(base).seconds)
    # Link-bound (unlimited storage and network): twice the GPUs, half the time.
    free = replace_(base, storage_capacity_tib=1e6, client_max_gbit=1e9, node_network_gbit=1e9)
    assert gds(replace_(free, gpus_per_node=4)).seconds == pytest.approx(2 * gds(free).seconds)
    assert gds(replace_(free, nodes=2)).seconds == pytest.approx(gds(free).seconds / 2)
    # The bounce: each node reads its own half, so two nodes halve the time too.
    assert bounce(replace_(base, nodes=2)).seconds == pytest.approx(bounce(base).seconds / 2)
    # More readers speed up the read stage in proportion.
    one, four = bounce(Params()), bounce(Params(bounce_readers_per_node=4))
    assert four.stages[0].seconds == pytest.approx(one.stages[0].seconds / 4)


def test_warm_page_cache_skips_the_read_only_for_the_bounce():
    cold, warm = project(Params()), project(Params(resident_fraction=1.0))
    assert warm["bounce"].stages[0].seconds == 0.0
    assert warm["bounce"].seconds == pytest.approx(cold["bounce"].seconds - cold["bounce"].stages[0].seconds)
    assert warm["gds"].seconds == cold["gds"].seconds


def test_defaults_tell_the_story():
    """The motivating claim follows from the stated defaults: minutes for the bounce, seconds for GDS."""
    results = project(Params())
    assert 10 * MINUTE <= results["bounce"].seconds <= 20 * MINUTE
    assert results["gds"].seconds < MINUTE
    assert all(r.label == "projection" and r.record()["label"] == "projection" for r in results.values())
    assert results["bounce"].fits_in_hbm
    assert not gds(Params(hbm_per_gpu_gb=80)).fits_in_hbm  # bf16 405B does not fit 8×H100


def test_assumptions_list_every_field_with_unit_and_source():
    rows = {a.name: a for a in coldstart.assumptions()}
    for name in ("storage_capacity_tib", "storage_tier_mbps_per_tib", "h2d_link_gbps", "bounce_stream_read_gbps",
                 "pageable_h2d_gbps", "cpu_materialize_gbps", "node_network_gbit", "gpus_per_node"):
        assert rows[name].status == "assumed" and rows[name].source and rows[name].unit
    assert rows["gds_per_gpu_gbps"].status == "unset"
    assert rows["model_bytes"].status == "computed" and rows["model_bytes"].value == model_bytes()
    assert "measured" not in rows
    assert "storage_tier_mbps_per_tib" in coldstart.table()


def test_bad_params_are_refused():
    with pytest.raises(ValueError, match="gpus_per_node"):
        Params(gpus_per_node=0)
    with pytest.raises(ValueError, match="storage_capacity_tib"):
        Params(storage_capacity_tib=-1)
    with pytest.raises(ValueError, match="resident_fraction"):
        Params(resident_fraction=1.5)
    with pytest.raises(ValueError, match="unknown dtype"):
        Params(dtype="int3")


def _record(datapath, device, gbps, resident=0.0, effective="", **extra):
    return {"datapath": datapath, "device": device, "gbps": gbps, "resident_before": resident,
            "effective": effective or datapath, **extra}


def test_calibrate_replaces_the_right_parameters():
    records = [
        _record("gds", "cuda:0", 5.0, effective="gds: GDS proper: GDS 100.0% of bytes", gds_share=1.0),
        _record("gds", "cuda:1", 7.0, effective="gds: GDS proper: GDS 100.0% of bytes", gds_share=1.0),
        _record("gds", "cuda:0", 9.0, effective="gds: GDS proper: GDS 97.0% of bytes", gds_share=0.97),
        _record("pinned-bounce", "cuda:0", 40.0, resident=1.0),
        _record("pageable-bounce", "cuda:0", 8.0, resident=1.0),
        _record("pageable-bounce", "cuda:0", 2.0, resident=0.0),  # cold: not a copy rate
        _record("safetensors", "cpu", 3.0, resident=1.0),
        _record("safetensors", "cpu", 0.7, resident=0.0),
    ]
    p = calibrate(records)
    assert p.gds_per_gpu_gbps == 7.0  # the median
    assert p.h2d_link_gbps == 40.0
    assert p.pageable_h2d_gbps == 8.0
    assert p.cpu_materialize_gbps == 3.0
    assert p.bounce_stream_read_gbps == 0.7
    assert p.storage_capacity_tib == Params().storage_capacity_tib  # nothing measures storage size
    rows = {a.name: a for a in coldstart.assumptions(p)}
    assert {n for n, a in rows.items() if a.status == "measured"} == {
        "gds_per_gpu_gbps", "h2d_link_gbps", "pageable_h2d_gbps", "cpu_materialize_gbps", "bounce_stream_read_gbps"}
    assert "median of 3 gds" in rows["gds_per_gpu_gbps"].source
    assert rows["bounce_readers_per_node"].status == "assumed"
    result = gds(p)
    assert result.measured == tuple(sorted(p.measured)) and result.label == "projection"
    assert "file system" in result.bottleneck  # the default storage share (6 GB/s) is below the measured 7
    roomy = gds(replace_(p, storage_capacity_tib=480))
    assert "cuFile read rate 7" in roomy.bottleneck
    assert roomy.seconds == pytest.approx(model_bytes() / 8 / (7 * GB))


def test_calibrate_skips_what_does_not_measure_the_parameter():
    records = [
        _record("gds", "cuda:0", 3.0, effective="gds: compatibility mode: POSIX 100.0% of bytes", gds_share=0.0),
        _record("gds", "cuda:0", 3.0, effective="gds: mixed: GDS 60.0% of bytes, POSIX 40.0%", gds_share=0.6),
        _record("gds", "cuda:0", 3.0, effective="GDS (cuFile, nvidia-fs DMA)"),  # a label, no counted bytes
        _record("gds", "cuda:0", 3.0, effective="kvikio", gds_share="n/a"),
        _record("gds", "cpu", 3.0),
        _record("pinned-bounce", "cuda:0", 30.0, resident=0.5),  # mixed cache state
        _record("pinned-bounce", "cuda:0", 30.0, resident=1.0, cache="partial"),  # the loader's label wins
        _record("pinned-bounce", "cuda:0", 30.0, resident=0.0),  # cold: includes the storage read
        _record("host-direct", "cpu", 9.0),  # the host analogue of GDS is no per-GPU rate
        _record("safetensors", "cuda:0", 2.0, resident=1.0),
        {"label": "projection", "datapath": "gds", "device": "cuda:0", "gbps": 99.0},
        {"datapath": "gds", "device": "cuda:0", "gbps": "n/a"},
        {"unrelated": True},
    ]
    p = calibrate(records)
    assert p == Params() and p.measured == {}


def test_calibrate_reads_csv_style_strings_and_cache_labels():
    records = [{"datapath": "pageable-bounce", "device": "cuda:0", "gbps": "6.5", "cache": "warm"},
               {"datapath": "safetensors", "device": "cpu", "gbps": "1.5", "resident_before": "0.0"}]
    p = calibrate(records, Params(dtype="fp8_e4m3"))
    assert p.pageable_h2d_gbps == 6.5 and p.bounce_stream_read_gbps == 1.5 and p.dtype == "fp8_e4m3"
    again = calibrate([], p)
    assert again.measured == p.measured  # earlier measurements stay labelled


def test_read_records_formats(tmp_path):
    rows = [_record("gds", "cuda:0", 5.0), _record("safetensors", "cpu", 1.0)]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "b.json").write_text(json.dumps({"records": rows[:1]}))
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.csv").write_text("datapath,device,gbps,resident_before\nsafetensors,cpu,2.5,1.0\n")
    (tmp_path / "env.json").write_text(json.dumps({"gpus": 0}))  # not a record: contributes nothing
    (tmp_path / "notes.txt").write_text("ignored")
    found = coldstart.find_records(tmp_path)
    assert len(found) == 2 + 1 + 2 + 1
    assert found[-1] == {"datapath": "safetensors", "device": "cpu", "gbps": "2.5", "resident_before": "1.0"}
    assert calibrate(found).cpu_materialize_gbps == 2.5
    assert coldstart.find_records(tmp_path / "absent") == []


def test_read_records_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('[{"datapath": "gds",')
    with pytest.raises(GdslabError, match="broken.json: not valid JSON"):
        coldstart.read_records(bad)
    odd = tmp_path / "odd.json"
    odd.write_text("[1, 2]")
    with pytest.raises(coldstart.ResultsError, match="odd.json: expected a list of records"):
        coldstart.read_records(odd)
    with pytest.raises(coldstart.ResultsError, match="missing.json: cannot read it"):
        coldstart.read_records(tmp_path / "missing.json")
    (tmp_path / "good.json").write_text(json.dumps([_record("gds", "cuda:0", 5.0)]))
    with pytest.raises(coldstart.ResultsError, match="broken.json"):
        coldstart.find_records(tmp_path)
    skipped: list[coldstart.ResultsError] = []
    assert coldstart.find_records(tmp_path, skipped) == [_record("gds", "cuda:0", 5.0)]
    assert sorted(e.path.name for e in skipped) == ["broken.json", "odd.json"]


def test_format_seconds():
    assert coldstart.format_seconds(16.94) == "16.9 s"
    assert coldstart.format_seconds(1080) == "18.0 min"
    assert coldstart.format_seconds(3 * 3600) == "3.00 h"


def test_plot_says_projection():
    from gdslab.plots import plot_cold_start

    results = [bounce(Params()), gds(Params())]
    fig = plot_cold_start(results)
    ax = fig.axes[0]
    assert "projection" in ax.get_title() and "projection" in ax.get_xlabel()
    assert [round(b.get_width(), 6) for b in ax.patches] == [round(r.seconds, 6) for r in results]
    assert all("projection" in t.get_text() for t in ax.texts)


def test_record_and_summary_are_labelled():
    result = bounce(Params())
    record = result.record()
    assert record["label"] == "projection" and record["seconds"] == pytest.approx(result.seconds)
    assert json.loads(json.dumps(record)) == record
    assert result.summary().startswith("bounce [projection]")
    assert sum(row["binding"] for row in result.breakdown()) == len(result.stages)


def test_calibrate_from_a_real_load_record(tmp_path):
    """A record written by gdslab.load itself (no hand-made keys) calibrates the CPU-side rate."""
    import gdslab
    from gdslab.synthetic import write_checkpoint

    folder = write_checkpoint(tmp_path / "ckpt", "3MiB", shards=2, seed=3)
    gdslab.load(folder, datapath="safetensors", device="cpu")  # brings the files into the page cache
    record = gdslab.load(folder, datapath="safetensors", device="cpu").record()
    assert record["cache"] == "warm"
    p = calibrate([json.loads(json.dumps(record))])
    assert p.cpu_materialize_gbps == pytest.approx(record["gbps"])
    assert set(p.measured) == {"cpu_materialize_gbps"}
