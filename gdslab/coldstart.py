"""The cold-start model: bytes, GPUs, storage and link bandwidths → seconds until the weights sit in HBM.

A projection, never a measurement. It exists to make the "10–20 minutes → seconds" story
checkable: every number it uses is a named field of `Params` with a default and a one-line
source, `assumptions()` lists them, and `calibrate()` swaps assumed rates for rates the user
measured with gdslab. Each path is a few stages the bytes pass through; a stage runs at the
slowest of its limits, and the slowest stage names the bottleneck.

- bounce: storage → page cache → host tensors → pageable copy → HBM, driven by one loading
  process per node; stages run one after another (a naive loader) or overlapped.
- gds: storage → HBM by DMA (cuFile), every GPU reading its own tensor-parallel shard over its
  own PCIe link, all GPUs at once; bounded by the file system's share, the node's network
  share and the link.

Defaults are typical published figures (AWS, PCIe) or commonly observed rates, not measured
here; the sources say which. Weights only: process start, CUDA context, cuFile driver open
and warm-up are not counted.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ResultsError
from .loader import cache_state
from .synthetic import DTYPES, PRESETS

LABEL = "projection"
GB = 1e9  # rates are in GB/s of 1e9 bytes, as LoadResult.gbps


def _assume(default: Any, unit: str, source: str) -> Any:
    return field(default=default, metadata={"unit": unit, "source": source})


@dataclass(frozen=True)
class Params:
    """Every input of the model; defaults describe one P5en (8×H200) reading from FSx for Lustre."""

    model: str = _assume("llama-3.1-405b", "", "gdslab.synthetic.PRESETS: the real architecture's shapes")
    dtype: str = _assume("bf16", "", "bf16 as released (2 bytes a weight); fp8_e4m3 for the FP8 release (1 byte)")
    gpus_per_node: int = _assume(8, "GPUs", "P5en (p5en.48xlarge): 8× NVIDIA H200")
    nodes: int = _assume(1, "nodes", "one instance: 405B in bf16 (~812 GB) fits 8×141 GB of HBM")
    hbm_per_gpu_gb: float = _assume(141.0, "GB", "H200: 141 GB HBM3e (H100: 80 GB)")
    storage_capacity_tib: float = _assume(
        48.0, "TiB", "FSx for Lustre size, a choice: throughput scales with it (Persistent-2 SSD grows in 2.4 TiB steps)")
    storage_tier_mbps_per_tib: float = _assume(
        1000.0, "MB/s per TiB", "FSx for Lustre Persistent-2 SSD throughput tiers: 125, 250, 500 or 1000 MB/s per TiB (AWS docs)")
    client_max_gbit: float = _assume(
        1200.0, "Gbit/s per node", "AWS: FSx for Lustre with EFA + GDS delivers up to 1,200 Gbps to one client instance")
    node_network_gbit: float = _assume(3200.0, "Gbit/s per node", "P5en: 3,200 Gbps of EFAv3 networking")
    h2d_link_gbps: float = _assume(
        53.0, "GB/s per GPU", "PCIe Gen5 x16: 64 GB/s raw per direction, ~50–55 GB/s effective for large DMA")
    gds_per_gpu_gbps: float | None = _assume(
        None, "GB/s per GPU", "one GPU's cuFile read rate: not assumed (network, storage and link decide); set by calibrate()")
    resident_fraction: float = _assume(
        0.0, "fraction", "share of the checkpoint already in the node's page cache: 0 on a cold start (bounce only)")
    bounce_readers_per_node: int = _assume(
        1, "processes", "one process reads the checkpoint (torch.load / from_pretrained style, shard after shard)")
    bounce_stream_read_gbps: float = _assume(
        1.0, "GB/s per reader", "one buffered sequential read stream from a network file system: readahead-bound, ~0.5–2 GB/s")
    cpu_materialize_gbps: float = _assume(
        4.0, "GB/s per reader", "one process turning file bytes into host tensors (unpickle / copy out of the page cache): ~2–6 GB/s")
    pageable_h2d_gbps: float = _assume(
        12.0, "GB/s per copy stream", "pageable cudaMemcpy is staged by the driver through pinned buffers: ~10–25 GB/s on PCIe Gen5")
    bounce_copy_streams_per_node: int = _assume(
        1, "streams", "the loading process copies tensors to the GPUs one after another")
    bounce_overlap: bool = _assume(
        False, "", "a naive loader reads, then builds tensors, then copies (True: only the slowest stage counts)")
    measured: dict[str, str] = field(default_factory=dict, compare=False)  # parameter -> where its value came from

    def __post_init__(self) -> None:
        if self.model not in PRESETS:
            raise ValueError(f"unknown model {self.model!r}; choose from {', '.join(PRESETS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose from {', '.join(DTYPES)}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and f.name != "resident_fraction":
                if not value > 0 or math.isinf(value):
                    raise ValueError(f"{f.name} must be a positive finite number, got {value!r}")
        if not 0.0 <= self.resident_fraction <= 1.0:
            raise ValueError(f"resident_fraction must be within [0, 1], got {self.resident_fraction!r}")
        unknown = set(self.measured) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"measured names unknown parameters: {', '.join(sorted(unknown))}")

    @property
    def gpus(self) -> int:
        return self.gpus_per_node * self.nodes


def model_bytes(model: str = "llama-3.1-405b", dtype: str = "bf16") -> int:
    """Bytes of a model's weights: the preset's parameter count × the dtype's item size."""
    if model not in PRESETS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(PRESETS)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    return PRESETS[model].numel() * DTYPES[dtype].itemsize


