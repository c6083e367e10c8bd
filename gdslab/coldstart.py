"""The cold-start model: what a loader reads, through which ceilings, in which stages → seconds, beside
what was published for the same setup.

A projection, never a measurement. A scenario is a published setup: a model and its bytes
(bf16, or FP8 as Meta's release keeps it, `gdslab.fp8`), how they are laid out (pre-sharded
per rank, sliced on the fly, or whole files), the storage (FSx for Lustre with its published
layout, local NVMe, S3), the client's network path (TCP, EFA, EFA with GDS), and the loader
that reads it (vLLM's default loader, the CPU path, Run:ai's streamer, fastsafetensors with
GDS, s5cmd for staging). Each stage runs at the slowest of its limits; stages run one after
another. `project(scenario, inputs)` is a pure function of those two: a fleet of nodes can
call it per node.

Every input is a field of `Inputs` with its value as published, its unit and its source,
and one status: *published* (a document's figure), *calibration* (taken from one published
run: that run's row then checks nothing), *assumed* (a reasoned guess, said so) or *unset*
(waits for your measurements). Every row of `scenarios()` says what it is: **calibrated**
(its binding limit came from its own published figure), **predicted** (from published
inputs, or inputs calibrated on another row) or **assumed** (an assumed input binds). A row
that misses its published figure says why (`Scenario.miss`); no input is tuned to close it.
`out_of_sample()` holds predictions of published figures the model was not fitted on.

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
TIB_GIB = 1024

AWS_GDS_BLOG = ("AWS ML blog, 'Accelerate LLM model loading and increase context windows with GPUDirect on "
                "Amazon FSx for Lustre and TurboQuant' (figures as summarised by aissential.tech and "
                "hellomarvisaitoday.com)")
EKS_BLOG = ("A. Srirama (AWS), 'Reducing LLM Cold-Start Times on Amazon EKS: A Benchmark of Eight Model "
            "Loading Strategies', 2026-03-18 (vLLM 0.17.1, TP 8, p5/p5en.48xlarge)")
FSX_DOCS = "Amazon FSx for Lustre user guide, 'Throughput to individual client instances'"
FSX_SSD_DOCS = "Amazon FSx for Lustre user guide, 'Performance characteristics of SSD and HDD storage classes'"
S5CMD_DOCS = "s5cmd README (peak/s5cmd): --numworkers (default 256) files in flight, --concurrency parts per file"

STATUSES = ("published", "calibration", "assumed", "measured", "unset")

# FSx for Lustre Persistent-2 SSD, per TiB of storage, by throughput tier (MB/s/TiB) (FSX_SSD_DOCS):
# network throughput baseline (MB/s/TiB) and the file servers' in-memory cache (GiB/TiB).
FSX_NETWORK_MBPS_PER_TIB = {125: 320.0, 250: 640.0, 500: 1300.0, 1000: 2600.0}
FSX_CACHE_GIB_PER_TIB = {125: 3.4, 250: 6.8, 500: 13.7, 1000: 27.3}


def _input(default: Any, unit: str, source: str, status: str = "published", calibrates: str = "") -> Any:
    """A model input: its value as published, its unit, its source, its status and the row it was taken from."""
    assert status in STATUSES
    return field(default=default, metadata={"unit": unit, "source": source, "status": status,
                                            "calibrates": calibrates})


@dataclass(frozen=True)
class Inputs:
    """Every number the model uses, once, with its unit and source. Defaults: a P5en (8×H200) on AWS."""

    gpus_per_node: int = _input(8, "GPUs", "P5en (p5en.48xlarge): 8× NVIDIA H200")
    hbm_per_gpu_mib: float = _input(
        143771.0, "MiB", "H200 as the device reports it (nvidia-smi memory.total; torch.cuda.mem_get_info's "
                         "total): 143,771 MiB = 150.75 GB; the datasheet's '141 GB' is not its byte count")
    pcie_gbps: float = _input(53.0, "GB/s per GPU", "PCIe Gen5 x16 carries 64 GB/s raw per direction; ~53 GB/s "
                                                    "for large DMA after protocol overhead is assumed", "assumed")
    pageable_h2d_gbps: float = _input(
        12.0, "GB/s", "pageable cudaMemcpy, staged by the driver through pinned buffers (10–25 GB/s on Gen5)",
        "assumed")
    node_network_gbit: float = _input(3200.0, "Gbit/s", "P5en: 3,200 Gbps of EFA networking (" + EKS_BLOG + ")")
    client_tcp_gbit: float = _input(100.0, "Gbit/s", FSX_DOCS + ": a client without EFA")
    client_efa_gbit: float = _input(700.0, "Gbit/s", FSX_DOCS + ": a client with EFA")
    client_efa_gds_gbit: float = _input(1200.0, "Gbit/s", FSX_DOCS + ": a client with EFA and GDS")
    fsx_measured_gibps: float = _input(
        94.0, "GiB/s", "measured from one P5en with GDS on the published set-up: Persistent-2 with EFA, "
                       "96 TiB at 1000 MB/s/TiB, 20 OSTs (" + AWS_GDS_BLOG + ")", "calibration", "gds-405b-fp8")
    fsx_gib_per_ost: float = _input(
        96 * TIB_GIB / 20, "GiB per OST", "the published layout: 20 OSTs for 96 TiB (" + AWS_GDS_BLOG + "), "
                                          "applied to every FSx for Lustre here")
    tcp_stream_mibps: float = _input(
        260.0, "MiB/s", "one sequential reader on FSx for Lustre over TCP: vLLM's default loader, '~260 MB/s', "
                        "which is MiB/s (453.8 GiB in 29 min 27 s = 263 MiB/s; " + EKS_BLOG + ")",
        "calibration", "vllm-fsx-tcp")
    efa_stream_gbps: float = _input(
        1.0, "GB/s", "one sequential buffered reader on a network file system at its best: ~1 GB/s measured on "
                     "EFS Elastic by vLLM's default loader (" + EKS_BLOG + "), taken for Lustre over EFA",
        "assumed")
    nvme_stream_gbps: float = _input(
        5.30, "GB/s", "one sequential reader on the node's NVMe RAID0: vLLM's default loader at 5.30 GB/s "
                      "(" + EKS_BLOG + ")", "calibration", "s3-nvme")
    s3_request_mbps: float = _input(
        87.5, "MB/s per request", "AWS S3 performance guidelines: one request in flight per 85–90 MB/s "
                                  "(the middle of the range)")
    s3_client_gbit: float = _input(200.0, "Gbit/s", "the node's ENA bandwidth to S3", "assumed")
    s5cmd_numworkers: int = _input(256, "files in flight", S5CMD_DOCS + " (its default)")
    s5cmd_concurrency: int = _input(50, "parts per file", "s5cmd cp --concurrency 50 (" + EKS_BLOG + ")")
    s5cmd_part_mb: float = _input(100.0, "MB per part", "s5cmd cp --part-size 100 (" + EKS_BLOG + ")")
    release_file_gb: float = _input(
        5.0, "GB per file", "a Hugging Face release's safetensors files are at most ~5 GB each (max_shard_size)",
        "assumed")
    tcp_flow_gbit: float = _input(
        5.0, "Gbit/s per flow", "EC2 instance network bandwidth docs: one TCP flow outside a cluster placement "
                                "group carries at most 5 Gbps; " + FSX_DOCS + ": 5 Gbps per OST without EFA")
    tcp_flows_per_server: int = _input(
        1, "flows per OST", "a Lustre client over TCP reaches each storage server (OST) by one flow", "assumed")
    gds_per_gpu_gbps: float | None = _input(
        None, "GB/s per GPU", "one GPU's cuFile read rate: not assumed (network, storage and link decide); "
                              "set by calibrate() from a run labelled 'GDS (DMA proven)'", "unset")
    host_copy_gbps: float | None = _input(
        None, "GB/s", "the host's page cache → tensor copy: not assumed (it does not bind on these setups); "
                      "set by calibrate() from a warm host load", "unset")
    local_disk_gbps: float | None = _input(
        None, "GB/s", "this machine's local disk, cold: only for the 'local disk' scenario; set by calibrate()",
        "unset")
    # --- the rest of a cold start, besides the weights ---
    image_pull_s: float = _input(60.0, "s", "container image pull, ~1 min for vLLM's 9.3 GB image (" + EKS_BLOG + ")")
    kv_cache_init_s: float = _input(12.6, "s", "vLLM KV-cache set-up and warm-up, 12.6 s (" + EKS_BLOG + ")")
    cuda_graphs_s: float = _input(25.0, "s", "vLLM CUDA graph capture, ~17–25 s in vLLM logs (vLLM issues)",
                                  "assumed")
    torch_compile_s: float = _input(
        20.0, "s", "torch.compile, 5–20 s from a warm compile cache (Baseten docs), ~35 s cold (vLLM logs)",
        "assumed")
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

    @property
    def tcp_stream_gbps(self) -> float:
        return self.tcp_stream_mibps * MIB / GB

    @property
    def hbm_per_gpu_bytes(self) -> float:
        return self.hbm_per_gpu_mib * MIB


def input_meta(name: str) -> Mapping[str, Any]:
    """An input's unit, source, status and the row it was calibrated on."""
    for f in fields(Inputs):
        if f.name == name and name != "measured":
            return f.metadata
    raise ValueError(f"no input named {name!r}")


