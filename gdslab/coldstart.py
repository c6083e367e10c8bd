"""The cold-start model: what a loader reads, through which ceilings, in which stages → seconds, beside
what was published for the same setup.

A projection, never a measurement. A scenario is a published setup: a model and its bytes
(bf16, or FP8 as Meta's release keeps it, `gdslab.fp8`), how they are laid out (pre-sharded
per rank, sliced on the fly, or whole files), the storage (FSx for Lustre sized by capacity
and tier, local NVMe, S3), the client's network path (TCP, EFA, EFA with GDS), and the
loader that reads it (vLLM's default loader, the CPU path, Run:ai's streamer, fastsafetensors
with GDS, s5cmd for staging). Each stage runs at the slowest of its limits; stages run one
after another. Every input is a named field of `Inputs` with its unit and source, and one
set of inputs serves every scenario: nothing is fitted per scenario. Where an input was
itself taken from a published run, its source says which, and `scenarios()` marks the
scenario that run belongs to as a calibration point rather than a check.

Besides the weights, a server needs seconds to be ready (image pull, CUDA graphs, compile,
KV-cache set-up): `startup()` lists those with their sources, so that "seconds to load"
is never shown as "seconds to serve".
"""

from __future__ import annotations

import csv
import functools
import json
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from . import fp8
from .errors import ResultsError
from .loader import cache_state
from .synthetic import PRESETS

LABEL = "projection"
GB = 1e9
GIB = 2**30
MIB = 2**20

AWS_GDS_BLOG = ("AWS ML blog, 'Accelerate LLM model loading and increase context windows with GPUDirect on "
                "Amazon FSx for Lustre and TurboQuant' (figures as summarised by aissential.tech and "
                "hellomarvisaitoday.com)")
EKS_BLOG = ("A. Srirama (AWS), 'Reducing LLM Cold-Start Times on Amazon EKS: A Benchmark of Eight Model "
            "Loading Strategies', 2026-03-18 (vLLM 0.17.1, TP 8, p5/p5en.48xlarge)")
FSX_DOCS = "Amazon FSx for Lustre user guide (performance; managing throughput capacity)"


def _input(default: Any, unit: str, source: str) -> Any:
    return field(default=default, metadata={"unit": unit, "source": source})