def storage_gbps(params: Params) -> float:
    """The file system's aggregate throughput: capacity (TiB) × tier (MB/s per TiB), in GB/s."""
    return params.storage_capacity_tib * params.storage_tier_mbps_per_tib / 1000.0


def client_gbps(params: Params) -> float:
    """What one node can pull from the file system: the smaller of its network and the per-client cap, in GB/s."""
    return min(params.node_network_gbit, params.client_max_gbit) / 8.0


# --- records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """One ceiling on a stage's rate, with what it is made of."""

    name: str
    gbps: float


@dataclass(frozen=True)
class Stage:
    """One step the bytes pass through; it runs at the slowest of its limits."""

    name: str
    nbytes: float  # bytes through this stage, per `per`
    per: str  # "node" or "GPU": the unit that runs it, all units at once
    limits: tuple[Limit, ...]

    @property
    def gbps(self) -> float:
        return self.binding.gbps

    @property
    def binding(self) -> Limit:
        return min(self.limits, key=lambda limit: limit.gbps)

    @property
    def seconds(self) -> float:
        return self.nbytes / (self.gbps * GB) if self.nbytes else 0.0


@dataclass(frozen=True)
class ColdStart:
    """A projected cold start: seconds until the weights are in HBM, the bottleneck and the stages."""

    path: str  # "bounce" or "gds"
    model: str
    dtype: str
    nbytes: int
    nodes: int
    gpus_per_node: int
    stages: tuple[Stage, ...]
    overlap: bool  # True: stages run at once and the slowest decides; False: their times add up
    fits_in_hbm: bool
    measured: tuple[str, ...]  # parameters that came from measurements; all others were assumed
    label: str = LABEL

    @property
    def seconds(self) -> float:
        times = [s.seconds for s in self.stages]
        return max(times) if self.overlap else sum(times)

    @property
    def slowest(self) -> Stage:
        return max(self.stages, key=lambda s: s.seconds)

    @property
    def bottleneck(self) -> str:
        stage = self.slowest
        return f"{stage.name}: {stage.binding.name}"

    @property
    def gbps(self) -> float:
        """The whole model's bytes over the projected time (aggregate rate)."""
        return self.nbytes / self.seconds / GB if self.seconds else math.inf

    def breakdown(self) -> list[dict[str, Any]]:
        """One row per limit of every stage: what it would take alone, and whether it binds."""
        rows = []
        for stage in self.stages:
            for limit in stage.limits:
                rows.append({
                    "stage": stage.name, "per": stage.per, "limit": limit.name, "gbps": limit.gbps,
                    "seconds": stage.nbytes / (limit.gbps * GB) if stage.nbytes else 0.0,
                    "binding": limit is stage.binding,
                })
        return rows

    def summary(self) -> str:
        how = "overlapped" if self.overlap else "in sequence"
        lines = [
            f"{self.path} [{self.label}] {self.model} {self.dtype}, {self.nbytes / GB:.0f} GB on "
            f"{self.nodes}×{self.gpus_per_node} GPUs: {format_seconds(self.seconds)} "
            f"({self.gbps:.1f} GB/s aggregate); bottleneck: {self.bottleneck}",
            f"  stages ({how}):",
        ]
        lines += [
            f"    {s.name:<44} {s.nbytes / GB:8.1f} GB per {s.per:<4} at {s.gbps:7.2f} GB/s = "
            f"{format_seconds(s.seconds):>9}  [{s.binding.name}]"
            for s in self.stages
        ]
        if not self.fits_in_hbm:
            lines.append("  note: the weights do not fit these GPUs' HBM; add nodes")
        return "\n".join(lines)

    def record(self) -> dict[str, Any]:
        """A flat dict for tables and files (label included, so it is never taken for a measurement)."""
        return {
            "label": self.label, "path": self.path, "model": self.model, "dtype": self.dtype,
            "nbytes": self.nbytes, "nodes": self.nodes, "gpus_per_node": self.gpus_per_node,
            "seconds": self.seconds, "gbps": self.gbps, "bottleneck": self.bottleneck,
            "overlap": self.overlap, "fits_in_hbm": self.fits_in_hbm, "measured": ",".join(self.measured),
            **{f"stage:{s.name}": s.seconds for s in self.stages},
        }