def input_status(inputs: Inputs, name: str) -> str:
    """'measured' where the user's run replaced it, else its status as published."""
    return "measured" if name in inputs.measured else input_meta(name)["status"]


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

    def osts(self, inputs: Inputs) -> int:
        """Storage servers (OSTs) of an FSx file system, from the published layout (at least one)."""
        return max(1, math.floor(self.capacity_tib * TIB_GIB / inputs.fsx_gib_per_ost + 1e-9))


@dataclass(frozen=True)
class Loader:
    """How a loader reads: one sequential stream, many requests in flight, or GDS; and how it reaches the GPUs."""

    name: str
    reads: str  # "sequential", "parallel" or "gds"
    requests_per_rank: int  # requests in flight per rank ("parallel", "gds"); s5cmd: see Inputs.s5cmd_*
    gpu_copy: str  # "one GPU after another", "overlapped", "direct" or "none"
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
    "s5cmd": Loader("s5cmd", "parallel", 0, "none",
                    "s5cmd cp --concurrency 50 --part-size 100 (" + EKS_BLOG + "): --numworkers files in flight, "
                    "--concurrency parts of each (" + S5CMD_DOCS + ")"),
}


@dataclass(frozen=True)
class Limit:
    """One ceiling on a stage's rate, what it is made of, and the inputs it comes from."""

    name: str
    gbps: float
    inputs: tuple[str, ...] = ()


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
    miss: str = ""  # why the projection misses the published figure, where it does (never a tuned input)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.loader not in LOADERS:
            raise ValueError(f"unknown loader {self.loader!r}; choose from {', '.join(LOADERS)}")
        model_bytes(self.model, self.dtype)  # validates both

    @property
    def calibrates(self) -> tuple[str, ...]:
        """The inputs taken from this very published run (then the row checks nothing)."""
        return tuple(f.name for f in fields(Inputs) if f.name != "measured"
                     and f.metadata["calibrates"] == self.key)


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
        return self.seconds / p if p and not self.unavailable else None

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