@dataclass(frozen=True)
class Inputs:
    """Every number the model uses, once, with its source. Defaults: a P5en (8×H200) on AWS."""

    gpus_per_node: int = _input(8, "GPUs", "P5en (p5en.48xlarge): 8× NVIDIA H200")
    hbm_per_gpu_gb: float = _input(141.0, "GB", "H200: 141 GB HBM3e")
    pcie_gbps: float = _input(53.0, "GB/s per GPU", "PCIe Gen5 x16: 64 GB/s per direction raw, ~53 GB/s for large DMA")
    pageable_h2d_gbps: float = _input(
        12.0, "GB/s", "pageable cudaMemcpy, staged by the driver through pinned buffers (10–25 GB/s on Gen5); assumed")
    node_network_gbit: float = _input(3200.0, "Gbit/s", "P5en: 3,200 Gbps of EFA networking (" + EKS_BLOG + ")")
    client_tcp_gbit: float = _input(100.0, "Gbit/s", FSX_DOCS + ": per-client throughput without EFA (as quoted "
                                                                "from its throughput table in AWS sample notes)")
    client_efa_gbit: float = _input(700.0, "Gbit/s", FSX_DOCS + ": per-client throughput with EFA (as quoted "
                                                                "from its throughput table in AWS sample notes)")
    client_efa_gds_gbit: float = _input(1200.0, "Gbit/s", "FSx for Lustre: up to 1,200 Gbps to one client with EFA "
                                                          "and GDS (AWS announcement, as quoted)")
    fsx_measured_gibps: float = _input(
        94.0, "GiB/s", "measured on the published set-up: Persistent-2, EFA, 96 TiB at 1000 MB/s/TiB, 20 OSTs, "
                       "from a P5en (" + AWS_GDS_BLOG + ")")
    tcp_stream_gbps: float = _input(
        0.26, "GB/s", "one sequential reader on FSx for Lustre over TCP: vLLM's default loader, ~260 MB/s "
                      "(" + EKS_BLOG + "; calibration: scenario 'vllm-fsx-tcp')")
    efa_stream_gbps: float = _input(
        1.0, "GB/s", "one sequential buffered reader on a network file system at its best: ~1 GB/s measured on "
                     "EFS Elastic by vLLM's default loader (" + EKS_BLOG + "); assumed for Lustre over EFA")
    nvme_stream_gbps: float = _input(
        5.0, "GB/s", "one sequential reader on the node's NVMe RAID0 (8× 3.5 TB): vLLM's default loader, ~5 GB/s "
                     "(" + EKS_BLOG + "; calibration: the load stage of scenario 's3-nvme')")
    s3_request_mbps: float = _input(
        87.5, "MB/s per request", "AWS S3 performance guidelines: one concurrent request per 85–90 MB/s of "
                                  "throughput, 8–16 MB byte ranges")
    s3_client_gbit: float = _input(200.0, "Gbit/s", "P5en ENA bandwidth to S3 (a ceiling that does not bind here); assumed")
    tcp_flow_gbit: float = _input(
        5.0, "Gbit/s per server", "EC2: one TCP flow outside a cluster placement group carries at most 5 Gbps "
                                  "(EC2 instance network bandwidth docs); a TCP client reaches each file server by one")
    fsx_ost_gib: float = _input(
        2400.0, "GiB per server", FSX_DOCS + ": Persistent-2 SSD grows in 2,400 GiB increments; assumed one "
                                  "storage server (OST) per increment")
    gds_per_gpu_gbps: float | None = _input(
        None, "GB/s per GPU", "one GPU's cuFile read rate: not assumed (network, storage and link decide); "
                              "set by calibrate() from a GDS-proper run")
    host_copy_gbps: float | None = _input(
        None, "GB/s", "the host's page cache → tensor copy: not assumed (it does not bind on these setups); "
                      "set by calibrate() from a warm host load")
    local_disk_gbps: float | None = _input(
        None, "GB/s", "this machine's local disk, cold: only for the 'local disk' scenario; set by calibrate()")
    # --- the rest of a cold start, besides the weights ---
    image_pull_s: float = _input(60.0, "s", "container image pull, ~1 min for vLLM's 9.3 GB image (" + EKS_BLOG + ")")
    kv_cache_init_s: float = _input(12.6, "s", "vLLM KV-cache set-up and warm-up, 12.6 s (" + EKS_BLOG + ")")
    cuda_graphs_s: float = _input(25.0, "s", "vLLM CUDA graph capture, ~17–25 s in vLLM logs (vLLM issues); assumed")
    torch_compile_s: float = _input(
        20.0, "s", "torch.compile, 5–20 s from a warm compile cache (Baseten docs), ~35 s cold (vLLM logs); assumed")
    measured: dict[str, str] = field(default_factory=dict, compare=False)  # input -> where a measurement came from

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "measured" and value is not None and not (isinstance(value, (int, float))
                                                                   and value > 0 and math.isfinite(value)):
                raise ValueError(f"{f.name} must be a positive finite number, got {value!r}")
        unknown = set(self.measured) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"measured names unknown inputs: {', '.join(sorted(unknown))}")


# --- what is read ---------------------------------------------------------------------------------


def model_bytes(model: str = "llama-3.1-405b", dtype: str = "bf16") -> int:
    """Bytes of a model's checkpoint: bf16 (2 bytes a weight), or FP8 as Meta's release keeps it."""
    if model not in PRESETS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(PRESETS)}")
    tensors = PRESETS[model].tensors()
    if dtype == "bf16":
        return sum(math.prod(s) for _, s in tensors) * 2
    if dtype == "fp8_e4m3":
        return fp8.model_bytes(tensors)
    raise ValueError(f"unknown dtype {dtype!r}; use 'bf16' or 'fp8_e4m3'")


@functools.lru_cache(maxsize=None)
def read_amplification(model: str, tp: int, strided: str = "span") -> float:
    """Bytes all ranks read over the checkpoint's bytes when each slices on the fly (`gdslab.plan`)."""
    from .checkpoint import Checkpoint, TensorEntry
    from .plan import rank_plan

    at, entries = 0, []
    for name, shape in PRESETS[model].tensors():
        nbytes = math.prod(shape) * 2
        entries.append(TensorEntry(name, Path("virtual.safetensors"), at, nbytes, "BF16", shape))
        at += nbytes
    virtual = Checkpoint(Path("virtual"), tuple(entries), ())
    read = sum(rank_plan(virtual, r, tp, strided).read_nbytes for r in range(tp))
    return read / at


