"""The cold-start model: published scenarios from their published inputs, one input set, honest calibration."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from gdslab import coldstart as cs
from gdslab.coldstart import GB, Inputs, Scenario, Storage, calibrate, model_bytes, presets, project, scenarios

GIB = 2**30


def test_every_published_scenario_within_20_percent_with_one_input_set():
    rows = scenarios()
    published = [r for r in rows if r.published_s]
    assert len(published) >= 5
    for r in published:
        assert 0.8 <= r.ratio <= 1.2, (r.name, r.projected_s, r.published_s)
    checks = [r for r in published if r.check == "check"]
    assert len(checks) >= 3  # most rows are checks, not the runs an input was taken from
    assert {r.name for r in rows if r.check == "no published figure"} == {"gds-70b-bf16", "cpu-70b-bf16"}


def test_every_calibration_point_names_the_input_it_gave():
    names = {f for f in Inputs.__dataclass_fields__}
    for s in presets():
        if s.calibrates:
            assert s.calibrates.split()[0] in names
            source = Inputs.__dataclass_fields__[s.calibrates.split()[0]].metadata["source"]
            assert "calibration" in source and s.source.split(",")[0] in source


def test_the_bytes_are_those_of_the_real_releases():
    assert model_bytes("llama-3.1-405b", "bf16") / GB == pytest.approx(811.7, abs=0.5)
    assert model_bytes("llama-3.1-405b", "fp8_e4m3") / GIB == pytest.approx(453.8, abs=0.5)  # Meta's FP8 release
    assert model_bytes("llama-3.1-405b", "fp8_e4m3") != model_bytes("llama-3.1-405b", "bf16") // 2


def test_gds_needs_efa_on_lustre():
    s = replace(presets()[0], storage=Storage("fsx-lustre", "tcp", 96.0, 1000.0))
    p = project(s)
    assert p.unavailable and "RDMA" in p.unavailable and p.seconds == float("inf")
    assert "not possible" in p.summary()


def test_the_binding_limit_moves_with_the_file_system():
    base = presets()[0]
    measured = project(base)
    assert "FSx measured 94 GiB/s" in measured.bottleneck
    small = project(replace(base, storage=Storage("fsx-lustre", "efa+gds", 4.8, 1000.0)))
    assert small.seconds == pytest.approx(measured.nbytes / (4.8 * GB))  # capacity × tier binds
    big = project(replace(base, storage=Storage("fsx-lustre", "efa+gds", 2000.0, 1000.0)))
    assert "client over EFA+GDS 1200" in big.bottleneck


def test_sliced_on_the_fly_reads_more_with_gds():
    base = presets()[0]
    sliced = project(replace(base, layout="sliced (span)"))
    amp = cs.read_amplification("llama-3.1-405b", 8)
    assert 3.3 < amp < 3.6  # row-parallel spans at TP 8, from gdslab.plan on the real shapes
    assert sliced.seconds == pytest.approx(project(base).seconds * amp)


def test_tcp_clients_get_one_flow_per_storage_server():
    tcp = presets()[4]  # Run:ai on the 4,800 GiB file system over TCP
    p = project(tcp)
    assert "2 server(s) × one TCP flow of 5 Gbit/s" in p.bottleneck
    assert p.slowest.gbps == pytest.approx(2 * 5 / 8)


def test_staging_shows_both_stages():
    s3 = next(s for s in presets() if s.key == "s3-nvme")
    stages = project(s3).stages
    assert [st.name.split(":")[0] for st in stages] == ["copy", "read"]
    assert "50 requests in flight × 87.5 MB/s" in stages[0].binding.name


def test_startup_besides_the_weights():
    steps = cs.startup()
    assert {s.name for s in steps} >= {"CUDA graph capture", "KV-cache set-up and warm-up"}
    assert all(s.seconds > 0 and s.source for s in steps)
    p = project(presets()[0])
    assert cs.time_to_serve(p) == pytest.approx(p.seconds + sum(s.seconds for s in steps))
    assert cs.time_to_serve(p) > 10 * p.seconds  # once weights take seconds, the rest dominates


def test_every_input_has_a_unit_a_status_and_a_source():
    rows = cs.assumptions()
    assert {r.status for r in rows} <= {"published", "calibration", "assumed", "measured", "unset"}
    assert all(r.unit and r.source for r in rows)
    assert "published" in cs.scenarios_table(scenarios()) and "projection" in cs.scenarios_table(scenarios())


def _record(datapath, device, gbps, cache, **extra):
    return {"datapath": datapath, "device": device, "gbps": gbps, "cache": cache, **extra}


def test_calibration_puts_each_rate_where_it_belongs():
    records = [
        _record("gds", "cuda:0", 5.0, "cold", gds_share=1.0),
        _record("gds", "cuda:1", 7.0, "cold", gds_share=0.97),
        _record("gds", "cuda:0", 9.0, "cold", gds_share=1.0),
        _record("pinned-bounce", "cuda:0", 40.0, "warm"),
        _record("pageable-bounce", "cuda:0", 8.0, "warm"),
        _record("safetensors", "cpu", 3.0, "warm"),
        _record("host-direct", "cpu", 0.9, "cold"),
    ]
    inputs = calibrate(records)
    assert inputs.gds_per_gpu_gbps == 7.0 and inputs.pcie_gbps == 40.0 and inputs.pageable_h2d_gbps == 8.0
    assert inputs.host_copy_gbps == 3.0 and inputs.local_disk_gbps == 0.9
    # a cold host load is this machine's disk: it never becomes a network file system's stream
    assert inputs.tcp_stream_gbps == Inputs().tcp_stream_gbps and inputs.efa_stream_gbps == Inputs().efa_stream_gbps
    rows = {a.name: a for a in cs.assumptions(inputs)}
    assert rows["local_disk_gbps"].status == "measured" and "local disk" in rows["local_disk_gbps"].source
    p = project(presets()[0], inputs)
    assert p.measured and any("cuFile 7.00 GB/s (measured)" in limit.name for limit in p.stages[0].limits)


def test_no_record_counts_twice():
    records = [_record(path, device, 1.0, cache, gds_share=share)
               for path in ("gds", "pinned-bounce", "pageable-bounce", "safetensors", "host-direct")
               for device in ("cpu", "cuda:0") for cache in ("cold", "warm", "partial") for share in (0.0, 1.0)]
    for record in records:
        assert sum(cs.matches(rule, record) for rule in cs.RULES) <= 1, record


def test_calibration_skips_what_does_not_measure_the_input():
    records = [
        _record("gds", "cuda:0", 3.0, "cold", gds_share=0.0),  # compatibility mode: a bounce inside
        _record("gds", "cuda:0", 3.0, "cold", gds_share=0.6),  # mixed
        _record("gds", "cuda:0", 3.0, "cold", effective="GDS (cuFile, nvidia-fs DMA)"),  # a label, no counted bytes
        _record("pinned-bounce", "cuda:0", 30.0, "partial"),
        _record("pinned-bounce", "cuda:0", 30.0, "cold"),  # includes the storage read
        _record("safetensors", "cuda:0", 2.0, "warm"),
        _record("host-direct", "cpu", 2.0, "warm", simulated=True, world=4),  # a simulated rank
        {"label": "projection", "datapath": "gds", "device": "cuda:0", "gbps": 99.0, "cache": "cold", "gds_share": 1},
        {"datapath": "gds", "device": "cuda:0", "gbps": "n/a", "cache": "cold", "gds_share": 1.0},
        {"unrelated": True},
    ]
    inputs = calibrate(records)
    assert inputs == Inputs() and not inputs.measured


def test_find_records_reads_json_jsonl_and_csv(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([_record("pinned-bounce", "cuda:0", 40.0, "warm")]))
    (tmp_path / "b.jsonl").write_text(json.dumps(_record("pageable-bounce", "cuda:0", 8.0, "warm")) + "\n")
    (tmp_path / "c.csv").write_text("datapath,device,gbps,cache\nsafetensors,cpu,3.0,warm\n")
    (tmp_path / "bad.json").write_text("{nope")
    skipped = []
    records = cs.find_records(tmp_path, skipped)
    assert len(records) == 3 and len(skipped) == 1 and "bad.json" in str(skipped[0])
    assert calibrate(records).host_copy_gbps == 3.0
    with pytest.raises(cs.ResultsError, match="bad.json"):
        cs.find_records(tmp_path)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="pcie_gbps must be a positive"):
        Inputs(pcie_gbps=0)
    with pytest.raises(ValueError, match="unknown dtype"):
        Scenario("x", "x", dtype="int3")
    with pytest.raises(ValueError, match="layout"):
        Scenario("x", "x", layout="striped")
    with pytest.raises(ValueError, match="client"):
        Storage("fsx-lustre", "infiniband")
