"""The cold-start model: published scenarios from their published inputs, one input set, honest calibration."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from gdslab import coldstart as cs
from gdslab.coldstart import GB, Inputs, Scenario, Storage, calibrate, model_bytes, presets, project, scenarios

GIB = 2**30


FP8_405B = 453.8 * GIB  # Meta's FP8 release of Llama 3.1 405B, as the EKS benchmark streamed it (GiB)
BF16_405B = 811.7 * GB  # 405B × 2 bytes


# Each published row: its kind, the projected seconds from the figures the row's binding limit is made of
# (worked out here from the published numbers, not by the model), and whether it misses (>20%).
ROWS = [
    # key,            kind,         projected seconds (oracle),                         published s, misses
    ("gds-405b-fp8", "calibrated", FP8_405B / (94 * GIB), 6.0, False),                  # 94 GiB/s, same post
    ("cpu-405b-bf16", "assumed", BF16_405B / 1e9 + BF16_405B / 12e9, 900.0, False),     # 1 GB/s read, 12 GB/s copy
    ("vllm-fsx-tcp", "calibrated", FP8_405B / (260 * 2**20), 1767.0, False),            # ~260 MiB/s, same post
    ("s3-nvme", "calibrated", FP8_405B / 25e9 + FP8_405B / 5.30e9, 229.0, True),        # 200 Gbit/s, 5.30 GB/s
    ("runai-fsx-tcp", "assumed", FP8_405B / (5e9 / 8), 398.0, True),                    # 1 OST × one 5 Gbit/s flow
]


@pytest.mark.parametrize("key,kind,seconds,published_s,misses", ROWS, ids=[r[0] for r in ROWS])
def test_each_published_row_is_projected_from_its_inputs_and_says_what_it_is(key, kind, seconds, published_s, misses):
    row = {r.name: r for r in scenarios()}[key]
    assert row.kind == kind and row.basis
    assert row.projected_s == pytest.approx(seconds, rel=2e-3)
    assert row.published_s == published_s and row.ratio == pytest.approx(seconds / published_s, rel=2e-3)
    assert row.missed == misses
    if misses or kind == "calibrated":
        assert len(row.miss) > 80  # a miss is shown and explained; a calibrated row says it checks nothing
    if kind == "calibrated":
        assert "own published figure" in row.basis


def test_every_row_carries_calibrated_predicted_or_assumed():
    rows = scenarios()
    assert {r.kind for r in rows} <= set(cs.KINDS) and all(r.basis for r in rows)
    by = {r.name: r for r in rows}
    assert by["gds-70b-bf16"].kind == "predicted" and "calibrated on 'gds-405b-fp8'" in by["gds-70b-bf16"].basis
    assert "tcp_flows_per_server" in by["runai-fsx-tcp"].basis  # one TCP flow per server: an assumption
    assert "[copy stage, assumed] s3_client_gbit" in by["s3-nvme"].basis
    table = cs.scenarios_table(rows)
    for kind in cs.KINDS:
        assert f"**{kind}**" in table
    assert "(miss)" in table and "projection" in table


def test_every_calibration_input_names_its_row_and_the_rows_name_them():
    keys = {s.key for s in presets()}
    calibrations = [a for a in cs.assumptions() if a.status == "calibration"]
    assert {a.name for a in calibrations} == {"fsx_measured_gibps", "tcp_stream_mibps", "nvme_stream_gbps"}
    for a in calibrations:
        row = cs.input_meta(a.name)["calibrates"]
        assert row in keys and f"calibration: scenario '{row}'" in a.source
        assert a.name in next(s for s in presets() if s.key == row).calibrates


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


def test_file_servers_follow_the_published_layout():
    # 20 OSTs for 96 TiB (the AWS GDS post): 4,915.2 GiB per OST
    assert Storage("fsx-lustre", "tcp", 96.0).osts(Inputs()) == 20
    assert Storage("fsx-lustre", "tcp", 4800 / 1024).osts(Inputs()) == 1  # 4,800 GiB holds one such server
    assert Storage("fsx-lustre", "tcp", 48.0).osts(Inputs()) == 10


def test_tcp_clients_get_one_flow_per_storage_server():
    tcp = next(s for s in presets() if s.key == "runai-fsx-tcp")  # the 4,800 GiB file system over TCP
    p = project(tcp)
    assert "1 OST(s) × 1 TCP flow(s) of 5 Gbit/s" in p.bottleneck
    assert p.slowest.gbps == pytest.approx(5 / 8)
    two = project(tcp, Inputs(tcp_flows_per_server=2))  # what the published ~1.1 GiB/s would need
    assert two.slowest.gbps == pytest.approx(2 * 5 / 8)


def test_s5cmd_runs_numworkers_files_with_concurrency_parts_each():
    # --numworkers: files in flight (default 256); --concurrency: parts of each file (50 in the benchmark)
    s3 = next(s for s in presets() if s.key == "s3-nvme")
    copy = project(s3).stages[0]
    files = -(-model_bytes("llama-3.1-405b", "fp8_e4m3") // int(5e9))  # ≤5 GB files: 98 of them
    parts = min(50, -(-int(5e9) // int(100e6)))  # a ~5 GB file in 100 MB parts: 50 in flight
    requests = [lim for lim in copy.limits if "s5cmd" in lim.name][0]
    assert f"s5cmd {files} files × {parts} parts in flight" in requests.name
    assert requests.gbps == pytest.approx(files * parts * 87.5 / 1000)  # hundreds of GB/s: S3 does not bind
    assert copy.binding.name == "node network to S3 200 Gbit/s" and copy.gbps == 25.0
    few = Inputs(s5cmd_numworkers=2, s5cmd_concurrency=1)
    assert project(s3, few).stages[0].gbps == pytest.approx(2 * 1 * 87.5 / 1000)


def test_the_published_setups_ceiling_is_the_client_not_capacity_times_tier():
    ceilings = cs.fsx_ceilings(96.0, 1000, "efa+gds")
    assert [round(c.gbps, 1) for c in ceilings] == [96.0, 150.0, 249.6, 424.0]
    assert ceilings[0].name.startswith("disk") and 94 * GIB / GB > ceilings[0].gbps  # measured beats the disk tier
    assert "network" in ceilings[2].name and "2,621 GiB" in ceilings[2].name  # 96 × 27.3 GiB of server RAM
    with pytest.raises(ValueError, match="tier"):
        cs.fsx_ceilings(96.0, 300)


def test_startup_besides_the_weights():
    steps = cs.startup()
    assert {s.name for s in steps} >= {"CUDA graph capture", "KV-cache set-up and warm-up"}
    assert all(s.seconds > 0 and s.source for s in steps)
    p = project(presets()[0])
    assert cs.time_to_serve(p) == pytest.approx(p.seconds + sum(s.seconds for s in steps))
    assert cs.time_to_serve(p) > 10 * p.seconds  # once weights take seconds, the rest dominates


def test_every_input_has_a_unit_a_status_and_a_source():
    rows = cs.assumptions()
    assert {r.status for r in rows} <= set(cs.STATUSES)
    assert all(r.unit and r.source for r in rows)
    assert "published" in cs.scenarios_table(scenarios()) and "projection" in cs.scenarios_table(scenarios())


def _record(datapath, device, gbps, cache, **extra):
    return {"datapath": datapath, "device": device, "gbps": gbps, "cache": cache, **extra}


PROVEN = {"gds_label": "GDS (DMA proven)"}


def test_calibration_puts_each_rate_where_it_belongs():
    records = [
        _record("gds", "cuda:0", 5.0, "cold", **PROVEN),
        _record("gds", "cuda:1", 7.0, "cold", **PROVEN),
        _record("gds", "cuda:0", 9.0, "cold", **PROVEN),
        _record("pinned-bounce", "cuda:0", 40.0, "warm"),
        _record("pageable-bounce", "cuda:0", 8.0, "warm"),
        _record("safetensors", "cpu", 3.0, "warm"),
        _record("host-direct", "cpu", 0.9, "cold"),
    ]
    inputs = calibrate(records)
    assert inputs.gds_per_gpu_gbps == 7.0 and inputs.pcie_gbps == 40.0 and inputs.pageable_h2d_gbps == 8.0
    assert inputs.host_copy_gbps == 3.0 and inputs.local_disk_gbps == 0.9
    # a cold host load is this machine's disk: it never becomes a network file system's stream
    assert inputs.tcp_stream_mibps == Inputs().tcp_stream_mibps and inputs.efa_stream_gbps == Inputs().efa_stream_gbps
    rows = {a.name: a for a in cs.assumptions(inputs)}
    assert rows["local_disk_gbps"].status == "measured" and "local disk" in rows["local_disk_gbps"].source
    p = project(presets()[0], inputs)
    assert p.measured and any("cuFile 7.00 GB/s (measured)" in limit.name for limit in p.stages[0].limits)


@pytest.mark.parametrize("label,counts", [
    ({"gds_label": "GDS (DMA proven)"}, True),
    ({"gds_kind": "GDS (DMA proven)"}, True),
    ({"gds_label": "cuFile (DMA not proven)", "gds_share": 1.0}, False),
    ({"gds_label": "POSIX (KvikIO fallback: compat mode ON)"}, False),
    ({"gds_kind": "GDS proper", "gds_share": 1.0}, False),  # today's label: KvikIO's counter, not DMA
    ({"gds_share": 1.0}, False),
    ({"effective": "GDS (DMA proven)"}, False),  # free text is not the label
    ({"gds_label": "GDS (DMA proven) "}, False),  # exactly that label
], ids=lambda v: str(v))
def test_only_runs_labelled_dma_proven_calibrate_the_gds_input(label, counts):
    record = _record("gds", "cuda:0", 11.0, "cold", **label)
    inputs = calibrate([record])
    assert (inputs.gds_per_gpu_gbps == 11.0) == counts
    assert ("gds_per_gpu_gbps" in inputs.measured) == counts


def test_the_dma_proven_label_is_the_gds_paths_own():
    evidence = pytest.importorskip("gdslab.gds_evidence")
    assert cs.GDS_DMA_PROVEN == evidence.DMA_PROVEN


def test_no_record_counts_twice():
    records = [_record(path, device, 1.0, cache, **label)
               for path in ("gds", "pinned-bounce", "pageable-bounce", "safetensors", "host-direct")
               for device in ("cpu", "cuda:0") for cache in ("cold", "warm", "partial")
               for label in ({}, PROVEN, {"gds_kind": "GDS proper"})]
    for record in records:
        assert sum(cs.matches(rule, record) for rule in cs.RULES) <= 1, record


def test_calibration_skips_what_does_not_measure_the_input():
    records = [
        _record("gds", "cuda:0", 3.0, "cold", gds_share=0.0),  # compatibility mode: a bounce inside
        _record("gds", "cuda:0", 3.0, "cold", gds_kind="GDS proper", gds_share=1.0),  # counted, DMA not proven
        _record("gds", "cuda:0", 3.0, "warm", **PROVEN),  # warm: the page cache, not the device's read
        _record("pinned-bounce", "cuda:0", 30.0, "partial"),
        _record("pinned-bounce", "cuda:0", 30.0, "cold"),  # includes the storage read
        _record("safetensors", "cuda:0", 2.0, "warm"),
        _record("host-direct", "cpu", 2.0, "warm", simulated=True, world=4),  # a simulated rank
        {"label": "projection", "datapath": "gds", "device": "cuda:0", "gbps": 99.0, "cache": "cold", **PROVEN},
        {"datapath": "gds", "device": "cuda:0", "gbps": "n/a", "cache": "cold", **PROVEN},
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