# --- the pieces of a scenario ---------------------------------------------------------------------

CLIENTS = ("tcp", "efa", "efa+gds")
LAYOUTS = ("whole files", "pre-sharded", "sliced (span)")


@dataclass(frozen=True)
class Storage:
    """Where the checkpoint lies: FSx for Lustre (capacity × tier, or measured), the node's NVMe, or S3."""

    kind: str  # "fsx-lustre", "local-nvme", "s3", "local-disk"
    client: str = "tcp"  # for FSx: "tcp", "efa" or "efa+gds"
    capacity_tib: float = 0.0
    tier_mbps_per_tib: float = 1000.0
    measured: bool = False  # the published set-up whose throughput was measured (Inputs.fsx_measured_gibps)

    def __post_init__(self) -> None:
        if self.kind not in ("fsx-lustre", "local-nvme", "s3", "local-disk"):
            raise ValueError(f"unknown storage kind {self.kind!r}")
        if self.client not in CLIENTS:
            raise ValueError(f"client must be one of {CLIENTS}, got {self.client!r}")

    def describe(self) -> str:
        if self.kind == "fsx-lustre":
            return (f"FSx for Lustre Persistent-2, {self.capacity_tib:g} TiB at {self.tier_mbps_per_tib:g} MB/s/TiB, "
                    f"client over {self.client.upper()}")
        return {"local-nvme": "the node's NVMe (RAID0)", "s3": "Amazon S3", "local-disk": "this machine's disk"}[self.kind]


@dataclass(frozen=True)
class Loader:
    """How a loader reads: one sequential stream, many requests in flight, or GDS; and how it reaches the GPUs."""

    name: str
    reads: str  # "sequential", "parallel" or "gds"
    requests_per_rank: int  # requests in flight per rank ("parallel", "gds")
    gpu_copy: str  # "one GPU after another", "overlapped" or "direct"
    source: str


LOADERS: dict[str, Loader] = {
    "cpu-path": Loader("cpu-path", "sequential", 1, "one GPU after another",
                       "the CPU path the AWS GDS post describes: the checkpoint streamed through host memory, "
                       "then copied to each GPU in turn over PCIe (" + AWS_GDS_BLOG + ")"),
    "vllm-default": Loader("vllm-default", "sequential", 1, "overlapped",
                           "vLLM's default safetensors loader: shards read one at a time, each rank through the "
                           "shared page cache (" + EKS_BLOG + "; vllm weight_utils.safetensors_weights_iterator)"),
    "runai-streamer": Loader("runai-streamer", "parallel", 32, "overlapped",
                             "Run:ai Model Streamer, concurrency 32 per worker as in " + EKS_BLOG),
    "fastsafetensors-gds": Loader("fastsafetensors-gds", "gds", 16, "direct",
                                  "fastsafetensors with GDS (its defaults: 16 threads, 16 MiB requests): every "
                                  "GPU reads its own files by DMA, all at once"),
    "s5cmd": Loader("s5cmd", "parallel", 50, "none", "s5cmd cp --concurrency 50 --part-size 100 (" + EKS_BLOG + ")"),
}


@dataclass(frozen=True)
class Limit:
    """One ceiling on a stage's rate, with what it is made of."""

    name: str
    gbps: float


@dataclass(frozen=True)
class Stage:
    """One step the bytes pass through; it runs at the slowest of its limits."""

    name: str
    nbytes: float  # bytes through this stage (per node)
    limits: tuple[Limit, ...]

    @property
    def binding(self) -> Limit:
        return min(self.limits, key=lambda limit: limit.gbps)

    @property
    def gbps(self) -> float:
        return self.binding.gbps

    @property
    def seconds(self) -> float:
        return self.nbytes / (self.gbps * GB) if self.nbytes else 0.0


@dataclass(frozen=True)
class Scenario:
    """A published (or asked-for) set-up: model, bytes and layout, storage, loader, optional staging."""

    key: str
    title: str
    model: str = "llama-3.1-405b"
    dtype: str = "fp8_e4m3"
    layout: str = "pre-sharded"
    storage: Storage = Storage("fsx-lustre", "efa+gds", 96.0, 1000.0, measured=True)
    loader: str = "fastsafetensors-gds"
    staging: Storage | None = None  # copied from here to the node's NVMe first (s5cmd), then loaded
    tp: int = 8
    published_s: float | None = None
    published: str = ""  # the figure as published, in words
    source: str = ""
    calibrates: str = ""  # the input taken from this very published run, if any: then it is no check

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.loader not in LOADERS:
            raise ValueError(f"unknown loader {self.loader!r}; choose from {', '.join(LOADERS)}")
        model_bytes(self.model, self.dtype)  # validates both