def format_seconds(seconds: float) -> str:
    """'17.0 s', '18.5 min', '1.20 h'."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


# --- the two paths -----------------------------------------------------------------------------


def _common(params: Params, path: str, stages: list[Stage], overlap: bool) -> ColdStart:
    nbytes = model_bytes(params.model, params.dtype)
    return ColdStart(
        path=path, model=params.model, dtype=params.dtype, nbytes=nbytes, nodes=params.nodes,
        gpus_per_node=params.gpus_per_node, stages=tuple(stages), overlap=overlap,
        fits_in_hbm=nbytes / params.gpus <= params.hbm_per_gpu_gb * GB,
        measured=tuple(sorted(params.measured)),
    )


def bounce(params: Params = Params()) -> ColdStart:
    """The CPU bounce: each node's loading process(es) read, build host tensors, then copy to the GPUs."""
    p = params
    node_bytes = model_bytes(p.model, p.dtype) / p.nodes
    readers, streams = p.bounce_readers_per_node, p.bounce_copy_streams_per_node
    storage = storage_gbps(p)
    read = Stage("read: storage → page cache", node_bytes * (1.0 - p.resident_fraction), "node", (
        Limit(f"{readers} buffered read stream(s) × {p.bounce_stream_read_gbps:g} GB/s",
              readers * p.bounce_stream_read_gbps),
        Limit(f"file system {storage:g} GB/s ÷ {p.nodes} node(s)", storage / p.nodes),
        Limit(f"client network {client_gbps(p):g} GB/s", client_gbps(p)),
    ))
    materialize = Stage("materialize: page cache → host tensors", node_bytes, "node", (
        Limit(f"{readers} process(es) × {p.cpu_materialize_gbps:g} GB/s", readers * p.cpu_materialize_gbps),
    ))
    copy = Stage("copy: pageable host → HBM", node_bytes, "node", (
        Limit(f"{streams} pageable copy stream(s) × {p.pageable_h2d_gbps:g} GB/s", streams * p.pageable_h2d_gbps),
        Limit(f"{p.gpus_per_node} PCIe links × {p.h2d_link_gbps:g} GB/s", p.gpus_per_node * p.h2d_link_gbps),
    ))
    return _common(p, "bounce", [read, materialize, copy], p.bounce_overlap)


def gds(params: Params = Params()) -> ColdStart:
    """GPUDirect Storage: every GPU DMAs its own shard from storage, all GPUs at once; no page cache."""
    p = params
    gpu_bytes = model_bytes(p.model, p.dtype) / p.gpus
    storage = storage_gbps(p)
    limits = [
        Limit(f"file system {storage:g} GB/s ÷ {p.gpus} GPUs", storage / p.gpus),
        Limit(f"client network {client_gbps(p):g} GB/s ÷ {p.gpus_per_node} GPUs", client_gbps(p) / p.gpus_per_node),
        Limit(f"PCIe link {p.h2d_link_gbps:g} GB/s", p.h2d_link_gbps),
    ]
    if p.gds_per_gpu_gbps is not None:
        limits.append(Limit(f"cuFile read rate {p.gds_per_gpu_gbps:g} GB/s", p.gds_per_gpu_gbps))
    stage = Stage("direct: storage → HBM by DMA", gpu_bytes, "GPU", tuple(limits))
    return _common(p, "gds", [stage], overlap=True)


def project(params: Params = Params()) -> dict[str, ColdStart]:
    """Both paths for the same inputs: {"bounce": ..., "gds": ...}."""
    return {"bounce": bounce(params), "gds": gds(params)}


# --- assumptions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assumption:
    """One input of the model as shown to the reader."""

    name: str
    value: Any
    unit: str
    status: str  # "assumed", "measured", "computed" or "unset"
    source: str

    def __str__(self) -> str:
        value = "—" if self.value is None else f"{self.value:g}" if isinstance(self.value, float) else str(self.value)
        return f"{self.name:<28} {value:>16} {self.unit:<22} {self.status:<9} {self.source}"


