"""The cold-start model where mutation testing found it unchecked (`make mutation`, docs/results/mutation.md).

Expected figures are independent of `gdslab.coldstart`: a published figure in its own unit with its
source, or a value worked by hand with the arithmetic beside it. Texts the reader sees (labels, units,
kinds, the words of a table) are pinned as written, and the figures quoted inside them are worked out
here by hand. Inputs as published (coldstart.Inputs defaults, see tests/test_published_inputs.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from gdslab import coldstart as cs
from gdslab.coldstart import Inputs, Storage

GIB, MIB = 2**30, 2**20
FP8 = 487_229_259_776  # Meta's FP8 release of Llama 3.1 405B, bytes (453.8 GiB)
BF16 = 811_706_777_600  # 405,853,388,800 parameters × 2 bytes
AWS = "AWS ML blog"
EKS = "A. Srirama (AWS)"


def _preset(key: str) -> cs.Scenario:
    return next(s for s in cs.presets() if s.key == key)


# --- a projection as a record and as text ---------------------------------------------------------


def test_a_projection_record_is_labelled_and_complete():
    record = cs.project(_preset("gds-405b-fp8")).record()
    read = "read: FSx for Lustre Persistent-2 → HBM by DMA"
    seconds = FP8 / (94 * GIB)  # 94 GiB/s as measured (AWS GDS post): 4.827 s
    assert record == {
        "label": "projection", "scenario": "gds-405b-fp8", "model": "llama-3.1-405b", "dtype": "fp8_e4m3",
        "layout": "pre-sharded", "loader": "fastsafetensors-gds", "nbytes": FP8,
        "seconds": pytest.approx(seconds), "bottleneck": f"{read}: FSx measured 94 GiB/s", "published_s": 6.0,
        "ratio": pytest.approx(seconds / 6.0), "measured": "", f"stage:{read}": pytest.approx(seconds)}
    measured = Inputs(measured={"pcie_gbps": "a run", "gds_per_gpu_gbps": "another"})
    assert cs.project(_preset("gds-405b-fp8"), measured).record()["measured"] == "gds_per_gpu_gbps,pcie_gbps"


def test_a_projection_summary_as_printed():
    s = cs.project(_preset("s3-nvme")).summary().splitlines()
    # 487.2 GB: 19.5 s at 200 Gbit/s = 25 GB/s; 91.9 s at 5.30 GB/s; 111.4 s in all
    assert s[0] == ("405B FP8 release copied from S3 to the node's NVMe (s5cmd), then loaded by vLLM [projection]: "
                    "487 GB (fp8_e4m3, whole files) by vllm-default from the node's NVMe (RAID0): 111.4 s; "
                    "bottleneck: read: node NVMe → host memory: one sequential reader on NVMe 5.3 GB/s")
    assert s[1] == ("    copy: S3 → node NVMe                        487.2 GB at   25.00 GB/s =    19.5 s"
                    "  [node network to S3 200 Gbit/s]")
    assert s[2] == ("    read: node NVMe → host memory               487.2 GB at    5.30 GB/s =    91.9 s"
                    "  [one sequential reader on NVMe 5.3 GB/s]")
    assert s[3].startswith("    published: 2 min 17 s download + 1 min 32 s loading (3.8 min) → projected/published "
                           "0.49; source: A. Srirama (AWS)")  # (137 + 92) s = 3.8 min; 111.4 / 229 = 0.49
    assert len(s) == 4
    nothing = cs.project(_preset("cpu-70b-bf16")).summary()
    assert "published" not in nothing.split("\n", 1)[1]  # no published figure, no line for it


@pytest.mark.parametrize("seconds,text", [
    (0.0, "0.0 s"), (119.94, "119.9 s"), (120.0, "2.0 min"), (7199.0, "120.0 min"), (7200.0, "2.00 h"),
    (math.inf, "—"), (math.nan, "—"),
])
def test_seconds_as_printed_at_the_unit_boundaries(seconds, text):
    assert cs.format_seconds(seconds) == text


def test_storage_and_client_rates_as_a_pair():
    efa = Storage("fsx-lustre", "efa", 96.0, 1000.0)
    assert cs.storage_gbps(efa, Inputs()) == (96.0, "FSx disk 96 TiB × 1000 MB/s/TiB")  # 96 TiB × 1 GB/s/TiB
    assert cs.client_gbps(efa, Inputs()) == (87.5, "client over EFA 700 Gbit/s")  # FSx: 700 Gbps with EFA
    assert cs.client_gbps(Storage("fsx-lustre", "tcp"), Inputs()) == (12.5, "client over TCP 100 Gbit/s")


# --- storage, client and stream limits ------------------------------------------------------------


def test_each_storage_kind_and_its_limit():
    inputs = Inputs()
    measured = cs.storage_limit(Storage("fsx-lustre", "efa+gds", 96.0, measured=True), inputs)
    assert measured.name == "FSx measured 94 GiB/s" and measured.inputs == ("fsx_measured_gibps",)
    assert measured.gbps == 94 * GIB / 1e9  # 100.93 GB/s: GiB, not GB (a 7% slip would be 94.0)
    disk = cs.storage_limit(Storage("fsx-lustre", "efa", 4.8, 125.0), inputs)
    assert disk.gbps == pytest.approx(0.6) and disk.inputs == ()  # 4.8 TiB × 125 MB/s/TiB
    nvme = cs.storage_limit(Storage("local-nvme"), inputs)
    assert nvme.name == "NVMe RAID0 (not binding)" and nvme.gbps == pytest.approx(8 * 5.30)
    assert nvme.inputs == ("nvme_stream_gbps",)
    s3 = cs.storage_limit(Storage("s3"), inputs)
    assert (s3.name, s3.gbps, s3.inputs) == ("node network to S3 200 Gbit/s", 25.0, ("s3_client_gbit",))
    with pytest.raises(ValueError, match=r"^the local disk's rate is not known: calibrate\(\) with a cold host load"):
        cs.storage_limit(Storage("local-disk"), inputs)
    local = cs.storage_limit(Storage("local-disk"), Inputs(local_disk_gbps=1.5))
    assert (local.name, local.gbps, local.inputs) == ("this machine's disk, measured 1.50 GB/s", 1.5,
                                                     ("local_disk_gbps",))


def test_the_node_network_caps_the_client():
    # a node with 400 Gbit/s of network and a client path of 1,200: the node's 50 GB/s binds
    limit = cs.client_limit(Storage("fsx-lustre", "efa+gds"), Inputs(node_network_gbit=400.0))
    assert (limit.name, limit.gbps, limit.inputs) == ("node network 400 Gbit/s", 50.0, ("node_network_gbit",))
    # equal: the client's own figure is named (1,200 Gbit/s = 150 GB/s either way)
    equal = cs.client_limit(Storage("fsx-lustre", "efa+gds"), Inputs(node_network_gbit=1200.0))
    assert (equal.name, equal.gbps, equal.inputs) == ("client over EFA+GDS 1200 Gbit/s", 150.0,
                                                      ("client_efa_gds_gbit",))
    efa = cs.client_limit(Storage("fsx-lustre", "efa"), Inputs())
    assert efa.inputs == ("client_efa_gbit",)


def test_one_sequential_reader_on_each_storage():
    vllm = cs.LOADERS["vllm-default"]
    stream = {k: cs._read_stage("read", 1e9, s, vllm, Inputs()).binding for k, s in {
        "nvme": Storage("local-nvme"), "tcp": Storage("fsx-lustre", "tcp", 96.0),
        "efa": Storage("fsx-lustre", "efa", 96.0)}.items()}
    assert (stream["nvme"].name, stream["nvme"].gbps) == ("one sequential reader on NVMe 5.3 GB/s", 5.30)
    assert stream["tcp"].name == "one sequential reader over TCP 260 MiB/s"
    assert stream["tcp"].gbps == 260 * MIB / 1e9 and stream["tcp"].inputs == ("tcp_stream_mibps",)  # 0.2726 GB/s
    assert (stream["efa"].name, stream["efa"].gbps) == ("one sequential reader over EFA 1 GB/s", 1.0)
    assert stream["efa"].inputs == ("efa_stream_gbps",)
    disk = cs._read_stage("read", 1e9, Storage("local-disk"), vllm, Inputs(local_disk_gbps=0.8)).binding
    assert (disk.name, disk.gbps) == ("this machine's disk, measured 0.80 GB/s", 0.8)


def test_a_measured_host_copy_binds_every_path_but_gds():
    inputs = Inputs(host_copy_gbps=0.5)
    stage = cs._read_stage("read", 1e9, Storage("local-nvme"), cs.LOADERS["vllm-default"], inputs)
    assert stage.binding.name == "page cache → tensors 0.50 GB/s (measured)" and stage.seconds == 2.0  # 1 GB / 0.5
    assert stage.binding.inputs == ("host_copy_gbps",)
    gds = cs._read_stage("read", 1e9, Storage("fsx-lustre", "efa+gds", 96.0, measured=True),
                         cs.LOADERS["fastsafetensors-gds"], inputs)
    assert all("page cache" not in lim.name for lim in gds.limits)


def test_gds_reads_by_every_pcie_link_and_the_measured_cufile_rate():
    gds = cs.LOADERS["fastsafetensors-gds"]
    big = Storage("fsx-lustre", "efa+gds", 2000.0)  # 2,000 GB/s of disk: neither disk nor client binds first
    links = cs._read_stage("read", 1e9, big, gds, Inputs(client_efa_gds_gbit=8000.0, node_network_gbit=8000.0))
    assert links.binding.name == "8 PCIe links × 53 GB/s" and links.gbps == 8 * 53.0  # 424 GB/s
    assert links.binding.inputs == ("pcie_gbps",)
    cufile = cs._read_stage("read", 1e9, big, gds, Inputs(gds_per_gpu_gbps=5.0))
    assert cufile.binding.name == "8 GPUs × cuFile 5.00 GB/s (measured)" and cufile.gbps == 40.0
    assert cufile.binding.inputs == ("gds_per_gpu_gbps",)


def test_s3_requests_in_flight_for_a_parallel_reader():
    # Run:ai at concurrency 32 on each of 8 ranks: 256 requests × 87.5 MB/s = 22.4 GB/s
    stage = cs._read_stage("read", 1e9, Storage("s3"), cs.LOADERS["runai-streamer"], Inputs())
    limit = next(lim for lim in stage.limits if "requests" in lim.name)
    assert (limit.name, limit.gbps, limit.inputs) == ("256 requests in flight × 87.5 MB/s", 22.4, ("s3_request_mbps",))
    assert stage.binding is limit  # below the node's 25 GB/s to S3
    s5 = cs._read_stage("copy", 12e9, Storage("s3"), cs.LOADERS["s5cmd"], Inputs())
    s5_limit = next(lim for lim in s5.limits if "s5cmd" in lim.name)
    assert s5_limit.inputs == ("s5cmd_numworkers", "s5cmd_concurrency", "s5cmd_part_mb", "release_file_gb",
                               "s3_request_mbps")


@pytest.mark.parametrize("nbytes,expected", [
    # (bytes, (files in flight, parts per file, requests)): files of at most 5 GB, parts of 100 MB, ≤ 50 parts
    (1, (1, 1, 1)),  # one file of 1 byte: one part
    (5e9, (1, 50, 50)),  # exactly one 5 GB file: 50 parts of 100 MB
    (5e9 + 1, (2, 26, 52)),  # one byte more: two files of 2.5 GB, 25 parts and a byte → 26
    (100e6, (1, 1, 1)),  # exactly one part
    (100e6 + 1, (1, 2, 2)),  # a byte over: two parts
    (2000 * 5e9, (256, 50, 12_800)),  # 2,000 files, 256 in flight (--numworkers)
])
def test_s5cmd_requests_at_exact_multiples_and_one_over(nbytes, expected):
    assert cs._s5cmd_requests(nbytes, Inputs()) == expected


def test_tcp_flows_to_each_server_on_a_larger_file_system():
    # 96 TiB over TCP: 20 OSTs × 1 flow × 5 Gbit/s = 12.5 GB/s, the same as the 100 Gbit/s client cap
    stage = cs._read_stage("read", 1e9, Storage("fsx-lustre", "tcp", 96.0), cs.LOADERS["runai-streamer"], Inputs())
    flows = next(lim for lim in stage.limits if "flow" in lim.name)
    assert flows.name == "20 OST(s) × 1 TCP flow(s) of 5 Gbit/s" and flows.gbps == 12.5
    assert flows.inputs == ("fsx_gib_per_ost", "tcp_flows_per_server", "tcp_flow_gbit")
    three = cs._read_stage("read", 1e9, Storage("fsx-lustre", "tcp", 48.0), cs.LOADERS["runai-streamer"],
                           Inputs(tcp_flows_per_server=3, tcp_flow_gbit=2.0))
    assert next(lim for lim in three.limits if "flow" in lim.name).gbps == 10 * 3 * 2.0 / 8  # 7.5 GB/s


def test_osts_at_exact_multiples_of_the_published_server_size():
    # 96 TiB / 20 = 4.8 TiB (4,915.2 GiB) a server
    assert Storage("fsx-lustre", "tcp", 4.8).osts(Inputs()) == 1
    assert Storage("fsx-lustre", "tcp", 9.6).osts(Inputs()) == 2  # exactly two: the 1e-9 keeps float dust out
    assert Storage("fsx-lustre", "tcp", 9.59).osts(Inputs()) == 1
    assert Storage("fsx-lustre", "tcp", 1.2).osts(Inputs()) == 1  # less than one server: still one
    assert Storage("fsx-lustre", "tcp", 0.0).osts(Inputs()) == 1


def test_storages_describe_themselves():
    assert Storage("fsx-lustre", "efa+gds", 96.0, 1000.0).describe() == (
        "FSx for Lustre Persistent-2, 96 TiB at 1000 MB/s/TiB, client over EFA+GDS")
    assert Storage("local-nvme").describe() == "the node's NVMe (RAID0)"
    assert Storage("s3").describe() == "Amazon S3"
    assert Storage("local-disk").describe() == "this machine's disk"
    with pytest.raises(ValueError, match=r"^unknown storage kind 'nfs'$"):
        Storage("nfs")
    with pytest.raises(ValueError, match=r"^client must be one of \('tcp', 'efa', 'efa\+gds'\), got 'ib'$"):
        Storage("fsx-lustre", "ib")


# --- the projection's stages ----------------------------------------------------------------------


def test_the_cpu_path_copies_one_gpu_after_another():
    p = cs.project(_preset("cpu-405b-bf16"))
    read, copy = p.stages
    assert read.name == "read: FSx for Lustre Persistent-2 → host memory"
    assert copy.name == "copy: host → HBM, one GPU after another" and copy.nbytes == BF16
    assert [(lim.name, lim.gbps, lim.inputs) for lim in copy.limits] == [
        ("one pageable copy 12 GB/s", 12.0, ("pageable_h2d_gbps",)), ("one PCIe link 53 GB/s", 53.0, ("pcie_gbps",))]
    assert copy.seconds == pytest.approx(BF16 / 12e9)  # 67.6 s
    assert p.slowest is read and p.bottleneck == (
        "read: FSx for Lustre Persistent-2 → host memory: one sequential reader over EFA 1 GB/s")
    # a measured PCIe link slower than the pageable copy binds instead
    slow = cs.project(_preset("cpu-405b-bf16"), Inputs(pcie_gbps=6.0)).stages[1]
    assert slow.binding.name == "one PCIe link 6 GB/s" and slow.seconds == pytest.approx(BF16 / 6e9)


def test_staging_copies_the_checkpoint_first():
    p = cs.project(_preset("s3-nvme"))
    assert [st.name for st in p.stages] == ["copy: S3 → node NVMe", "read: node NVMe → host memory"]
    assert [st.nbytes for st in p.stages] == [FP8, FP8]
    assert p.seconds == pytest.approx(FP8 / 25e9 + FP8 / 5.30e9)  # 19.5 s + 91.9 s


def test_a_stage_of_no_bytes_takes_no_time():
    assert cs.Stage("empty", 0, (cs.Limit("x", 1.0),)).seconds == 0.0
    assert cs.Stage("one GB", 1e9, (cs.Limit("fast", 4.0), cs.Limit("slow", 2.0))).seconds == 0.5


def test_gds_without_efa_says_why_not_and_fits_is_per_gpu():
    efa = replace(_preset("gds-405b-fp8"), storage=Storage("fsx-lustre", "efa", 96.0))
    p = cs.project(efa)
    assert p.unavailable == "this client path has no GDS: choose 'efa+gds'" and p.stages == ()
    assert p.bottleneck == p.unavailable and p.ratio is None
    tcp = cs.project(replace(_preset("gds-405b-fp8"), storage=Storage("fsx-lustre", "tcp", 96.0)))
    assert tcp.unavailable == "GDS on Lustre needs an RDMA network: over TCP (no EFA) there is no direct path"
    kind, basis = cs.classify(tcp)
    assert (kind, basis) == ("predicted", "not possible: " + tcp.unavailable)
    # fits: bytes per GPU against one H200's 143,771 MiB (150.75 GB): 812 GB / 8 = 101 GB fits
    assert cs.project(_preset("cpu-405b-bf16")).fits_in_hbm
    assert not cs.project(_preset("cpu-405b-bf16"), Inputs(hbm_per_gpu_mib=BF16 / 8 / MIB - 1)).fits_in_hbm
    assert cs.project(_preset("cpu-405b-bf16"), Inputs(hbm_per_gpu_mib=BF16 / 8 / MIB)).fits_in_hbm  # exactly


def test_sliced_on_the_fly_reads_more_only_with_gds():
    vllm = replace(_preset("vllm-fsx-tcp"), layout="sliced (span)")
    assert cs.project(vllm).nbytes == FP8 and cs.project(vllm).stages[0].nbytes == FP8  # the page cache shares
    gds = cs.project(replace(_preset("gds-405b-fp8"), layout="sliced (span)"))
    assert gds.nbytes == FP8 and gds.stages[0].nbytes > 3.3 * FP8


# --- kinds, basis and the miss band ---------------------------------------------------------------


def _row(ratio: float | None) -> cs.ScenarioRow:
    return replace(cs.scenarios()[0], ratio=ratio)


@pytest.mark.parametrize("ratio,missed", [
    (1.2, False), (0.8, False), (1.2000001, True), (0.7999999, True), (1.0, False), (None, False)])
def test_the_miss_band_is_twenty_percent_either_way(ratio, missed):
    assert cs.MISS_BAND == 0.2
    assert _row(ratio).missed == missed


# --- the published scenarios as set up -------------------------------------------------------------

FSX96 = ("fsx-lustre", 96.0, 1000.0, True)  # the published 96 TiB at 1000 MB/s/TiB, measured at 94 GiB/s
FSX_TCP = ("fsx-lustre", 4800 / 1024, 1000.0, False)  # the EKS benchmark's 4,800 GiB file system

# key, title, model, dtype, layout, (storage kind, capacity TiB, tier, measured), client, loader, staging,
# published seconds (worked from the words), published words, source, the why-it-misses text
PRESETS = [
    ("gds-405b-fp8", "P5en, 405B FP8 pre-sharded for TP 8, FSx over EFA with GDS", "llama-3.1-405b", "fp8_e4m3",
     "pre-sharded", FSX96, "efa+gds", "fastsafetensors-gds", None, 6.0, "about 6 seconds", AWS, cs.GDS_MISS),
    ("cpu-405b-bf16", "P5en, 405B bf16 through the CPU path, same FSx (EFA, no GDS)", "llama-3.1-405b", "bf16",
     "whole files", FSX96, "efa", "cpu-path", None, 15 * 60.0,
     "10–20 minutes (the middle: 15 min; 169× the 6 s: 17 min)", AWS, ""),
    ("vllm-fsx-tcp", "vLLM TP 8, 405B FP8 release, FSx over TCP (CSI), 4,800 GiB at 1000 MB/s/TiB", "llama-3.1-405b",
     "fp8_e4m3", "whole files", FSX_TCP, "tcp", "vllm-default", None, 29 * 60 + 27.0,
     "29 min 27 s of weight loading, ~260 MiB/s", EKS, cs.TCP_NOTE),
    ("s3-nvme", "405B FP8 release copied from S3 to the node's NVMe (s5cmd), then loaded by vLLM", "llama-3.1-405b",
     "fp8_e4m3", "whole files", ("local-nvme", 0.0, 1000.0, False), "tcp", "vllm-default", "s3",
     2 * 60 + 17.0 + 92.0, "2 min 17 s download + 1 min 32 s loading", EKS, cs.S3_MISS),
    ("runai-fsx-tcp", "vLLM with Run:ai streamer (concurrency 32), 405B FP8 release, same FSx over TCP",
     "llama-3.1-405b", "fp8_e4m3", "whole files", FSX_TCP, "tcp", "runai-streamer", None, 6 * 60 + 38.0,
     "6 min 38 s, ~1.1 GiB/s", EKS, cs.RUNAI_MISS),
    ("gds-70b-bf16", "P5en, 70B bf16 pre-sharded for TP 8, FSx over EFA with GDS", "llama-3.1-70b", "bf16",
     "pre-sharded", FSX96, "efa+gds", "fastsafetensors-gds", None, None,
     "measured in the AWS GDS post, figure not available here", AWS, ""),
    ("cpu-70b-bf16", "P5en, 70B bf16 through the CPU path, same FSx (EFA, no GDS)", "llama-3.1-70b", "bf16",
     "whole files", FSX96, "efa", "cpu-path", None, None, "not published", "", ""),
]


@pytest.mark.parametrize("key,title,model,dtype,layout,storage,client,loader,staging,published_s,published,source,miss",
                         PRESETS, ids=[p[0] for p in PRESETS])
def test_each_preset_is_the_published_setup(key, title, model, dtype, layout, storage, client, loader, staging,
                                            published_s, published, source, miss):
    s = _preset(key)
    assert (s.title, s.model, s.dtype, s.layout, s.loader, s.tp) == (title, model, dtype, layout, loader, 8)
    assert (s.storage.kind, s.storage.capacity_tib, s.storage.tier_mbps_per_tib, s.storage.measured) == storage
    assert s.storage.client == client
    assert (s.staging.kind if s.staging else None) == staging
    assert s.published_s == published_s and s.published == published and s.miss == miss
    assert s.source.startswith(source) and (source or s.source == "")
    assert [p.key for p in cs.presets()] == [p[0] for p in PRESETS]


# basis of each row, as the table shows it: what binds, with its value, unit and status
BASIS = {
    "gds-405b-fp8": ("calibrated", "from its own published figure: fsx_measured_gibps = 94 GiB/s (measured from one "
                     "P5en with GDS on the published set-up: Persistent-2 with EFA, 96 TiB at 1000 MB/s/TiB, 20 OSTs)"),
    "cpu-405b-bf16": ("assumed", "[read stage, assumed] efa_stream_gbps = 1 GB/s (one sequential buffered reader on "
                      "a network file system at its best: ~1 GB/s measured on EFS Elastic by vLLM's default loader); "
                      "[copy stage, assumed] pageable_h2d_gbps = 12 GB/s (pageable cudaMemcpy, staged by the driver "
                      "through pinned buffers)"),
    "vllm-fsx-tcp": ("calibrated", "from its own published figure: tcp_stream_mibps = 260 MiB/s (one sequential "
                     "reader on FSx for Lustre over TCP: vLLM's default loader, '~260 MB/s', which is MiB/s)"),
    "s3-nvme": ("calibrated", "[copy stage, assumed] s3_client_gbit = 200 Gbit/s (the node's ENA bandwidth to S3); "
                "[read stage, calibrated] from its own published figure: nvme_stream_gbps = 5.3 GB/s (one sequential "
                "reader on the node's NVMe RAID0: vLLM's default loader at 5.30 GB/s)"),
    "runai-fsx-tcp": ("assumed", "tcp_flows_per_server = 1 flows per OST (a Lustre client over TCP reaches each "
                      "storage server)"),
    "gds-70b-bf16": ("predicted", "from fsx_measured_gibps = 94 GiB/s, calibrated on 'gds-405b-fp8'"),
}


@pytest.mark.parametrize("key", BASIS)
def test_each_row_says_what_binds_it(key):
    row = {r.name: r for r in cs.scenarios()}[key]
    assert (row.kind, row.basis) == BASIS[key]


def test_a_row_predicted_from_published_and_measured_inputs_says_so():
    # a measured PCIe link binding a GDS read: predicted, from a measured input
    inputs = Inputs(pcie_gbps=5.0, measured={"pcie_gbps": "a warm pinned-bounce run"})
    p = cs.project(_preset("gds-405b-fp8"), inputs)
    assert cs.classify(p, inputs) == ("predicted", "from pcie_gbps = 5 GB/s per GPU, measured")
    # a published input binding (the client over EFA+GDS on a big file system)
    big = replace(_preset("gds-405b-fp8"), key="x", storage=Storage("fsx-lustre", "efa+gds", 2000.0))
    assert cs.classify(cs.project(big)) == ("predicted", "from client_efa_gds_gbit = 1200 Gbit/s, published")
    # the set-up itself binding (capacity × tier): no input behind it
    small = replace(_preset("gds-405b-fp8"), key="x", storage=Storage("fsx-lustre", "efa+gds", 4.8))
    assert cs.classify(cs.project(small)) == (
        "predicted", "from the scenario's own set-up: FSx disk 4.8 TiB × 1000 MB/s/TiB")


def test_scenario_rows_carry_their_inputs_and_stages():
    rows = {r.name: r for r in cs.scenarios()}
    assert rows["gds-405b-fp8"].inputs == ("487 GB fp8_e4m3, pre-sharded; FSx for Lustre Persistent-2, 96 TiB at "
                                           "1000 MB/s/TiB, client over EFA+GDS; loader fastsafetensors-gds")
    assert rows["s3-nvme"].inputs == ("487 GB fp8_e4m3, whole files; the node's NVMe (RAID0); staged from Amazon S3; "
                                      "loader vllm-default")
    assert rows["s3-nvme"].stages == {"copy: S3 → node NVMe": pytest.approx(FP8 / 25e9),
                                      "read: node NVMe → host memory": pytest.approx(FP8 / 5.30e9)}
    assert rows["s3-nvme"].title == _preset("s3-nvme").title and rows["s3-nvme"].source.startswith(EKS)
    assert rows["s3-nvme"].published == "2 min 17 s download + 1 min 32 s loading"
    # a miss keeps its why; a calibrated row keeps its note; a predicted row within the band has none
    assert rows["runai-fsx-tcp"].miss == cs.RUNAI_MISS and rows["gds-405b-fp8"].miss == cs.GDS_MISS
    assert rows["cpu-405b-bf16"].miss == "" and rows["gds-70b-bf16"].miss == ""
    assert rows["gds-70b-bf16"].ratio is None and rows["gds-70b-bf16"].published_s is None


def test_the_scenarios_table_as_printed():
    lines = cs.scenarios_table(cs.scenarios()).splitlines()
    assert lines[0] == "| scenario | published | projected | projected / published | kind: basis | source |"
    assert lines[1] == "|---|---|---|---|---|---|"
    assert lines[2].startswith("| P5en, 405B FP8 pre-sharded for TP 8, FSx over EFA with GDS | about 6 seconds | "
                               "4.8 s (projection) | 0.80 | **calibrated**: from its own published figure: ")
    assert lines[2].endswith(" — *note:* " + cs.GDS_MISS + " | AWS ML blog |")
    assert lines[5].startswith("| 405B FP8 release copied from S3 to the node's NVMe (s5cmd), then loaded by vLLM | "
                               "2 min 17 s download + 1 min 32 s loading | 111.4 s (projection) | 0.49 (miss) | ")
    assert " — *why:* With s5cmd's flags" in lines[5] and lines[5].endswith(" | A. Srirama (AWS) |")
    assert lines[8] == ("| P5en, 70B bf16 through the CPU path, same FSx (EFA, no GDS) | not published | 2.5 min "
                        "(projection) | — | **assumed**: " + BASIS["cpu-405b-bf16"][1] + " | — |")
    assert len(lines) == 2 + len(PRESETS)
    piped = replace(cs.scenarios()[5], basis="a | b")
    assert "**predicted**: a / b |" in cs.scenarios_table([piped])


# --- out of sample ------------------------------------------------------------------------------------


def test_out_of_sample_rows_say_what_they_predict_and_why():
    fsx, p5 = cs.out_of_sample()
    assert fsx.what == "throughput one P5en read with GDS from the published 96 TiB file system"
    # 96 TiB × 1000 MB/s/TiB = 96 GB/s (disk); 1,200 Gbit/s = 150 GB/s (client); 96 × 2,600 MB/s/TiB =
    # 249.6 GB/s (network; 96 × 27.3 = 2,621 GiB of server RAM); 8 × 53 = 424 GB/s (PCIe)
    assert fsx.inputs == ("the slowest of: disk: 96 TiB × 1000 MB/s/TiB = 96.0 GB/s; client over EFA+GDS 1200 Gbit/s "
                          "= 150.0 GB/s; network: 96 TiB × 2600 MB/s/TiB (reads from the servers' cache: 2,621 GiB "
                          "of RAM) = 249.6 GB/s; 8 PCIe links × 53 GB/s = 424.0 GB/s")
    # 96e9 / 2**30 = 89.4 GiB/s, 5% under the 94 measured
    assert fsx.why == ("Under by 5%: the disk ceiling (96 GB/s = 89.4 GiB/s) is below what was measured, so part of "
                       "the checkpoint came from the file servers' memory (2,621 GiB of it on this file system), "
                       "which FSx serves at the network rate. One client's real ceiling here is FSx's per-client "
                       "figure for EFA with GDS (150 GB/s) once the checkpoint is in the servers' memory; the model "
                       "counts disk reads only.")
    assert p5.what == "FSx for Lustre throughput to one P5-class client with EFA and GDS"
    # 8 PCIe links × 53 GB/s × 8 bits = 3,392 Gbit/s; the EFA's 3,200 binds; 3,200 / 1,200 = 2.7
    assert p5.inputs == "the node's own limits: EFA 3200 Gbit/s; 8 PCIe links × 53 GB/s = 3392 Gbit/s"
    assert p5.why == ("A miss (×2.7): a P5's NICs and PCIe links could carry 3,200 Gbit/s, FSx serves one client at "
                      "most 1,200. The cap is the service's, not the node's hardware: the model holds it only as an "
                      "input (client_efa_gds_gbit), it cannot predict it.")
    assert (fsx.source, p5.source) == (cs.AWS_GDS_BLOG, cs.FSX_DOCS)


def test_out_of_sample_follows_the_inputs_given():
    # PCIe binding the node: 8 × 10 GB/s × 8 = 640 Gbit/s below the EFA's 3,200
    assert cs.out_of_sample(Inputs(pcie_gbps=10.0))[1].predicted == 640.0
    # a client path of 400 Gbit/s (50 GB/s) below the 96 GB/s of disk: 50e9 / 2**30 = 46.57 GiB/s
    assert cs.out_of_sample(Inputs(client_efa_gds_gbit=400.0))[0].predicted == pytest.approx(50e9 / GIB)


# (a ratio of exactly 1.1 or 0.9 is not a float: 110 / 100 - 1 is 0.10000000000000009)
@pytest.mark.parametrize("predicted,hit", [(109.99, True), (90.01, True), (110.01, False), (89.99, False)])
def test_an_out_of_sample_hit_is_within_ten_percent(predicted, hit):
    assert cs.OutOfSample("k", "w", 100.0, "GB/s", "s", predicted, "i", "y").hit == hit


def test_the_out_of_sample_table_as_printed():
    rows = [cs.OutOfSample("k", "a figure", 94.0, "GiB/s", "Some blog, a post", 89.41, "made of this", "why so"),
            cs.OutOfSample("m", "another", 1200.0, "Gbit/s", "A guide", 3200.0, "made of that", "why not")]
    assert cs.out_of_sample_table(rows) == (
        "| published figure | published | predicted | predicted / published | verdict | made of | source |\n"
        "|---|---|---|---|---|---|---|\n"
        "| a figure | 94 GiB/s | 89.4 GiB/s | 0.95 | hit: why so | made of this | Some blog |\n"
        "| another | 1200 Gbit/s | 3200.0 Gbit/s | 2.67 | miss: why not | made of that | A guide |")


# --- the rest of a cold start -------------------------------------------------------------------------


def test_startup_steps_as_published_and_assumed():
    # EKS benchmark: image pull ~1 min, KV-cache set-up 12.6 s; assumed: torch.compile 20 s, CUDA graphs 25 s
    steps = [(s.name, s.seconds) for s in cs.startup()]
    assert steps == [("container image pull", 60.0), ("torch.compile", 20.0), ("CUDA graph capture", 25.0),
                     ("KV-cache set-up and warm-up", 12.6)]
    assert cs.startup()[0].source == cs.input_meta("image_pull_s")["source"]
    p = cs.project(_preset("gds-405b-fp8"))
    assert cs.time_to_serve(p) == pytest.approx(FP8 / (94 * GIB) + 117.6)  # 60 + 20 + 25 + 12.6
    assert cs.time_to_serve(p, Inputs(image_pull_s=1.0)) == pytest.approx(FP8 / (94 * GIB) + 58.6)


# --- the inputs as shown ----------------------------------------------------------------------------


def test_the_assumptions_table_as_printed():
    lines = cs.table().splitlines()
    assert lines[0] == "name                          value unit               status      source"
    assert lines[1] == ("gpus_per_node                     8 GPUs               published   "
                        "P5en (p5en.48xlarge): 8× NVIDIA H200")
    assert lines[3].startswith("pcie_gbps                        53 GB/s per GPU       assumed     PCIe Gen5 x16")
    row = next(r for r in lines if r.startswith("fsx_gib_per_ost"))
    assert row.startswith("fsx_gib_per_ost              4915.2 GiB per OST        published   ")  # 96 × 1024 / 20
    gds = next(r for r in lines if r.startswith("gds_per_gpu_gbps"))
    assert gds.startswith("gds_per_gpu_gbps                  — GB/s per GPU       unset       one GPU's cuFile")
    assert len(lines) == 1 + 28


def test_assumptions_say_where_each_value_came_from():
    inputs = Inputs(pcie_gbps=40.0, measured={"pcie_gbps": "measured: a warm pinned bounce"})
    rows = {a.name: a for a in cs.assumptions(inputs)}
    assert (rows["pcie_gbps"].value, rows["pcie_gbps"].status, rows["pcie_gbps"].source) == (
        40.0, "measured", "measured: a warm pinned bounce")
    assert rows["pcie_gbps"].unit == "GB/s per GPU"
    assert rows["tcp_stream_mibps"].source.endswith("; calibration: scenario 'vllm-fsx-tcp'")
    assert rows["host_copy_gbps"].value is None and rows["host_copy_gbps"].status == "unset"
    assert rows["image_pull_s"].status == "published" and rows["cuda_graphs_s"].status == "assumed"
    assert "measured" not in rows
    assert str(cs.Assumption("n", 3, "u", "published", "src")) == f"{'n':<24} {'3':>10} {'u':<18} {'published':<11} src"


def test_input_meta_refuses_what_is_not_an_input():
    with pytest.raises(ValueError, match=r"^no input named 'measured'$"):
        cs.input_meta("measured")
    with pytest.raises(ValueError, match=r"^no input named 'nope'$"):
        cs.input_meta("nope")
    assert cs.input_status(Inputs(measured={"pcie_gbps": "x"}), "pcie_gbps") == "measured"
    assert cs.input_status(Inputs(), "pcie_gbps") == "assumed"


@pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan, "53"])
def test_inputs_must_be_positive_finite_numbers(bad):
    with pytest.raises(ValueError, match=r"^pcie_gbps must be a positive finite number, got "):
        Inputs(pcie_gbps=bad)


def test_measured_must_name_inputs():
    with pytest.raises(ValueError, match=r"^measured names unknown inputs: bogus, nope$"):
        Inputs(measured={"nope": "x", "bogus": "y"})
    assert Inputs(gds_per_gpu_gbps=None).gds_per_gpu_gbps is None


# --- calibration ----------------------------------------------------------------------------------


def _record(datapath, device, gbps, cache, **extra):
    return {"datapath": datapath, "device": device, "gbps": gbps, "cache": cache, **extra}


def test_calibration_notes_say_what_was_measured():
    records = [_record("gds", "cuda:1", 9.0, "cold", gds_label=cs.GDS_DMA_PROVEN),
               _record("gds", "cuda:0", 5.0, "cold", gds_label=cs.GDS_DMA_PROVEN),
               _record("gds", "cuda:0", 6.0, "cold", gds_label=cs.GDS_DMA_PROVEN)]
    inputs = cs.calibrate(records)
    assert inputs.gds_per_gpu_gbps == 6.0  # the median of 5, 6, 9
    assert inputs.measured == {"gds_per_gpu_gbps": "measured: median of 3 gds load(s) on cuda:0, cuda:1 "
                                                   "(5.00–9.00 GB/s); a cold gds run labelled 'GDS (DMA proven)': "
                                                   "one GPU's direct read rate"}
    two = cs.calibrate([_record("pinned-bounce", "cuda:0", 30.0, "warm"),
                        _record("pinned-bounce", "cuda:0", 40.0, "warm")])
    assert two.pcie_gbps == 35.0  # the median of two is their mean
    earlier = Inputs(measured={"efa_stream_gbps": "an earlier note"})
    assert cs.calibrate(records, earlier).measured["efa_stream_gbps"] == "an earlier note"


@pytest.mark.parametrize("record,ok", [
    (_record("pinned-bounce", "CUDA:0", 30.0, "warm"), True),  # the device's case does not matter
    (_record("pinned-bounce", "cuda:0", 30.0, " Warm "), True),  # nor the cache's case and spaces
    ({"datapath": "pinned-bounce", "device": "cuda:0", "gbps": 30.0, "resident_before": 1.0}, True),  # warm measured
    ({"datapath": "pinned-bounce", "device": "cuda:0", "gbps": 30.0, "resident_before": 0.0}, False),  # cold
    ({"datapath": "pinned-bounce", "device": "cuda:0", "gbps": 30.0, "resident_before": "n/a"}, False),
    ({"datapath": "pinned-bounce", "device": "cuda:0", "gbps": 30.0}, False),  # no cache state at all
    (_record("pinned-bounce", "cuda:0", 30.0, "warm", label="Projection"), False),  # a projection, any case
    (_record("pinned-bounce", "cuda:0", 30.0, "warm", world="1"), True),
    (_record("pinned-bounce", "cuda:0", 30.0, "warm", world=None), True),
    (_record("pinned-bounce", "cuda:0", 30.0, "warm", world=2), False),
    (_record("pinned-bounce", "cuda:0", 30.0, "warm", simulated=True), False),
    (_record("pinned-bounce", "cuda:0", 0.0, "warm"), False),  # no rate
    ({"datapath": "pinned-bounce", "device": "cuda:0", "cache": "warm"}, False),  # no gbps
    (_record("pinned-bounce", "cpu", 30.0, "warm"), False),  # not the device
    (_record("pageable-bounce", "cuda:0", 30.0, "warm"), False),  # not the path
])
def test_which_records_stand_in_for_the_pcie_link(record, ok):
    rule = next(r for r in cs.RULES if r.parameter == "pcie_gbps")
    assert cs.matches(rule, record) == ok


# --- results files --------------------------------------------------------------------------------


def test_results_files_in_every_shape(tmp_path):
    one = _record("pinned-bounce", "cuda:0", 40.0, "warm")
    (tmp_path / "list.json").write_text(json.dumps([one]))
    (tmp_path / "wrapped.json").write_text(json.dumps({"records": [one, one]}))
    (tmp_path / "single.json").write_text(json.dumps(one))
    (tmp_path / "other.json").write_text(json.dumps({"something": 1}))
    (tmp_path / "lines.jsonl").write_text(json.dumps(one) + "\n\n" + json.dumps(one) + "\n")
    assert cs.read_records(tmp_path / "list.json") == [one]
    assert cs.read_records(tmp_path / "wrapped.json") == [one, one]
    assert cs.read_records(tmp_path / "single.json") == [one]
    assert cs.read_records(tmp_path / "other.json") == []
    assert cs.read_records(tmp_path / "lines.jsonl") == [one, one]


def test_bad_results_files_name_the_file_and_the_reason(tmp_path):
    missing = tmp_path / "absent.json"
    with pytest.raises(cs.ResultsError, match=r"absent\.json: cannot read it: ") as e:
        cs.read_records(missing)
    assert e.value.path == missing
    (tmp_path / "scalar.json").write_text("3")
    with pytest.raises(cs.ResultsError) as e:
        cs.read_records(tmp_path / "scalar.json")
    assert str(e.value) == f"{tmp_path / 'scalar.json'}: expected a list of records (JSON objects)"
    (tmp_path / "mixed.json").write_text("[{}, 3]")
    with pytest.raises(cs.ResultsError, match=r"mixed\.json: expected a list of records \(JSON objects\)$"):
        cs.read_records(tmp_path / "mixed.json")
    (tmp_path / "bad.jsonl").write_text("{nope\n")
    with pytest.raises(cs.ResultsError, match=r"bad\.jsonl: not valid JSON \("):
        cs.read_records(tmp_path / "bad.jsonl")


def test_a_folder_named_like_a_results_file_is_not_read(tmp_path):
    (tmp_path / "runs.json").mkdir()
    (tmp_path / "runs.json" / "a.csv").write_text("datapath,device,gbps,cache\nsafetensors,cpu,3.0,warm\n")
    assert cs.find_records(tmp_path) == [{"datapath": "safetensors", "device": "cpu", "gbps": "3.0", "cache": "warm"}]
    assert cs.find_records(tmp_path / "absent") == []


# --- found by the run with the tests above (docs/results/mutation.md) --------------------------------


def test_an_input_field_carries_its_value_unit_source_status_and_row():
    f = cs._input(94.0, "GiB/s", "a post", "calibration", "gds-405b-fp8")
    assert f.default == 94.0
    assert dict(f.metadata) == {"unit": "GiB/s", "source": "a post", "status": "calibration",
                                "calibrates": "gds-405b-fp8"}
    assert dict(cs._input(8, "GPUs", "a spec").metadata) == {"unit": "GPUs", "source": "a spec",
                                                             "status": "published", "calibrates": ""}
    with pytest.raises(AssertionError):
        cs._input(1.0, "u", "s", "guessed")  # not a status


def test_the_published_setups_ceilings_are_the_default():
    # 96 TiB × 1000 MB/s/TiB = 96 GB/s; EFA with GDS 1,200 Gbit/s = 150 GB/s; 96 × 2,600 MB/s/TiB = 249.6 GB/s;
    # 8 × 53 GB/s = 424 GB/s
    ceilings = cs.fsx_ceilings()
    assert [c.gbps for c in ceilings] == pytest.approx([96.0, 150.0, 249.6, 424.0])
    assert [c.name for c in ceilings] == [
        "disk: 96 TiB × 1000 MB/s/TiB", "client over EFA+GDS 1200 Gbit/s",
        "network: 96 TiB × 2600 MB/s/TiB (reads from the servers' cache: 2,621 GiB of RAM)", "8 PCIe links × 53 GB/s"]
    assert [c.source for c in ceilings] == [cs.FSX_SSD_DOCS, cs.FSX_DOCS, cs.FSX_SSD_DOCS,
                                            "assumed (Inputs.pcie_gbps)"]


def test_the_s3_rate_follows_the_inputs_given():
    assert cs.storage_gbps(Storage("s3"), Inputs(s3_client_gbit=400.0)) == (50.0, "node network to S3 400 Gbit/s")


def test_a_large_whole_number_input_is_shown_whole():
    # an int is printed as it is ('1234567'), a float with :g ('1.23457e+06' would hide digits of an int)
    assert str(cs.Assumption("n", 1_234_567, "u", "published", "s")).split()[1] == "1234567"
    assert str(cs.Assumption("n", 4915.2, "u", "published", "s")).split()[1] == "4915.2"
    assert str(cs.Assumption("n", None, "u", "unset", "s")).split()[1] == "—"


def test_scenarios_and_models_refuse_what_they_do_not_know():
    with pytest.raises(ValueError) as e:
        cs.Scenario("x", "x", layout="striped")
    assert str(e.value) == "layout must be one of ('whole files', 'pre-sharded', 'sliced (span)'), got 'striped'"
    with pytest.raises(ValueError) as e:
        cs.Scenario("x", "x", loader="curl")
    assert str(e.value) == ("unknown loader 'curl'; choose from cpu-path, vllm-default, runai-streamer, "
                            "fastsafetensors-gds, s5cmd")
    with pytest.raises(ValueError, match=r"^unknown model 'gpt'; choose from llama-"):
        cs.model_bytes("gpt")
    with pytest.raises(ValueError) as e:
        cs.model_bytes("llama-3.1-405b", "int3")
    assert str(e.value) == "unknown dtype 'int3'; use 'bf16' or 'fp8_e4m3'"
    assert cs.model_bytes() == BF16  # the default: Llama 3.1 405B in bf16
    assert _preset("gds-405b-fp8").calibrates == ("fsx_measured_gibps",)
    assert _preset("cpu-405b-bf16").calibrates == ()


def test_a_calibration_inputs_source_keeps_its_citation_before_the_row():
    row = {a.name: a for a in cs.assumptions()}["fsx_measured_gibps"]
    assert row.source == cs.input_meta("fsx_measured_gibps")["source"] + "; calibration: scenario 'gds-405b-fp8'"
    assert row.source.startswith("measured from one P5en with GDS on the published set-up")


def test_a_rule_of_two_paths_names_both_in_its_note():
    inputs = cs.calibrate([_record("safetensors", "cpu", 3.0, "warm"), _record("host-direct", "cpu", 5.0, "warm")])
    assert inputs.host_copy_gbps == 4.0  # the median of 3 and 5
    assert inputs.measured["host_copy_gbps"].startswith(
        "measured: median of 2 safetensors/host-direct load(s) on cpu (3.00–5.00 GB/s); a warm host load")


def test_a_row_without_published_words_shows_a_dash():
    row = replace(cs.scenarios()[0], published="")
    assert cs.scenarios_table([row]).split("\n")[2].startswith(f"| {row.title} | — | 4.8 s (projection) | ")


def test_hours_are_hours():
    assert cs.format_seconds(360_000.0) == "100.00 h"  # 360,000 s / 3,600


def test_a_parallel_reader_on_lustre_has_no_s3_request_limit():
    stage = cs.project(_preset("runai-fsx-tcp")).stages[0]
    assert not any("requests in flight" in lim.name for lim in stage.limits)


def test_an_unavailable_projection_keeps_its_facts():
    inputs = Inputs(measured={"pcie_gbps": "x"})
    p = cs.project(replace(_preset("gds-405b-fp8"), storage=Storage("fsx-lustre", "tcp", 96.0)), inputs)
    assert p.fits_in_hbm is True and p.measured == ("pcie_gbps",)  # 487 GB / 8 fits one H200's 150.75 GB


def test_a_basis_of_several_inputs_names_each():
    inputs = Inputs(measured={"tcp_flows_per_server": "a run"})
    p = cs.project(_preset("runai-fsx-tcp"), inputs)
    assert cs.classify(p, inputs) == ("predicted", "from fsx_gib_per_ost = 4915.2 GiB per OST, published; "
                                      "tcp_flows_per_server = 1 flows per OST, measured; "
                                      "tcp_flow_gbit = 5 Gbit/s per flow, published")
    with pytest.raises(ValueError) as e:
        cs.model_bytes("gpt")
    assert str(e.value) == "unknown model 'gpt'; choose from " + ", ".join(cs.PRESETS)


def test_scenarios_use_the_inputs_given_and_drop_a_why_that_no_longer_misses():
    # two TCP flows per server, measured: 2 × 5 Gbit/s = 1.25 GB/s; 487.2 GB in 389.8 s against 398 s published
    inputs = Inputs(tcp_flows_per_server=2, measured={"tcp_flows_per_server": "a run"})
    row = {r.name: r for r in cs.scenarios(inputs)}["runai-fsx-tcp"]
    assert row.projected_s == pytest.approx(FP8 / 1.25e9) and not row.missed
    assert row.kind == "predicted" and "tcp_flows_per_server = 2 flows per OST, measured" in row.basis
    assert row.miss == ""  # the why of a miss is shown only where the row misses