@dataclass(frozen=True)
class Projection:
    """A projected cold start of the weights: stages one after another, and what binds each."""

    scenario: Scenario
    nbytes: int
    stages: tuple[Stage, ...]
    fits_in_hbm: bool
    measured: tuple[str, ...]  # inputs that came from the user's measurements
    label: str = LABEL
    unavailable: str = ""  # why this path cannot run at all (GDS over TCP, say)

    @property
    def seconds(self) -> float:
        return math.inf if self.unavailable else sum(s.seconds for s in self.stages)

    @property
    def slowest(self) -> Stage:
        return max(self.stages, key=lambda s: s.seconds)

    @property
    def bottleneck(self) -> str:
        if self.unavailable:
            return self.unavailable
        stage = self.slowest
        return f"{stage.name}: {stage.binding.name}"

    @property
    def ratio(self) -> float | None:
        """Projected over published seconds (None where nothing was published)."""
        p = self.scenario.published_s
        return self.seconds / p if p else None

    def summary(self) -> str:
        s = self.scenario
        head = (f"{s.title} [{self.label}]: {self.nbytes / GB:.0f} GB ({s.dtype}, {s.layout}) by {s.loader} from "
                f"{s.storage.describe()}: ")
        if self.unavailable:
            return head + f"not possible: {self.unavailable}"
        lines = [head + f"{format_seconds(self.seconds)}; bottleneck: {self.bottleneck}"]
        lines += [f"    {st.name:<40} {st.nbytes / GB:8.1f} GB at {st.gbps:7.2f} GB/s = {format_seconds(st.seconds):>9}"
                  f"  [{st.binding.name}]" for st in self.stages]
        if s.published_s:
            lines.append(f"    published: {s.published} ({format_seconds(s.published_s)}) → projected/published "
                         f"{self.ratio:.2f}; source: {s.source}")
        return "\n".join(lines)

    def record(self) -> dict[str, Any]:
        """A flat dict for tables and files (labelled, so it is never taken for a measurement)."""
        return {
            "label": self.label, "scenario": self.scenario.key, "model": self.scenario.model,
            "dtype": self.scenario.dtype, "layout": self.scenario.layout, "loader": self.scenario.loader,
            "nbytes": self.nbytes, "seconds": self.seconds, "bottleneck": self.bottleneck,
            "published_s": self.scenario.published_s, "ratio": self.ratio, "measured": ",".join(self.measured),
            **{f"stage:{st.name}": st.seconds for st in self.stages},
        }


def format_seconds(seconds: float) -> str:
    """'17.0 s', '18.5 min', '1.20 h'."""
    if not math.isfinite(seconds):
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


# --- the model ------------------------------------------------------------------------------------


def storage_gbps(storage: Storage, inputs: Inputs) -> tuple[float, str]:
    """The storage's aggregate read rate and what it is made of."""
    if storage.kind == "fsx-lustre":
        if storage.measured:
            return inputs.fsx_measured_gibps * GIB / GB, f"FSx measured {inputs.fsx_measured_gibps:g} GiB/s"
        nominal = storage.capacity_tib * storage.tier_mbps_per_tib / 1000.0
        return nominal, f"FSx {storage.capacity_tib:g} TiB × {storage.tier_mbps_per_tib:g} MB/s/TiB"
    if storage.kind == "local-nvme":
        return inputs.nvme_stream_gbps * inputs.gpus_per_node, "NVMe RAID0 (not binding)"
    if storage.kind == "local-disk":
        if inputs.local_disk_gbps is None:
            raise ValueError("the local disk's rate is not known: calibrate() with a cold host load first")
        return inputs.local_disk_gbps, f"this machine's disk, measured {inputs.local_disk_gbps:.2f} GB/s"
    return inputs.s3_client_gbit / 8, f"node network to S3 {inputs.s3_client_gbit:g} Gbit/s"


