"""Every published input of the cold-start and KV models, against the figure and unit of its cited source.

The figures below are copied from the sources as published (the source named beside each), in the
source's own unit, and converted here; the models' values must equal them. A new published input
that is not in this table fails `test_no_published_input_escapes_the_table`.
"""

from __future__ import annotations

from dataclasses import fields

import pytest

from gdslab import coldstart as cs
from gdslab import kvcache

MIB, GIB = 2**20, 2**30

# name, value in the model's unit, the model's unit, the figure as published (in words), where (a source substring)
COLDSTART = [
    ("gpus_per_node", 8, "GPUs", "8× H200", "P5en"),
    ("hbm_per_gpu_mib", 143_771, "MiB", "143,771 MiB per H200 (nvidia-smi)", "143,771 MiB"),
    ("node_network_gbit", 3200, "Gbit/s", "3,200 Gbps EFA", "Srirama"),
    ("client_tcp_gbit", 100, "Gbit/s", "100 Gbps per client without EFA", "individual client"),
    ("client_efa_gbit", 700, "Gbit/s", "700 Gbps per client with EFA", "individual client"),
    ("client_efa_gds_gbit", 1200, "Gbit/s", "1,200 Gbps per client with EFA and GDS", "individual client"),
    ("fsx_measured_gibps", 94, "GiB/s", "~94 GiB/s", "Accelerate LLM model loading"),
    ("fsx_gib_per_ost", 96 * 1024 / 20, "GiB per OST", "20 OSTs for 96 TiB", "20 OSTs for 96 TiB"),
    ("tcp_stream_mibps", 260, "MiB/s", "'~260 MB/s' (453.8 GiB in 29 min 27 s: MiB/s)", "Srirama"),
    ("nvme_stream_gbps", 5.30, "GB/s", "5.30 GB/s", "Srirama"),
    ("s3_request_mbps", (85 + 90) / 2, "MB/s per request", "85–90 MB/s per request", "S3 performance"),
    ("s5cmd_numworkers", 256, "files in flight", "--numworkers default 256", "s5cmd README"),
    ("s5cmd_concurrency", 50, "parts per file", "--concurrency 50", "Srirama"),
    ("s5cmd_part_mb", 100, "MB per part", "--part-size 100", "Srirama"),
    ("tcp_flow_gbit", 5, "Gbit/s per flow", "5 Gbps per flow outside a placement group; 5 Gbps per OST", "5 Gbps"),
    ("image_pull_s", 60, "s", "~1 min", "Srirama"),
    ("kv_cache_init_s", 12.6, "s", "12.6 s", "Srirama"),
]


@pytest.mark.parametrize("name,value,unit,figure,where", COLDSTART, ids=[r[0] for r in COLDSTART])
def test_coldstart_inputs_are_the_published_figures(name, value, unit, figure, where):
    meta = cs.input_meta(name)
    assert getattr(cs.Inputs(), name) == pytest.approx(value), figure
    assert meta["unit"] == unit and where in meta["source"]
    assert meta["status"] in ("published", "calibration")


def test_no_published_input_escapes_the_table():
    published = {f.name for f in fields(cs.Inputs) if f.name != "measured"
                 and f.metadata["status"] in ("published", "calibration")}
    assert published == {r[0] for r in COLDSTART}


def test_published_units_convert_as_the_sources_mean_them():
    inputs = cs.Inputs()
    assert inputs.tcp_stream_gbps == pytest.approx(260 * MIB / 1e9)  # 0.273 GB/s, not 0.26
    assert inputs.hbm_per_gpu_bytes / 1e9 == pytest.approx(150.75, abs=0.01)  # not "141 GB"
    measured = inputs.fsx_measured_gibps * GIB / 1e9
    assert measured == pytest.approx(100.9, abs=0.1) and measured > 96 * 1000 / 1000  # above 96 TiB × 1000 MB/s/TiB


# The FSx for Lustre SSD table (Persistent-2, by tier MB/s/TiB): network baseline MB/s/TiB, cache GiB of RAM/TiB.
FSX_SSD = [(125, 320, 3.4), (250, 640, 6.8), (500, 1300, 13.7), (1000, 2600, 27.3)]


@pytest.mark.parametrize("tier,network,cache", FSX_SSD)
def test_fsx_tiers_as_the_user_guide_tables_them(tier, network, cache):
    assert cs.FSX_NETWORK_MBPS_PER_TIB[tier] == network and cs.FSX_CACHE_GIB_PER_TIB[tier] == cache


# KV model: name, the model's value, the figure as published, the model's source text, where (a substring of it)
N, F, P = kvcache.NODES, kvcache.KV_FORMATS, kvcache.PUBLISHED
KV = [
    ("H200 HBM as the device reports it", N["p5en"].hbm_per_gpu, 143_771 * MIB, N["p5en"].source, "143,771 MiB"),
    ("H100 80GB HBM as nvidia-smi reports it", N["p5"].hbm_per_gpu, 81_559 * MIB, N["p5"].source, "81,559 MiB"),
    ("B200 HBM, datasheet", N["p6"].hbm_per_gpu, 180e9, N["p6"].source, "180 GB"),
    ("Llama 3.1 max_position_embeddings", kvcache.LLAMA31_CONTEXT, 131_072, kvcache.LLAMA31_CONTEXT_SOURCE,
     "max_position_embeddings 131072"),
    ("KIVI group size", F["kivi-4bit"].group, 32, F["kivi-4bit"].source, "groups of 32"),
    ("KIVI recent tokens in fp16", F["kivi-4bit"].residual_tokens, 128, F["kivi-4bit"].source, "most recent 128 tokens"),
    ("KIVI fp16 scale and zero point", F["kivi-2bit"].scale_bits, 2 * 16, F["kivi-4bit"].source, "scale and zero point"),
    ("TurboQuant bits per value", F["turboquant-3.5bit"].bits, 3.5, F["turboquant-3.5bit"].source, "3.5 bits"),
    ("TurboQuant low setting", F["turboquant-2.5bit"].bits, 2.5, F["turboquant-2.5bit"].source, "2.5 bits"),
    ("vLLM gpu_memory_utilization 0.9", kvcache.RESERVES["vllm-default"].fraction, 1 - 0.9,
     kvcache.RESERVES["vllm-default"].source, "gpu_memory_utilization=0.9"),
    ("H200 dense BF16", kvcache.GPUS["h200-bf16"].tflops, 1979 / 2, kvcache.GPUS["h200-bf16"].source, "1,979 TFLOPS"),
    ("H200 dense FP8", kvcache.GPUS["h200-fp8"].tflops, 3958 / 2, kvcache.GPUS["h200-fp8"].source, "3,958 TFLOPS"),
    ("published ~82K (P5en, bf16 KV)", P[0].tokens, 82_000, P[0].source, "~82K"),
    ("published over 400K (P5en, TurboQuant)", P[1].tokens, 400_000, P[1].source, "over 400K"),
    ("published up to 660K (P6, TurboQuant)", P[2].tokens, 660_000, P[2].source, "660K"),
]


@pytest.mark.parametrize("name,value,published,source,where", KV, ids=[r[0] for r in KV])
def test_kv_inputs_are_the_published_figures(name, value, published, source, where):
    assert value == pytest.approx(published)
    assert where in source
