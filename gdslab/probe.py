"""What this machine can do for loading weights, and the GDS verdict: ready, not possible, or cannot tell.

GPUDirect Storage needs every link of a chain: an NVIDIA GPU and its driver (libcuda),
cuFile (here through KvikIO), a way for storage to DMA into GPU memory (the nvidia-fs
kernel module, or PCIe P2PDMA for local NVMe on CUDA 12.8 and later) and storage that can
do it (see `gdslab.filesystem`). The parts are collected by their own modules
(`gpus`, `kvikio_info`, `filesystem`, `pcie`, `cache`); this one puts them in one report
and decides. Where a part cannot be known from here (LNet unreadable, P2PDMA
unconfirmable) the verdict says "cannot tell" and why, instead of guessing either way.
Warnings (GPU and storage under different PCIe root complexes, an IOMMU that translates)
do not rule GDS out, but slow or block it, and are said beside the verdict.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import gpus as _gpus
from . import kvikio_info as _kvikio
from . import pcie
from .filesystem import GDS_FILESYSTEMS, LOCAL_FS, FileSystemInfo, filesystem_of
from .gpus import CudaInfo, GpuInfo, gpu_available
from .kvikio_info import KvikioInfo, kvikio_status
from .sizes import format_size
from .sysroot import HOST, SysRoot

__all__ = [
    "ProbeReport", "GpuInfo", "CudaInfo", "KvikioInfo", "FileSystemInfo", "StoragePath", "Decision",
    "probe", "report_for", "decide", "storage_paths", "gpu_available", "kvikio_status", "filesystem_of",
    "GDS_FILESYSTEMS", "READY", "NOT_POSSIBLE", "CANNOT_TELL",
]

READY, NOT_POSSIBLE, CANNOT_TELL = "ready", "not possible", "cannot tell"
P2PDMA_CUFILE = (1, 13)  # libcufile of CUDA 12.8, the first to DMA from NVMe by PCIe P2PDMA without nvidia-fs


@dataclass(frozen=True)
class StoragePath:
    """A GPU and the storage device nearest to it in the PCIe tree (an NVMe drive or an RDMA NIC)."""

    gpu: int
    gpu_bus_id: str
    device: str
    device_kind: str       # "NVMe drive" or "RDMA NIC"
    device_bus_id: str
    relation: str          # one of pcie.SWITCH, HOST_BRIDGE, NUMA_NODE, CROSS_SOCKET
    iommu: str             # the GPU's IOMMU handling: off, passthrough, translated (...)

    def describe(self) -> str:
        return (f"GPU {self.gpu} [{self.gpu_bus_id}] ↔ {self.device_kind} {self.device} [{self.device_bus_id}]: "
                f"{self.relation}; IOMMU {self.iommu}")


@dataclass(frozen=True)
class Decision:
    """The verdict's parts: its state, what rules GDS out, what cannot be told, what slows it."""

    state: str
    reasons: tuple[str, ...]
    unknowns: tuple[str, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class ProbeReport:
    """One machine's report: what notebooks show, `gdslab env` prints and every result carries."""

    os: str
    kernel: str
    python: str
    cpu_model: str
    cpu_count: int
    cpu_affinity: int
    ram_total: int
    ram_available: int
    cuda: CudaInfo
    kvikio: KvikioInfo
    nvidia_fs_loaded: bool
    nvidia_fs: str                       # version text, or why it is not there
    filesystem: FileSystemInfo
    page_cache_evictable: bool
    page_cache: str
    gds_ready: bool
    reasons: tuple[str, ...]             # every missing link, each with its reason
    gds_state: str = NOT_POSSIBLE        # READY, NOT_POSSIBLE or CANNOT_TELL
    unknowns: tuple[str, ...] = ()       # what cannot be told from here, each with why
    warnings: tuple[str, ...] = ()       # what slows or may block GDS (PCIe topology, IOMMU)
    topology: tuple[StoragePath, ...] = ()

    @property
    def gpus(self) -> tuple[GpuInfo, ...]:
        return self.cuda.gpus

    @property
    def verdict(self) -> str:
        """One line: "GDS: ready ...", "GDS: not possible here because ..." or "GDS: cannot tell here: ..."."""
        warn = ("; but " + "; ".join(self.warnings)) if self.warnings else ""
        if self.gds_state == READY:
            fs = self.filesystem
            return f"GDS: ready ({fs.fstype} at {fs.mount_point}; cuFile reports GDS available){warn}"
        if self.gds_state == CANNOT_TELL:
            return "GDS: cannot tell here: " + "; ".join(self.unknowns) + warn
        return "GDS: not possible here because " + "; ".join(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what result records embed), with flat `verdict` and `fs_type` for tables."""
        d = dataclasses.asdict(self)
        d["verdict"] = self.verdict
        d["fs_type"] = self.filesystem.fstype
        return json.loads(json.dumps(d, default=str))

    def as_text(self) -> str:
        """The report as `gdslab env` prints it."""
        c, k, fs = self.cuda, self.kvikio, self.filesystem
        lines = [
            "== Machine",
            f"OS: {self.os}",
            f"Kernel: {self.kernel}",
            f"Python: {self.python}",
            f"CPU: {self.cpu_model}, {self.cpu_count} logical CPUs ({self.cpu_affinity} usable by this process)",
            f"RAM: {format_size(self.ram_total)} total, {format_size(self.ram_available)} available",
            "",
            "== GPUs",
            *([g.describe() for g in c.gpus] or [f"none usable: {c.gpu_reason}"
                                                 + ("" if c.libcuda_loadable else "; no NVIDIA driver (libcuda.so.1)")]),
            f"NVML: {'yes' if c.nvml_available else 'no'} ({c.nvml_reason})",
            "",
            "== CUDA",
            f"libcuda.so.1: {'loadable' if c.libcuda_loadable else 'NOT loadable'} ({c.libcuda_reason})",
            f"NVIDIA driver: {c.driver_version or 'none'}; CUDA driver API: {c.cuda_driver_version or 'none'}",
            f"torch: {c.torch_version or 'not installed'}, built for CUDA {c.torch_cuda_version or 'none (CPU-only build)'}",
            f"CUDA GPU usable from torch: {'yes' if c.gpu_available else 'no'} ({c.gpu_reason})",
            "",
            "== KvikIO / cuFile",
        ]
        if k.installed:
            lines += [
                f"KvikIO {k.version}; compat_mode setting {k.compat_mode_setting}; resolved: {k.resolved_mode}",
                f"libcufile {k.libcufile_version or 'unknown'}; driver properties: "
                + (", ".join(f"{n}={v}" for n, v in k.driver_properties.items()) or "none"),
            ]
            if k.driver_messages:
                lines.append(f"libcufile said: {k.driver_messages}")
            if k.settings:
                lines.append("settings: " + ", ".join(f"{n}={v}" for n, v in k.settings.items()))
            lines.append(f"4 KiB read through kvikio.CuFile: {k.read_check}")
        else:
            lines.append(f"KvikIO not importable: {k.import_error}")
        capable = {True: "yes", False: "no", None: "cannot tell"}[fs.gds_capable]
        lines += [
            f"KvikIO usable: {'yes' if k.usable else 'no'} ({k.reason})",
            "",
            "== nvidia-fs",
            f"{'loaded' if self.nvidia_fs_loaded else 'not loaded'}: {self.nvidia_fs}",
            "",
            "== File system",
            f"{fs.directory}: {fs.fstype} mounted at {fs.mount_point} from {fs.source}"
            + (f" (block devices: {', '.join(fs.block_devices)})" if fs.block_devices else ""),
            f"GDS-capable: {capable} ({fs.reason})",
            "",
            "== PCIe: each GPU and the nearest storage device",
            *([p.describe() for p in self.topology] or ["nothing to relate (no GPU, or no NVMe drive / RDMA NIC "
                                                        "found under the checkpoint's file system)"]),
            "",
            "== Page cache",
            f"eviction for cold runs: {'works' if self.page_cache_evictable else 'does not work'} ({self.page_cache})",
            "",
            self.verdict,
        ]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- the machine


def _os_name() -> str:
    text = HOST.read("/etc/os-release") or ""
    m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.M)
    return m.group(1) if m else platform.platform()


def _cpu_model() -> str:
    text = HOST.read("/proc/cpuinfo") or ""
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else (platform.processor() or platform.machine())


def _meminfo() -> tuple[int, int]:
    text = HOST.read("/proc/meminfo") or ""
    vals = {k: int(v) * 1024 for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}
    return vals.get("MemTotal", 0), vals.get("MemAvailable", vals.get("MemFree", 0))


def nvidia_fs(sysroot: SysRoot = HOST) -> tuple[bool, str]:
    """(whether the nvidia-fs kernel module is loaded, its version or why not)."""
    if not sysroot.exists("/proc/driver/nvidia-fs"):
        return False, "/proc/driver/nvidia-fs is missing: the GDS kernel module (nvidia-fs.ko) is not loaded"
    version = (sysroot.read("/proc/driver/nvidia-fs/version") or "").strip().replace("\n", "; ")
    return True, version or "loaded (/proc/driver/nvidia-fs present)"


# ----------------------------------------------------------------------------- topology and the decision


def storage_paths(gpu_list: tuple[GpuInfo, ...], fs: FileSystemInfo, sysroot: SysRoot = HOST) -> tuple[StoragePath, ...]:
    """For each GPU, the storage device nearest to it: the file system's NVMe drives, else the RDMA NICs."""
    if fs.fstype in LOCAL_FS:
        kind = "NVMe drive"
        devices = {d: pcie.block_device_place(d, sysroot) for d in fs.block_devices if d.startswith("nvme")}
    elif fs.fstype in GDS_FILESYSTEMS:
        kind, devices = "RDMA NIC", dict(pcie.rdma_nics(sysroot))
    else:
        return ()
    devices = {name: where for name, where in devices.items() if where is not None}
    out = []
    for gpu in gpu_list:
        where = pcie.place(gpu.pci_bus_id, sysroot) if gpu.pci_bus_id else None
        if where is None or not devices:
            continue
        name, near = min(devices.items(), key=lambda item: (pcie.RANK[pcie.relation(where, item[1])], item[0]))
        out.append(StoragePath(gpu.index, where.bus_id, name, kind, near.bus_id, pcie.relation(where, near),
                               pcie.iommu_mode(where.bus_id, sysroot)))
    return tuple(out)


def _version_tuple(text: str | None) -> tuple[int, ...] | None:
    numbers = re.findall(r"\d+", text or "")
    return tuple(int(n) for n in numbers[:2]) if numbers else None


def decide(cuda: CudaInfo, kv: KvikioInfo, nvfs_loaded: bool, fs: FileSystemInfo,
           topology: tuple[StoragePath, ...] = ()) -> Decision:
    """The verdict from the collected parts; a pure function, tested on recorded machines."""
    reasons: list[str] = []
    unknowns: list[str] = []
    warnings: list[str] = []
    gds_flag = kv.driver_properties.get("is_gds_available") if kv.installed else None
    if not cuda.gpu_available:
        reasons.append(f"no usable NVIDIA GPU ({cuda.gpu_reason})")
    if not cuda.libcuda_loadable:
        reasons.append("libcuda.so.1 cannot be loaded (no NVIDIA driver), so KvikIO/cuFile cannot read at all")
    if not kv.installed:
        reasons.append(f"KvikIO is not importable ({kv.import_error})")
    if not nvfs_loaded:
        cufile = _version_tuple(kv.libcufile_version)
        local_nvme = fs.fstype in LOCAL_FS and fs.gds_capable is True
        if gds_flag is True:
            warnings.append("nvidia-fs is not loaded, yet cuFile reports GDS available (PCIe P2PDMA, CUDA 12.8+)")
        elif local_nvme and (cufile is None or cufile >= P2PDMA_CUFILE):
            unknowns.append("nvidia-fs is not loaded, but cuFile 1.13+ (CUDA 12.8+) can DMA from local NVMe by "
                            "PCIe P2PDMA without it (\"use_pci_p2pdma\" in /etc/cufile.json, a recent kernel); "
                            "this probe cannot confirm P2PDMA: a gds read's byte split will say")
        else:
            reasons.append("the nvidia-fs kernel module is not loaded (/proc/driver/nvidia-fs is missing)"
                           + ("" if fs.fstype in LOCAL_FS else
                              f", which {fs.fstype} needs for DMA (P2PDMA without it covers local NVMe only)"))
    if kv.installed and "is_gds_available" not in kv.driver_properties:
        reasons.append(f"cuFile could not say whether GDS is available ({kv.driver_messages.split('; ')[0]})")
    elif kv.installed and gds_flag is not True and not unknowns:
        reasons.append(f"cuFile reports is_gds_available={gds_flag}")
    if fs.gds_capable is False:
        reasons.append(f"{fs.directory} is on {fs.fstype}: {fs.reason}")
    elif fs.gds_capable is None:
        unknowns.append(f"{fs.directory} is on {fs.fstype}: {fs.reason}")
    for path in topology:
        if path.relation in (pcie.NUMA_NODE, pcie.CROSS_SOCKET):
            warnings.append(f"GPU {path.gpu} and its nearest {path.device_kind} ({path.device}) sit under different "
                            f"PCIe root complexes ({path.relation}): direct reads cross the CPU, slowed or refused")
        if path.iommu.startswith("translated"):
            warnings.append(f"the IOMMU translates GPU {path.gpu}'s DMA addresses ({path.iommu}): peer-to-peer "
                            "DMA may fail; GDS wants it off or in passthrough (iommu=pt)")
    state = NOT_POSSIBLE if reasons else CANNOT_TELL if unknowns else READY
    return Decision(state, tuple(reasons), tuple(unknowns), tuple(warnings))


# ----------------------------------------------------------------------------- the report


def _default_directory() -> Path:
    from .synthetic import checkpoints_home

    return Path(checkpoints_home())


def report_for(directory: str, cuda: CudaInfo, kv: KvikioInfo, sysroot: SysRoot = HOST,
               page_cache: tuple[bool, str] | None = None) -> ProbeReport:
    """The report from given GPU and KvikIO parts and a (live or recorded) /proc and /sys."""
    nvfs_loaded, nvfs = nvidia_fs(sysroot)
    fs = filesystem_of(directory, sysroot)
    if page_cache is None:
        from .cache import can_evict

        page_cache = can_evict(fs.directory)
    topology = storage_paths(cuda.gpus, fs, sysroot)
    decision = decide(cuda, kv, nvfs_loaded, fs, topology)
    total, available = _meminfo()
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    return ProbeReport(
        os=_os_name(), kernel=platform.release(), python=sys.version.split()[0],
        cpu_model=_cpu_model(), cpu_count=os.cpu_count() or 1, cpu_affinity=affinity,
        ram_total=total, ram_available=available, cuda=cuda, kvikio=kv,
        nvidia_fs_loaded=nvfs_loaded, nvidia_fs=nvfs, filesystem=fs,
        page_cache_evictable=page_cache[0], page_cache=page_cache[1],
        gds_ready=decision.state == READY, reasons=decision.reasons, gds_state=decision.state,
        unknowns=decision.unknowns, warnings=decision.warnings, topology=topology,
    )


def probe(directory: str | os.PathLike | None = None) -> ProbeReport:
    """The machine's report, for file system questions about `directory` (default: where checkpoints go)."""
    path = Path(directory) if directory is not None else _default_directory()
    return _probe(str(path.expanduser().resolve()))


@functools.lru_cache(maxsize=None)
def _probe(directory: str) -> ProbeReport:
    return report_for(directory, _gpus.cuda_info(), _kvikio.kvikio_info())


def _forget() -> None:
    """Drop every cached answer (tests change the environment under the probe)."""
    _probe.cache_clear()
    _kvikio.forget()
    _gpus.forget()