def client_gbps(storage: Storage, inputs: Inputs) -> tuple[float, str]:
    gbit = {"tcp": inputs.client_tcp_gbit, "efa": inputs.client_efa_gbit,
            "efa+gds": inputs.client_efa_gds_gbit}[storage.client]
    gbit = min(gbit, inputs.node_network_gbit)
    return gbit / 8, f"client over {storage.client.upper()} {gbit:g} Gbit/s"


def _stream_gbps(storage: Storage, inputs: Inputs) -> tuple[float, str]:
    """The rate of one sequential reader through the page cache on this storage."""
    if storage.kind == "local-nvme":
        return inputs.nvme_stream_gbps, f"one sequential reader on NVMe {inputs.nvme_stream_gbps:g} GB/s"
    if storage.kind == "local-disk":
        return storage_gbps(storage, inputs)
    if storage.client == "tcp":
        return inputs.tcp_stream_gbps, f"one sequential reader over TCP {inputs.tcp_stream_gbps:g} GB/s"
    return inputs.efa_stream_gbps, f"one sequential reader over EFA {inputs.efa_stream_gbps:g} GB/s"


def _read_stage(name: str, nbytes: float, storage: Storage, loader: Loader, inputs: Inputs) -> Stage:
    limits = [Limit(*reversed(storage_gbps(storage, inputs)))]
    if storage.kind == "fsx-lustre":
        limits.append(Limit(*reversed(client_gbps(storage, inputs))))
        if storage.client == "tcp":  # one TCP flow to each storage server; EFA's SRD has no such cap
            servers = max(1, math.floor(storage.capacity_tib * 1024 / inputs.fsx_ost_gib + 1e-9))
            limits.append(Limit(f"{servers} server(s) × one TCP flow of {inputs.tcp_flow_gbit:g} Gbit/s",
                                servers * inputs.tcp_flow_gbit / 8))
    if loader.reads == "sequential":
        limits.append(Limit(*reversed(_stream_gbps(storage, inputs))))
    elif loader.reads == "parallel" and storage.kind == "s3":
        streams = loader.requests_per_rank * (inputs.gpus_per_node if loader.name != "s5cmd" else 1)
        limits.append(Limit(f"{streams} requests in flight × {inputs.s3_request_mbps:g} MB/s",
                            streams * inputs.s3_request_mbps / 1000))
    else:  # gds: every GPU by DMA, its own link
        limits.append(Limit(f"{inputs.gpus_per_node} PCIe links × {inputs.pcie_gbps:g} GB/s",
                            inputs.gpus_per_node * inputs.pcie_gbps))
        if inputs.gds_per_gpu_gbps is not None:
            limits.append(Limit(f"{inputs.gpus_per_node} GPUs × cuFile {inputs.gds_per_gpu_gbps:.2f} GB/s (measured)",
                                inputs.gpus_per_node * inputs.gds_per_gpu_gbps))
    if loader.reads != "gds" and inputs.host_copy_gbps is not None:
        limits.append(Limit(f"page cache → tensors {inputs.host_copy_gbps:.2f} GB/s (measured)", inputs.host_copy_gbps))
    return Stage(name, nbytes, tuple(limits))


def project(scenario: Scenario, inputs: Inputs = Inputs()) -> Projection:
    """The scenario's weights, stage by stage, with these inputs."""
    s, loader = scenario, LOADERS[scenario.loader]
    total = model_bytes(s.model, s.dtype)
    measured = tuple(sorted(inputs.measured))
    fits = total / inputs.gpus_per_node <= inputs.hbm_per_gpu_gb * GB
    if loader.reads == "gds" and (s.storage.kind != "fsx-lustre" or s.storage.client != "efa+gds"):
        why = ("GDS on Lustre needs an RDMA network: over TCP (no EFA) there is no direct path"
               if s.storage.client == "tcp" else "this client path has no GDS: choose 'efa+gds'")
        return Projection(s, total, (), fits, measured, unavailable=why)
    node_bytes = total
    if s.layout == "sliced (span)" and loader.reads == "gds":  # no shared page cache: every rank's span from storage
        node_bytes = total * read_amplification(s.model, s.tp)
    stages = []
    if s.staging is not None:
        stages.append(_read_stage("copy: S3 → node NVMe", total, s.staging, LOADERS["s5cmd"], inputs))
    source = "node NVMe" if s.staging is not None else s.storage.describe().split(",")[0]
    where = "HBM by DMA" if loader.reads == "gds" else "host memory"
    stages.append(_read_stage(f"read: {source} → {where}", node_bytes, s.storage, loader, inputs))
    if loader.gpu_copy == "one GPU after another":
        stages.append(Stage("copy: host → HBM, one GPU after another", total, (
            Limit(f"one pageable copy {inputs.pageable_h2d_gbps:g} GB/s", inputs.pageable_h2d_gbps),
            Limit(f"one PCIe link {inputs.pcie_gbps:g} GB/s", inputs.pcie_gbps))))
    return Projection(s, total, tuple(stages), fits, measured)