def storage_limit(storage: Storage, inputs: Inputs) -> Limit:
    """The storage's aggregate read rate, what it is made of, and its inputs."""
    if storage.kind == "fsx-lustre":
        if storage.measured:
            return Limit(f"FSx measured {inputs.fsx_measured_gibps:g} GiB/s", inputs.fsx_measured_gibps * GIB / GB,
                         ("fsx_measured_gibps",))
        disk = storage.capacity_tib * storage.tier_mbps_per_tib / 1000.0
        return Limit(f"FSx disk {storage.capacity_tib:g} TiB × {storage.tier_mbps_per_tib:g} MB/s/TiB", disk)
    if storage.kind == "local-nvme":
        return Limit("NVMe RAID0 (not binding)", inputs.nvme_stream_gbps * inputs.gpus_per_node, ("nvme_stream_gbps",))
    if storage.kind == "local-disk":
        if inputs.local_disk_gbps is None:
            raise ValueError("the local disk's rate is not known: calibrate() with a cold host load first")
        return Limit(f"this machine's disk, measured {inputs.local_disk_gbps:.2f} GB/s", inputs.local_disk_gbps,
                     ("local_disk_gbps",))
    return Limit(f"node network to S3 {inputs.s3_client_gbit:g} Gbit/s", inputs.s3_client_gbit / 8, ("s3_client_gbit",))


def storage_gbps(storage: Storage, inputs: Inputs) -> tuple[float, str]:
    """The storage's aggregate read rate and what it is made of."""
    limit = storage_limit(storage, inputs)
    return limit.gbps, limit.name


def client_limit(storage: Storage, inputs: Inputs) -> Limit:
    """FSx's per-client ceiling for this client path, within the node's network."""
    key = {"tcp": "client_tcp_gbit", "efa": "client_efa_gbit", "efa+gds": "client_efa_gds_gbit"}[storage.client]
    gbit = getattr(inputs, key)
    if inputs.node_network_gbit < gbit:
        return Limit(f"node network {inputs.node_network_gbit:g} Gbit/s", inputs.node_network_gbit / 8,
                     ("node_network_gbit",))
    return Limit(f"client over {storage.client.upper()} {gbit:g} Gbit/s", gbit / 8, (key,))