def assumptions(params: Params = Params()) -> list[Assumption]:
    """Every input, its value and unit, whether it was assumed or measured, and why."""
    rows = [Assumption("model_bytes", model_bytes(params.model, params.dtype), "bytes", "computed",
                       f"PRESETS[{params.model!r}].numel() × {params.dtype} item size")]
    for f in fields(params):
        if f.name == "measured":
            continue
        value, measured = getattr(params, f.name), params.measured.get(f.name)
        status = "measured" if measured else "unset" if value is None else "assumed"
        rows.append(Assumption(f.name, value, f.metadata["unit"], status, measured or f.metadata["source"]))
    rows.append(Assumption("storage_gbps", storage_gbps(params), "GB/s", "computed",
                           "storage_capacity_tib × storage_tier_mbps_per_tib / 1000"))
    return rows


def table(params: Params = Params()) -> str:
    """`assumptions()` as aligned text."""
    head = f"{'name':<28} {'value':>16} {'unit':<22} {'status':<9} source"
    return "\n".join([head, *map(str, assumptions(params))])


# --- calibration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """Which measured load stands in for which parameter."""

    parameter: str
    datapath: str
    device: str  # "cuda" or "cpu": the record's device type
    cache: str | None  # "cold", "warm", or None for either
    why: str


RULES: tuple[Rule, ...] = (
    Rule("gds_per_gpu_gbps", "gds", "cuda", None,
         "one GPU's direct read rate, GDS proper (O_DIRECT: the page cache plays no part)"),
    Rule("h2d_link_gbps", "pinned-bounce", "cuda", "warm",
         "warm pinned bounce: page cache → pinned buffers → DMA, a floor on the link's rate"),
    Rule("pageable_h2d_gbps", "pageable-bounce", "cuda", "warm",
         "warm pageable bounce: page cache → pageable buffer → cudaMemcpy"),
    Rule("cpu_materialize_gbps", "safetensors", "cpu", "warm",
         "warm safetensors load on the host: one process building tensors from cached file bytes"),
    Rule("bounce_stream_read_gbps", "safetensors", "cpu", "cold",
         "cold safetensors load on the host: one process reading the files through the page cache"),
)


def _cache_state(record: Mapping[str, Any]) -> str | None:
    """"cold", "warm" or "partial" as the loader labels it (from `cache`, else `resident_before`)."""
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
    """Whether a measured record may stand in for the rule's parameter."""
    if str(record.get("label", "")).lower() == LABEL or record.get("datapath") != rule.datapath:
        return False
    device = str(record.get("device", "")).split(":")[0].lower()
    if device != rule.device or (rule.cache is not None and _cache_state(record) != rule.cache):
        return False
    if rule.datapath == "gds" and not _is_gds_proper(record):
        return False
    try:
        return float(record["gbps"]) > 0
    except (KeyError, TypeError, ValueError):
        return False


def calibrate(records: Iterable[Mapping[str, Any]], params: Params = Params()) -> Params:
    """`params` with each parameter that a measured record covers replaced by the median measured rate.

    Only records that say what ran are used (see `RULES`): projections, host analogues standing in
    for GPU paths, mixed cache states and GDS in compatibility mode are skipped. Every replaced
    parameter is listed in `measured` with where its value came from; the rest stay "assumed".
    """
    records = list(records)
    updates: dict[str, Any] = {}
    measured = dict(params.measured)
    for rule in RULES:
        used = [r for r in records if matches(rule, r)]
        if not used:
            continue
        rates = [float(r["gbps"]) for r in used]
        updates[rule.parameter] = statistics.median(rates)
        devices = sorted({str(r.get("device")) for r in used})
        measured[rule.parameter] = (
            f"measured: median of {len(used)} {rule.datapath} load(s) on {', '.join(devices)} "
            f"({min(rates):.2f}–{max(rates):.2f} GB/s); {rule.why}"
        )
    return replace(params, **updates, measured=measured)


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
    """Every record in folder/**/*.json, *.jsonl and *.csv (an absent folder holds none).

    A file that cannot be read as records raises `ResultsError`, or, when a `skipped` list is
    given, is appended to it instead (a notebook scanning a shared results folder goes on).
    """
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
    "LABEL", "Params", "Limit", "Stage", "ColdStart", "Assumption", "Rule", "RULES", "ResultsError",
    "model_bytes", "storage_gbps", "client_gbps", "bounce", "gds", "project", "assumptions", "table",
    "calibrate", "matches", "read_records", "find_records", "format_seconds",
]