# --- the published scenarios ----------------------------------------------------------------------


def presets() -> list[Scenario]:
    """The published set-ups, each with its inputs as published and nothing tuned."""
    fsx_gds = Storage("fsx-lustre", "efa+gds", 96.0, 1000.0, measured=True)
    fsx_efa = Storage("fsx-lustre", "efa", 96.0, 1000.0, measured=True)
    fsx_tcp = Storage("fsx-lustre", "tcp", 4800 / 1024, 1000.0)
    return [
        Scenario("gds-405b-fp8", "P5en, 405B FP8 pre-sharded for TP 8, FSx over EFA with GDS", dtype="fp8_e4m3",
                 layout="pre-sharded", storage=fsx_gds, loader="fastsafetensors-gds", published_s=6.0,
                 published="about 6 seconds", source=AWS_GDS_BLOG),
        Scenario("cpu-405b-bf16", "P5en, 405B bf16 through the CPU path, same FSx (EFA, no GDS)", dtype="bf16",
                 layout="whole files", storage=fsx_efa, loader="cpu-path", published_s=15 * 60.0,
                 published="10–20 minutes (the middle: 15 min; 169× the 6 s: 17 min)", source=AWS_GDS_BLOG),
        Scenario("vllm-fsx-tcp", "vLLM TP 8, 405B FP8 release, FSx over TCP (CSI), 4,800 GiB at 1000 MB/s/TiB",
                 dtype="fp8_e4m3", layout="whole files", storage=fsx_tcp, loader="vllm-default",
                 published_s=29 * 60 + 27.0, published="29 min 27 s of weight loading, ~260 MB/s",
                 source=EKS_BLOG, calibrates="tcp_stream_gbps"),
        Scenario("s3-nvme", "405B FP8 release copied from S3 to the node's NVMe (s5cmd), then loaded by vLLM",
                 dtype="fp8_e4m3", layout="whole files", storage=Storage("local-nvme"), loader="vllm-default",
                 staging=Storage("s3"), published_s=2 * 60 + 17.0 + 92.0,
                 published="2 min 17 s download + 1 min 32 s loading", source=EKS_BLOG,
                 calibrates="nvme_stream_gbps (the loading stage)"),
        Scenario("runai-fsx-tcp", "vLLM with Run:ai streamer (concurrency 32), 405B FP8 release, same FSx over TCP",
                 dtype="fp8_e4m3", layout="whole files", storage=fsx_tcp, loader="runai-streamer",
                 published_s=6 * 60 + 38.0, published="6 min 38 s, ~1.1 GiB/s", source=EKS_BLOG),
        Scenario("gds-70b-bf16", "P5en, 70B bf16 pre-sharded for TP 8, FSx over EFA with GDS", model="llama-3.1-70b",
                 dtype="bf16", layout="pre-sharded", storage=fsx_gds, loader="fastsafetensors-gds",
                 published="measured in the AWS GDS post, figure not available here", source=AWS_GDS_BLOG),
        Scenario("cpu-70b-bf16", "P5en, 70B bf16 through the CPU path, same FSx (EFA, no GDS)", model="llama-3.1-70b",
                 dtype="bf16", layout="whole files", storage=fsx_efa, loader="cpu-path",
                 published="not published", source=""),
    ]


@dataclass(frozen=True)
class ScenarioRow:
    """One preset beside its published figure: the table of notebook 05."""

    name: str
    title: str
    inputs: str
    stages: dict[str, float]
    projected_s: float
    published_s: float | None
    published: str
    ratio: float | None
    source: str
    check: str  # "check", "calibration point" or "no published figure"
    projection: Projection = field(repr=False, compare=False)