def client_gbps(storage: Storage, inputs: Inputs) -> tuple[float, str]:
    limit = client_limit(storage, inputs)
    return limit.gbps, limit.name


def _stream_limit(storage: Storage, inputs: Inputs) -> Limit:
    """The rate of one sequential reader through the page cache on this storage."""
    if storage.kind == "local-nvme":
        return Limit(f"one sequential reader on NVMe {inputs.nvme_stream_gbps:g} GB/s", inputs.nvme_stream_gbps,
                     ("nvme_stream_gbps",))
    if storage.kind == "local-disk":
        return storage_limit(storage, inputs)
    if storage.client == "tcp":
        return Limit(f"one sequential reader over TCP {inputs.tcp_stream_mibps:g} MiB/s", inputs.tcp_stream_gbps,
                     ("tcp_stream_mibps",))
    return Limit(f"one sequential reader over EFA {inputs.efa_stream_gbps:g} GB/s", inputs.efa_stream_gbps,
                 ("efa_stream_gbps",))


def _s5cmd_requests(nbytes: float, inputs: Inputs) -> tuple[int, int, int]:
    """(files in flight, parts in flight per file, requests in flight) for s5cmd copying `nbytes`."""
    files = max(1, math.ceil(nbytes / (inputs.release_file_gb * GB)))
    file_bytes = nbytes / files
    in_flight = min(inputs.s5cmd_numworkers, files)
    parts = min(inputs.s5cmd_concurrency, max(1, math.ceil(file_bytes / (inputs.s5cmd_part_mb * 1e6))))
    return in_flight, parts, in_flight * parts


def _read_stage(name: str, nbytes: float, storage: Storage, loader: Loader, inputs: Inputs) -> Stage:
    limits = [storage_limit(storage, inputs)]
    if storage.kind == "fsx-lustre":
        limits.append(client_limit(storage, inputs))
        if storage.client == "tcp":  # one flow to each storage server (assumed); EFA's SRD has no such cap
            servers = storage.osts(inputs)
            limits.append(Limit(f"{servers} OST(s) × {inputs.tcp_flows_per_server} TCP flow(s) of "
                                f"{inputs.tcp_flow_gbit:g} Gbit/s",
                                servers * inputs.tcp_flows_per_server * inputs.tcp_flow_gbit / 8,
                                ("fsx_gib_per_ost", "tcp_flows_per_server", "tcp_flow_gbit")))
    if loader.reads == "sequential":
        limits.append(_stream_limit(storage, inputs))
    elif loader.reads == "parallel" and storage.kind == "s3":
        if loader.name == "s5cmd":
            files, parts, streams = _s5cmd_requests(nbytes, inputs)
            what = f"s5cmd {files} files × {parts} parts in flight"
            used: tuple[str, ...] = ("s5cmd_numworkers", "s5cmd_concurrency", "s5cmd_part_mb", "release_file_gb",
                                     "s3_request_mbps")
        else:
            streams = loader.requests_per_rank * inputs.gpus_per_node
            what, used = f"{streams} requests in flight", ("s3_request_mbps",)
        limits.append(Limit(f"{what} × {inputs.s3_request_mbps:g} MB/s", streams * inputs.s3_request_mbps / 1000,
                            used))
    elif loader.reads == "gds":  # every GPU by DMA, its own link
        limits.append(Limit(f"{inputs.gpus_per_node} PCIe links × {inputs.pcie_gbps:g} GB/s",
                            inputs.gpus_per_node * inputs.pcie_gbps, ("pcie_gbps",)))
        if inputs.gds_per_gpu_gbps is not None:
            limits.append(Limit(f"{inputs.gpus_per_node} GPUs × cuFile {inputs.gds_per_gpu_gbps:.2f} GB/s (measured)",
                                inputs.gpus_per_node * inputs.gds_per_gpu_gbps, ("gds_per_gpu_gbps",)))
    if loader.reads != "gds" and inputs.host_copy_gbps is not None:
        limits.append(Limit(f"page cache → tensors {inputs.host_copy_gbps:.2f} GB/s (measured)", inputs.host_copy_gbps,
                            ("host_copy_gbps",)))
    return Stage(name, nbytes, tuple(limits))