def scenarios(inputs: Inputs = Inputs()) -> list[ScenarioRow]:
    """Every preset projected with one set of inputs, beside what was published for it."""
    rows = []
    for s in presets():
        p = project(s, inputs)
        check = "no published figure" if not s.published_s else ("calibration point" if s.calibrates else "check")
        rows.append(ScenarioRow(
            s.key, s.title, f"{p.nbytes / GB:.0f} GB {s.dtype}, {s.layout}; {s.storage.describe()}"
            + (f"; staged from {s.staging.describe()}" if s.staging else "") + f"; loader {s.loader}",
            {st.name: st.seconds for st in p.stages}, p.seconds, s.published_s, s.published, p.ratio, s.source,
            check, p))
    return rows


def scenarios_table(rows: Iterable[ScenarioRow]) -> str:
    """Markdown: scenario, published, projected, ratio, what kind of row, source."""
    lines = ["| scenario | published | projected | projected / published | row | source |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r.ratio:.2f}" if r.ratio else "—"
        lines.append(f"| {r.title} | {r.published or '—'} | {format_seconds(r.projected_s)} ({LABEL}) | {ratio} | "
                     f"{r.check} | {r.source.split(',')[0] if r.source else '—'} |")
    return "\n".join(lines)


# --- the rest of a cold start ---------------------------------------------------------------------


@dataclass(frozen=True)
class StartupStep:
    name: str
    seconds: float
    source: str


def startup(inputs: Inputs = Inputs()) -> list[StartupStep]:
    """What a vLLM server does besides loading weights before it serves: each step with its source."""
    meta = {f.name: f.metadata["source"] for f in fields(Inputs) if f.name != "measured"}
    return [StartupStep(name, getattr(inputs, key), meta[key]) for name, key in (
        ("container image pull", "image_pull_s"), ("torch.compile", "torch_compile_s"),
        ("CUDA graph capture", "cuda_graphs_s"), ("KV-cache set-up and warm-up", "kv_cache_init_s"))]


def time_to_serve(projection: Projection, inputs: Inputs = Inputs()) -> float:
    """Seconds until the server answers: the weights plus every startup step (a projection)."""
    return projection.seconds + sum(step.seconds for step in startup(inputs))


# --- assumptions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assumption:
    """One input as shown to the reader."""

    name: str
    value: Any
    unit: str
    status: str  # "assumed", "published", "calibration", "measured" or "unset"
    source: str

    def __str__(self) -> str:
        value = "—" if self.value is None else f"{self.value:g}" if isinstance(self.value, float) else str(self.value)
        return f"{self.name:<24} {value:>10} {self.unit:<18} {self.status:<11} {self.source}"


def assumptions(inputs: Inputs = Inputs()) -> list[Assumption]:
    """Every input, its value and unit, its status (published, calibration, assumed, measured, unset) and source."""
    rows = []
    for f in fields(inputs):
        if f.name == "measured":
            continue
        value, source = getattr(inputs, f.name), f.metadata["source"]
        if f.name in inputs.measured:
            status, source = "measured", inputs.measured[f.name]
        elif value is None:
            status = "unset"
        elif "calibration:" in source:
            status = "calibration"
        elif "assumed" in source:
            status = "assumed"
        else:
            status = "published"
        rows.append(Assumption(f.name, value, f.metadata["unit"], status, source))
    return rows


def table(inputs: Inputs = Inputs()) -> str:
    """`assumptions()` as aligned text."""
    head = f"{'name':<24} {'value':>10} {'unit':<18} {'status':<11} source"
    return "\n".join([head, *map(str, assumptions(inputs))])


# --- calibration from the user's own runs ---------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """Which measured load stands in for which input (and no other)."""

    parameter: str
    datapath: tuple[str, ...]
    device: str  # "cuda" or "cpu"
    cache: str  # "cold" or "warm"
    why: str


RULES: tuple[Rule, ...] = (
    Rule("gds_per_gpu_gbps", ("gds",), "cuda", "cold",
         "a cold gds run whose bytes KvikIO counted on the GDS backend: one GPU's direct read rate"),
    Rule("pcie_gbps", ("pinned-bounce",), "cuda", "warm",
         "warm pinned bounce: page cache → pinned buffers → DMA, a floor on the link's rate"),
    Rule("pageable_h2d_gbps", ("pageable-bounce",), "cuda", "warm",
         "warm pageable bounce: page cache → pageable buffer → cudaMemcpy"),
    Rule("host_copy_gbps", ("safetensors", "host-direct"), "cpu", "warm",
         "a warm host load: page cache → tensors, the host side of a bounce (one stage, not read + materialize)"),
    Rule("local_disk_gbps", ("host-direct", "safetensors"), "cpu", "cold",
         "a cold host load: this machine's local disk (labelled so: no network file system stream)"),
)


def _cache_state(record: Mapping[str, Any]) -> str | None:
    cache = str(record.get("cache", "")).strip().lower()
    if cache:
        return cache
    try:
        return cache_state(float(record["resident_before"]))
    except (KeyError, TypeError, ValueError):
        return None


def _is_gds_proper(record: Mapping[str, Any]) -> bool:
    """Only a run whose bytes KvikIO's counters put on the GDS backend counts (`gds_share`, see
    `gdslab.datapaths.gds.ByteSplit`): compatibility mode is a bounce inside, whatever a label says."""
    from .datapaths.gds import GDS_PROPER

    try:
        return float(record["gds_share"]) >= GDS_PROPER
    except (KeyError, TypeError, ValueError):
        return False


def matches(rule: Rule, record: Mapping[str, Any]) -> bool:
    """Whether a measured record may stand in for the rule's input."""
    if str(record.get("label", "")).lower() == LABEL or record.get("datapath") not in rule.datapath:
        return False
    device = str(record.get("device", "")).split(":")[0].lower()
    if device != rule.device or _cache_state(record) != rule.cache:
        return False
    if "gds" in rule.datapath and not _is_gds_proper(record):
        return False
    if record.get("simulated") or record.get("world", 1) not in (1, "1", None):
        return False  # a rank of a sharded run shares the machine: no single-path rate
    try:
        return float(record["gbps"]) > 0
    except (KeyError, TypeError, ValueError):
        return False


def calibrate(records: Iterable[Mapping[str, Any]], inputs: Inputs = Inputs()) -> Inputs:
    """`inputs` with each input that a measured record covers replaced by the median measured rate.

    Each record stands in for one input at most (`RULES` do not overlap): a cold host load
    is this machine's disk, not a network stream; a warm one is the host's copy, not a
    second materialize stage; a gds run only counts when its bytes went by GDS. Every
    replaced input is listed in `measured` with where its value came from.
    """
    records = list(records)
    updates: dict[str, Any] = {}
    measured = dict(inputs.measured)
    for rule in RULES:
        used = [r for r in records if matches(rule, r)]
        if not used:
            continue
        rates = [float(r["gbps"]) for r in used]
        updates[rule.parameter] = statistics.median(rates)
        devices = sorted({str(r.get("device")) for r in used})
        measured[rule.parameter] = (
            f"measured: median of {len(used)} {'/'.join(rule.datapath)} load(s) on {', '.join(devices)} "
            f"({min(rates):.2f}–{max(rates):.2f} GB/s); {rule.why}")
    return replace(inputs, **updates, measured=measured)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Records from one results file: a JSON list (or {"records": [...]}, or one record), JSON lines, or CSV."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(path, f"cannot read it: {e}") from None
    if path.suffix == ".csv":
        return [dict(row) for row in csv.DictReader(text.splitlines())]
    try:
        if path.suffix == ".jsonl":
            data: Any = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultsError(path, f"not valid JSON ({e})") from None
    if isinstance(data, dict):
        data = data.get("records", [data] if "datapath" in data else [])
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ResultsError(path, "expected a list of records (JSON objects)")
    return data


def find_records(folder: str | Path, skipped: list[ResultsError] | None = None) -> list[dict[str, Any]]:
    """Every record in folder/**/*.json, *.jsonl and *.csv (an absent folder holds none)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".json", ".jsonl", ".csv") and p.is_file())
    records: list[dict[str, Any]] = []
    for path in files:
        try:
            records += read_records(path)
        except ResultsError as e:
            if skipped is None:
                raise
            skipped.append(e)
    return records


__all__ = [
    "LABEL", "Inputs", "Storage", "Loader", "LOADERS", "Scenario", "Projection", "Stage", "Limit", "ScenarioRow",
    "StartupStep", "Assumption", "Rule", "RULES", "ResultsError", "CLIENTS", "LAYOUTS",
    "model_bytes", "read_amplification", "storage_gbps", "client_gbps", "project", "presets", "scenarios",
    "scenarios_table", "startup", "time_to_serve", "assumptions", "table", "calibrate", "matches", "read_records",
    "find_records", "format_seconds",
]