def project(scenario: Scenario, inputs: Inputs = Inputs()) -> Projection:
    """The scenario's weights on one node, stage by stage, with these inputs (a pure function of both)."""
    s, loader = scenario, LOADERS[scenario.loader]
    total = model_bytes(s.model, s.dtype)
    measured = tuple(sorted(inputs.measured))
    fits = total / inputs.gpus_per_node <= inputs.hbm_per_gpu_bytes
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
            Limit(f"one pageable copy {inputs.pageable_h2d_gbps:g} GB/s", inputs.pageable_h2d_gbps,
                  ("pageable_h2d_gbps",)),
            Limit(f"one PCIe link {inputs.pcie_gbps:g} GB/s", inputs.pcie_gbps, ("pcie_gbps",)))))
    return Projection(s, total, tuple(stages), fits, measured)


# --- what the published set-up's ceiling really is ------------------------------------------------


@dataclass(frozen=True)
class Ceiling:
    name: str
    gbps: float
    source: str


def fsx_ceilings(capacity_tib: float = 96.0, tier: int = 1000, client: str = "efa+gds",
                 inputs: Inputs = Inputs()) -> list[Ceiling]:
    """Every ceiling between an FSx for Lustre Persistent-2 file system and one client, fastest last.

    The provisioned tier (MB/s/TiB) is the *disk* throughput; reads the file servers serve from
    their in-memory cache run at the *network* throughput, which is higher (FSX_SSD_DOCS); one
    client is capped by FSx's per-client figure for its path. 96 TiB × 1000 MB/s/TiB = 96 GB/s
    (89.4 GiB/s) is below the 94 GiB/s measured: part of that read came from the servers' cache.
    """
    if tier not in FSX_NETWORK_MBPS_PER_TIB:
        raise ValueError(f"tier must be one of {sorted(FSX_NETWORK_MBPS_PER_TIB)} MB/s/TiB, got {tier!r}")
    storage = Storage("fsx-lustre", client, capacity_tib, float(tier))
    client_ceiling = client_limit(storage, inputs)
    rows = [
        Ceiling(f"disk: {capacity_tib:g} TiB × {tier} MB/s/TiB", capacity_tib * tier / 1000, FSX_SSD_DOCS),
        Ceiling(f"network: {capacity_tib:g} TiB × {FSX_NETWORK_MBPS_PER_TIB[tier]:g} MB/s/TiB (reads from the "
                f"servers' cache: {capacity_tib * FSX_CACHE_GIB_PER_TIB[tier]:,.0f} GiB of RAM)",
                capacity_tib * FSX_NETWORK_MBPS_PER_TIB[tier] / 1000, FSX_SSD_DOCS),
        Ceiling(client_ceiling.name, client_ceiling.gbps, FSX_DOCS),
        Ceiling(f"{inputs.gpus_per_node} PCIe links × {inputs.pcie_gbps:g} GB/s",
                inputs.gpus_per_node * inputs.pcie_gbps, "assumed (Inputs.pcie_gbps)"),
    ]
    return sorted(rows, key=lambda c: c.gbps)


# --- the published scenarios ----------------------------------------------------------------------

RUNAI_MISS = ("Over TCP the model gives a client one flow of 5 Gbit/s per storage server (assumed), and the "
              "published layout (20 OSTs for 96 TiB: 4,915 GiB each) gives this 4,800 GiB file system one "
              "server: 0.625 GB/s. The published ~1.1 GiB/s is about two flows' worth. Either this file system "
              "(no EFA) is laid out with smaller servers than the EFA one whose layout was published, or "
              "Lustre's TCP transport opens more than one connection per server (ksocklnd conns_per_peer): the "
              "model knows neither, and no input is changed to close the gap.")
S3_MISS = ("With s5cmd's flags as they work (--numworkers 256 files in flight, --concurrency 50 parts of each), "
           "thousands of S3 requests are in flight, so S3's per-request rate does not bind and the node's "
           "network to S3 (assumed 200 Gbit/s) does: the copy projects to ~20 s, the published download took "
           "2 min 17 s (3.6 GB/s). The model has no input for what paced it (s5cmd's own CPU and its writes to "
           "the NVMe RAID0); the load stage is the calibration point of the NVMe reader.")
TCP_NOTE = ("A consistency check, not a prediction: the read runs at the benchmark's own ~260 MiB/s (one reader "
            "through the page cache). 453.8 GiB at 260 MiB/s is 29.8 min; the rest of the 1% is the '~' in "
            "'~260'. What it does show: one stream, not the file system (4.7 GB/s) nor the network, binds.")
GDS_MISS = ("A consistency check, not a prediction: the read stage runs at the post's own 94 GiB/s. 453.8 GiB "
            "at 94 GiB/s is 4.8 s; the post's 'about 6 s' also holds what is not the read (opening files, "
            "cuFile registration, the loader's set-up).")


def presets() -> list[Scenario]:
    """The published set-ups, each with its inputs as published and nothing tuned."""
    fsx_gds = Storage("fsx-lustre", "efa+gds", 96.0, 1000.0, measured=True)
    fsx_efa = Storage("fsx-lustre", "efa", 96.0, 1000.0, measured=True)
    fsx_tcp = Storage("fsx-lustre", "tcp", 4800 / TIB_GIB, 1000.0)
    return [
        Scenario("gds-405b-fp8", "P5en, 405B FP8 pre-sharded for TP 8, FSx over EFA with GDS", dtype="fp8_e4m3",
                 layout="pre-sharded", storage=fsx_gds, loader="fastsafetensors-gds", published_s=6.0,
                 published="about 6 seconds", source=AWS_GDS_BLOG, miss=GDS_MISS),
        Scenario("cpu-405b-bf16", "P5en, 405B bf16 through the CPU path, same FSx (EFA, no GDS)", dtype="bf16",
                 layout="whole files", storage=fsx_efa, loader="cpu-path", published_s=15 * 60.0,
                 published="10–20 minutes (the middle: 15 min; 169× the 6 s: 17 min)", source=AWS_GDS_BLOG),
        Scenario("vllm-fsx-tcp", "vLLM TP 8, 405B FP8 release, FSx over TCP (CSI), 4,800 GiB at 1000 MB/s/TiB",
                 dtype="fp8_e4m3", layout="whole files", storage=fsx_tcp, loader="vllm-default",
                 published_s=29 * 60 + 27.0, published="29 min 27 s of weight loading, ~260 MiB/s",
                 source=EKS_BLOG, miss=TCP_NOTE),
        Scenario("s3-nvme", "405B FP8 release copied from S3 to the node's NVMe (s5cmd), then loaded by vLLM",
                 dtype="fp8_e4m3", layout="whole files", storage=Storage("local-nvme"), loader="vllm-default",
                 staging=Storage("s3"), published_s=2 * 60 + 17.0 + 92.0,
                 published="2 min 17 s download + 1 min 32 s loading", source=EKS_BLOG, miss=S3_MISS),
        Scenario("runai-fsx-tcp", "vLLM with Run:ai streamer (concurrency 32), 405B FP8 release, same FSx over TCP",
                 dtype="fp8_e4m3", layout="whole files", storage=fsx_tcp, loader="runai-streamer",
                 published_s=6 * 60 + 38.0, published="6 min 38 s, ~1.1 GiB/s", source=EKS_BLOG, miss=RUNAI_MISS),
        Scenario("gds-70b-bf16", "P5en, 70B bf16 pre-sharded for TP 8, FSx over EFA with GDS", model="llama-3.1-70b",
                 dtype="bf16", layout="pre-sharded", storage=fsx_gds, loader="fastsafetensors-gds",
                 published="measured in the AWS GDS post, figure not available here", source=AWS_GDS_BLOG),
        Scenario("cpu-70b-bf16", "P5en, 70B bf16 through the CPU path, same FSx (EFA, no GDS)", model="llama-3.1-70b",
                 dtype="bf16", layout="whole files", storage=fsx_efa, loader="cpu-path",
                 published="not published", source=""),
    ]


KINDS = ("calibrated", "predicted", "assumed")
MISS_BAND = 0.2  # |projected / published − 1| beyond this is a miss, and the row says why


def _describe_input(inputs: Inputs, name: str) -> str:
    value = getattr(inputs, name)
    return f"{name} = {value:g} {input_meta(name)['unit']}"


def _classify_stage(stage: Stage, key: str, inputs: Inputs) -> tuple[str, str]:
    used = stage.binding.inputs
    own = [n for n in used if input_status(inputs, n) == "calibration" and input_meta(n)["calibrates"] == key]
    assumed = [n for n in used if input_status(inputs, n) == "assumed"]
    if own:
        return "calibrated", "from its own published figure: " + "; ".join(
            f"{_describe_input(inputs, n)} ({input_meta(n)['source'].split(' (')[0]})" for n in own)
    if assumed:
        return "assumed", "; ".join(f"{_describe_input(inputs, n)} ({input_meta(n)['source'].split(' (')[0]})"
                                    for n in assumed)
    if not used:
        return "predicted", f"from the scenario's own set-up: {stage.binding.name}"
    basis = []
    for n in used:
        status = input_status(inputs, n)
        basis.append(_describe_input(inputs, n) + (f", calibrated on '{input_meta(n)['calibrates']}'"
                                                   if status == "calibration" else f", {status}"))
    return "predicted", "from " + "; ".join(basis)


def classify(projection: Projection, inputs: Inputs = Inputs()) -> tuple[str, str]:
    """(kind, basis) of a projected row, from the inputs behind each stage's binding limit.

    *calibrated*: a binding input was taken from this row's own published figure (a
    consistency check); *assumed*: an assumed input binds; *predicted*: every binding input
    is published, measured, or calibrated on another row. A row with several stages is
    calibrated if any stage is, else assumed if any is; its basis names each stage's.
    """
    if projection.unavailable:
        return "predicted", "not possible: " + projection.unavailable
    per_stage = [(st, *_classify_stage(st, projection.scenario.key, inputs)) for st in projection.stages]
    kinds = {kind for _, kind, _ in per_stage}
    kind = next(k for k in ("calibrated", "assumed", "predicted") if k in kinds)
    if len(per_stage) == 1:
        return kind, per_stage[0][2]
    return kind, "; ".join(f"[{st.name.split(':')[0]} stage, {k}] {basis}" for st, k, basis in per_stage)


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
    kind: str  # "calibrated", "predicted" or "assumed"
    basis: str  # from which figure / from which inputs / what is assumed
    miss: str  # why it misses its published figure ('' where it does not)
    projection: Projection = field(repr=False, compare=False)

    @property
    def missed(self) -> bool:
        return self.ratio is not None and abs(self.ratio - 1) > MISS_BAND


def scenarios(inputs: Inputs = Inputs()) -> list[ScenarioRow]:
    """Every preset projected with one set of inputs, beside what was published for it."""
    rows = []
    for s in presets():
        p = project(s, inputs)
        kind, basis = classify(p, inputs)
        ratio = p.ratio
        missed = ratio is not None and abs(ratio - 1) > MISS_BAND
        rows.append(ScenarioRow(
            s.key, s.title, f"{p.nbytes / GB:.0f} GB {s.dtype}, {s.layout}; {s.storage.describe()}"
            + (f"; staged from {s.staging.describe()}" if s.staging else "") + f"; loader {s.loader}",
            {st.name: st.seconds for st in p.stages}, p.seconds, s.published_s, s.published, ratio, s.source,
            kind, basis, s.miss if (missed or kind == "calibrated") else "", p))
    return rows


def scenarios_table(rows: Iterable[ScenarioRow]) -> str:
    """Markdown: scenario, published, projected, ratio, kind and basis, source."""
    lines = ["| scenario | published | projected | projected / published | kind: basis | source |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r.ratio:.2f}" + (" (miss)" if r.missed else "") if r.ratio else "—"
        basis = f"**{r.kind}**: {r.basis}" + (f" — *{'why' if r.missed else 'note'}:* {r.miss}" if r.miss else "")
        lines.append(f"| {r.title} | {r.published or '—'} | {format_seconds(r.projected_s)} ({LABEL}) | {ratio} | "
                     f"{basis.replace('|', '/')} | {r.source.split(',')[0] if r.source else '—'} |")
    return "\n".join(lines)


# --- out of sample: published figures the model was not fitted on ----------------------------------


@dataclass(frozen=True)
class OutOfSample:
    """A published figure the model was not fitted on, the model's prediction of it, and the verdict."""

    key: str
    what: str
    published: float
    unit: str
    source: str
    predicted: float  # in `unit`
    inputs: str  # what the prediction is made of
    why: str  # what a hit or a miss says

    @property
    def ratio(self) -> float:
        return self.predicted / self.published

    @property
    def hit(self) -> bool:
        return abs(self.ratio - 1) <= 0.10


def out_of_sample(inputs: Inputs = Inputs()) -> list[OutOfSample]:
    """Predictions of published figures none of the inputs was taken from (hit: within ±10%)."""
    fsx = fsx_ceilings(96.0, 1000, "efa+gds", inputs)
    p5_node = min(inputs.node_network_gbit, inputs.gpus_per_node * inputs.pcie_gbps * 8)
    return [
        OutOfSample(
            "fsx-96tib-throughput", "throughput one P5en read with GDS from the published 96 TiB file system",
            94.0, "GiB/s", AWS_GDS_BLOG, fsx[0].gbps * GB / GIB,
            "the slowest of: " + "; ".join(f"{c.name} = {c.gbps:.1f} GB/s" for c in fsx),
            "Under by 5%: the disk ceiling (96 GB/s = 89.4 GiB/s) is below what was measured, so part of "
            "the checkpoint came from the file servers' memory (2,621 GiB of it on this file system), "
            "which FSx serves at the network rate. One client's real ceiling here is FSx's per-client "
            "figure for EFA with GDS (150 GB/s) once the checkpoint is in the servers' memory; the model "
            "counts disk reads only."),
        OutOfSample(
            "p5-client-gds", "FSx for Lustre throughput to one P5-class client with EFA and GDS",
            1200.0, "Gbit/s", FSX_DOCS, p5_node,
            f"the node's own limits: EFA {inputs.node_network_gbit:g} Gbit/s; {inputs.gpus_per_node} PCIe links "
            f"× {inputs.pcie_gbps:g} GB/s = {inputs.gpus_per_node * inputs.pcie_gbps * 8:g} Gbit/s",
            "A miss (×2.7): a P5's NICs and PCIe links could carry 3,200 Gbit/s, FSx serves one client at most "
            "1,200. The cap is the service's, not the node's hardware: the model holds it only as an input "
            "(client_efa_gds_gbit), it cannot predict it."),
    ]


def out_of_sample_table(rows: Iterable[OutOfSample]) -> str:
    lines = ["| published figure | published | predicted | predicted / published | verdict | made of | source |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.what} | {r.published:g} {r.unit} | {r.predicted:.1f} {r.unit} | {r.ratio:.2f} | "
                     f"{'hit' if r.hit else 'miss'}: {r.why} | {r.inputs} | {r.source.split(',')[0]} |")
    return "\n".join(lines)


# --- the rest of a cold start ---------------------------------------------------------------------


@dataclass(frozen=True)
class StartupStep:
    name: str
    seconds: float
    source: str


def startup(inputs: Inputs = Inputs()) -> list[StartupStep]:
    """What a vLLM server does besides loading weights before it serves: each step with its source."""
    return [StartupStep(name, getattr(inputs, key), input_meta(key)["source"]) for name, key in (
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
        value, source, status = getattr(inputs, f.name), f.metadata["source"], input_status(inputs, f.name)
        if status == "measured":
            source = inputs.measured[f.name]
        elif status == "calibration":
            source += f"; calibration: scenario '{f.metadata['calibrates']}'"
        elif value is None:
            status = "unset"
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
         "a cold gds run labelled 'GDS (DMA proven)': one GPU's direct read rate"),
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


GDS_DMA_PROVEN = "GDS (DMA proven)"  # the gds path's label for a run whose DMA was shown (gdslab.gds_evidence)
GDS_LABEL_FIELDS = ("gds_label", "gds_kind")  # where a record carries that label


def _dma_proven(record: Mapping[str, Any]) -> bool:
    """Only a run labelled exactly 'GDS (DMA proven)' counts: 'cuFile (DMA not proven)' may be cuFile's
    own bounce inside, 'POSIX (KvikIO fallback: ...)' is a bounce, and neither a byte share nor an
    older label ('GDS proper') says DMA happened."""
    return any(record.get(name) == GDS_DMA_PROVEN for name in GDS_LABEL_FIELDS)


def matches(rule: Rule, record: Mapping[str, Any]) -> bool:
    """Whether a measured record may stand in for the rule's input."""
    if str(record.get("label", "")).lower() == LABEL or record.get("datapath") not in rule.datapath:
        return False
    device = str(record.get("device", "")).split(":")[0].lower()
    if device != rule.device or _cache_state(record) != rule.cache:
        return False
    if "gds" in rule.datapath and not _dma_proven(record):
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
    second materialize stage; a gds run only counts when labelled 'GDS (DMA proven)'. Every
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
    "StartupStep", "Assumption", "Rule", "RULES", "ResultsError", "CLIENTS", "LAYOUTS", "KINDS", "Ceiling",
    "OutOfSample", "GDS_DMA_PROVEN", "model_bytes", "read_amplification", "storage_gbps", "client_gbps",
    "storage_limit", "client_limit", "project", "presets", "scenarios", "scenarios_table", "classify",
    "fsx_ceilings", "out_of_sample", "out_of_sample_table", "input_meta", "input_status", "startup",
    "time_to_serve", "assumptions", "table", "calibrate", "matches", "read_records", "find_records",
    "format_seconds",
]
