"""What this machine can do for loading weights: GPUs, driver, KvikIO/cuFile, nvidia-fs, file system.

GPUDirect Storage needs every link of a chain: an NVIDIA GPU and its driver (libcuda),
cuFile (here through KvikIO), the nvidia-fs kernel module, and a file system whose
storage can DMA into GPU memory (ext4/xfs on NVMe, Lustre, WekaFS, GPFS, BeeGFS, NFS over
RDMA...). `probe()` checks each link, and every missing one comes with the reason, so a
result can say what really ran. Nothing here raises for a missing part: no GPU, no KvikIO,
no NVML all become reasons. The expensive checks run once per process.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import json
import os
import platform
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .sizes import format_size

__all__ = [
    "ProbeReport", "GpuInfo", "CudaInfo", "KvikioInfo", "FileSystemInfo",
    "probe", "gpu_available", "kvikio_status", "filesystem_of", "GDS_FILESYSTEMS",
]

# File system types cuFile can drive in GDS mode, and what each needs besides.
GDS_FILESYSTEMS: dict[str, str] = {
    "ext4": "ext4 in ordered data mode on NVMe or NVMe-oF",
    "xfs": "xfs on NVMe or NVMe-oF",
    "lustre": "RDMA-capable parallel file system (DDN EXAScaler, FSx for Lustre)",
    "wekafs": "RDMA-capable parallel file system (WekaFS)",
    "beegfs": "RDMA-capable parallel file system (BeeGFS)",
    "gpfs": "RDMA-capable parallel file system (IBM Storage Scale / GPFS)",
    "nfs": "NFS over RDMA (proto=rdma), e.g. VAST, NetApp",
    "nfs4": "NFS over RDMA (proto=rdma), e.g. VAST, NetApp",
}
_LOCAL_FS = {"ext4", "xfs"}
_NFS = {"nfs", "nfs4"}


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as NVML (or, without NVML, torch.cuda) describes it."""

    index: int
    name: str
    memory_bytes: int
    pci_bus_id: str | None = None
    pcie_gen: int | None = None          # current link generation (drops when the GPU idles)
    pcie_width: int | None = None        # current lanes
    pcie_max_gen: int | None = None
    pcie_max_width: int | None = None
    source: str = "nvml"                 # "nvml" or "torch"

    def describe(self) -> str:
        link = ""
        if self.pcie_max_gen is not None:
            link = (f", PCIe gen{self.pcie_gen} x{self.pcie_width} now"
                    f" (max gen{self.pcie_max_gen} x{self.pcie_max_width})")
        bus = f" [{self.pci_bus_id}]" if self.pci_bus_id else ""
        return f"GPU {self.index}: {self.name}, {format_size(self.memory_bytes)}{link}{bus}"


@dataclass(frozen=True)
class CudaInfo:
    """The NVIDIA driver and torch's CUDA: whether a CUDA GPU is usable from torch, and why not."""

    libcuda_loadable: bool
    libcuda_reason: str                  # the dlopen error, or where it was found
    driver_version: str | None           # NVIDIA kernel driver, e.g. "570.124.06"
    cuda_driver_version: str | None      # CUDA version the driver supports, e.g. "12.8"
    torch_version: str | None
    torch_cuda_version: str | None       # None: a CPU-only torch build
    gpu_available: bool
    gpu_reason: str
    nvml_available: bool
    nvml_reason: str
    gpus: tuple[GpuInfo, ...] = ()


@dataclass(frozen=True)
class KvikioInfo:
    """KvikIO and the cuFile driver behind it, as they resolve on this machine."""

    installed: bool
    version: str | None
    import_error: str | None
    compat_mode_setting: str | None      # kvikio.defaults.get("compat_mode"): ON / OFF / AUTO
    compat_mode_preferred: bool | None   # the resolved mode: True = POSIX compatibility mode
    resolved_mode: str
    libcufile_version: str | None
    driver_properties: dict[str, Any] = field(default_factory=dict)  # kvikio.cufile_driver.get(...)
    driver_messages: str = ""           # what libcufile printed while being asked
    settings: dict[str, Any] = field(default_factory=dict)           # num_threads, task_size...
    read_check: str = "not tried"        # a 4 KiB host read through kvikio.CuFile: "ok" or the error
    usable: bool = False
    reason: str = ""


@dataclass(frozen=True)
class FileSystemInfo:
    """The mount a directory lives on, and whether that kind of file system can do GDS."""

    directory: str
    mount_point: str
    fstype: str
    source: str
    options: str
    block_devices: tuple[str, ...]       # the block devices underneath (after md/dm), if local
    gds_capable: bool
    reason: str


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

    @property
    def gpus(self) -> tuple[GpuInfo, ...]:
        return self.cuda.gpus

    @property
    def verdict(self) -> str:
        """One line: "GDS: ready" or "GDS: not possible here because ..."."""
        if self.gds_ready:
            return f"GDS: ready ({self.filesystem.fstype} at {self.filesystem.mount_point}, nvidia-fs loaded, cuFile reports GDS available)"
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
        lines += [
            f"KvikIO usable: {'yes' if k.usable else 'no'} ({k.reason})",
            "",
            "== nvidia-fs",
            f"{'loaded' if self.nvidia_fs_loaded else 'not loaded'}: {self.nvidia_fs}",
            "",
            "== File system",
            f"{fs.directory}: {fs.fstype} mounted at {fs.mount_point} from {fs.source}"
            + (f" (block devices: {', '.join(fs.block_devices)})" if fs.block_devices else ""),
            f"GDS-capable: {'yes' if fs.gds_capable else 'no'} ({fs.reason})",
            "",
            "== Page cache",
            f"eviction for cold runs: {'works' if self.page_cache_evictable else 'does not work'} ({self.page_cache})",
            "",
            self.verdict,
        ]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- machine


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def _os_name() -> str:
    text = _read("/etc/os-release") or ""
    m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.M)
    return m.group(1) if m else platform.platform()


def _cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else (platform.processor() or platform.machine())


def _meminfo() -> tuple[int, int]:
    text = _read("/proc/meminfo") or ""
    vals = {k: int(v) * 1024 for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}
    return vals.get("MemTotal", 0), vals.get("MemAvailable", vals.get("MemFree", 0))


# ----------------------------------------------------------------------------- CUDA, NVML, torch


@functools.lru_cache(maxsize=1)
def _libcuda() -> tuple[bool, str, str | None]:
    """(loadable, reason, CUDA driver API version) from dlopen("libcuda.so.1") itself."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        return False, f"{e}; the NVIDIA driver is not installed here", None
    version = ctypes.c_int(0)
    try:
        ok = lib.cuDriverGetVersion(ctypes.byref(version)) == 0
    except AttributeError:
        ok = False
    cuda = f"{version.value // 1000}.{version.value % 1000 // 10}" if ok and version.value else None
    return True, "found by the dynamic loader", cuda


def _nvml() -> tuple[bool, str, str | None, tuple[GpuInfo, ...]]:
    """(available, reason, driver version, GPUs) from NVML through pynvml (nvidia-ml-py)."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except Exception as e:
        return False, f"pynvml (nvidia-ml-py) not importable: {e}", None, ()
    try:
        pynvml.nvmlInit()
    except Exception as e:
        return False, f"nvmlInit failed: {e}", None, ()
    try:
        driver = _decode(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            gpus.append(GpuInfo(
                index=i,
                name=_decode(pynvml.nvmlDeviceGetName(h)),
                memory_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
                pci_bus_id=_try(lambda: _decode(pynvml.nvmlDeviceGetPciInfo(h).busId)),
                pcie_gen=_try(lambda: int(pynvml.nvmlDeviceGetCurrPcieLinkGeneration(h))),
                pcie_width=_try(lambda: int(pynvml.nvmlDeviceGetCurrPcieLinkWidth(h))),
                pcie_max_gen=_try(lambda: int(pynvml.nvmlDeviceGetMaxPcieLinkGeneration(h))),
                pcie_max_width=_try(lambda: int(pynvml.nvmlDeviceGetMaxPcieLinkWidth(h))),
                source="nvml",
            ))
        return True, f"{len(gpus)} device(s)", driver, tuple(gpus)
    except Exception as e:
        return False, f"NVML query failed: {e}", None, ()
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


_GT_PER_S_TO_GEN = {"2.5": 1, "5.0": 2, "8.0": 3, "16.0": 4, "32.0": 5, "64.0": 6}


def _sysfs_bus_id(bus_id: str) -> str:
    """NVML's "00000000:18:00.0" as sysfs names it: "0000:18:00.0"."""
    domain, _, rest = bus_id.strip().lower().partition(":")
    return f"{domain[-4:]:0>4}:{rest}"


def _sysfs_pcie(bus_id: str | None, root: str = "/sys/bus/pci/devices") -> dict[str, int]:
    """PCIe link generation and width from sysfs (used where NVML is missing or does not say)."""
    if not bus_id:
        return {}
    node = Path(root) / _sysfs_bus_id(bus_id)
    out: dict[str, int] = {}
    for key, file in (("pcie_gen", "current_link_speed"), ("pcie_max_gen", "max_link_speed")):
        speed = (_read(str(node / file)) or "").split()
        if speed and speed[0] in _GT_PER_S_TO_GEN:
            out[key] = _GT_PER_S_TO_GEN[speed[0]]
    for key, file in (("pcie_width", "current_link_width"), ("pcie_max_width", "max_link_width")):
        width = (_read(str(node / file)) or "").strip()
        if width.isdigit():
            out[key] = int(width)
    return out


def _with_sysfs_link(gpu: GpuInfo) -> GpuInfo:
    if gpu.pcie_max_gen is not None:
        return gpu
    link = _sysfs_pcie(gpu.pci_bus_id)
    return dataclasses.replace(gpu, **link) if link else gpu


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _try(fn: Callable[[], Any]) -> Any:
    """One optional NVML field: None where this GPU or driver does not report it."""
    try:
        return fn()
    except Exception:
        return None


def _torch_cuda() -> tuple[str | None, str | None, bool, str, tuple[GpuInfo, ...]]:
    """(torch version, torch CUDA version, GPU usable, reason, GPUs as torch sees them)."""
    try:
        import torch
    except Exception as e:
        return None, None, False, f"torch not importable: {e}", ()
    cuda_version = torch.version.cuda
    if cuda_version is None:
        return torch.__version__, None, False, f"torch {torch.__version__} is a CPU-only build", ()
    try:
        available = torch.cuda.is_available()
        count = torch.cuda.device_count() if available else 0
    except Exception as e:
        return torch.__version__, cuda_version, False, f"torch.cuda failed: {e}", ()
    if not available or count == 0:
        return torch.__version__, cuda_version, False, "torch finds no CUDA device (torch.cuda.is_available() is False)", ()
    gpus = []
    for i in range(count):
        p = torch.cuda.get_device_properties(i)
        bus = None
        if isinstance(getattr(p, "pci_bus_id", None), int):
            bus = f"{getattr(p, 'pci_domain_id', 0):04x}:{p.pci_bus_id:02x}:{getattr(p, 'pci_device_id', 0):02x}.0"
        gpus.append(GpuInfo(index=i, name=p.name, memory_bytes=int(p.total_memory), pci_bus_id=bus, source="torch"))
    return torch.__version__, cuda_version, True, f"{count} CUDA device(s)", tuple(gpus)


@functools.lru_cache(maxsize=1)
def _cuda_info() -> CudaInfo:
    loadable, lib_reason, cuda_driver = _libcuda()
    nvml_ok, nvml_reason, driver, nvml_gpus = _nvml()
    if driver is None:  # the kernel driver says its version here even without NVML
        m = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", _read("/proc/driver/nvidia/version") or "")
        driver = m.group(1) if m else None
    torch_version, torch_cuda, gpu_ok, gpu_reason, torch_gpus = _torch_cuda()
    return CudaInfo(
        libcuda_loadable=loadable, libcuda_reason=lib_reason, driver_version=driver,
        cuda_driver_version=cuda_driver, torch_version=torch_version, torch_cuda_version=torch_cuda,
        gpu_available=gpu_ok, gpu_reason=gpu_reason, nvml_available=nvml_ok, nvml_reason=nvml_reason,
        gpus=tuple(_with_sysfs_link(g) for g in (nvml_gpus or torch_gpus)),
    )


def gpu_available() -> bool:
    """Whether torch can put tensors on a CUDA GPU here."""
    return _cuda_info().gpu_available


# ----------------------------------------------------------------------------- KvikIO / cuFile


def _flush_all() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)  # C stdio buffers too, so nothing crosses the redirection


@contextlib.contextmanager
def _captured_output() -> Iterator[list[str]]:
    """Collect what C libraries print on fds 1 and 2 (libcufile prints its dlopen errors on stdout)."""
    out: list[str] = []
    try:
        _flush_all()
        saved = [os.dup(1), os.dup(2)]
    except (OSError, ValueError):
        yield out
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            _flush_all()
            for fd, target in zip(saved, (1, 2)):
                os.dup2(fd, target)
                os.close(fd)
            tmp.seek(0)
            out.append(" ".join(tmp.read().decode(errors="replace").split()))


_DRIVER_PROPERTIES = ("is_gds_available", "major_version", "minor_version", "allow_compat_mode",
                      "per_buffer_cache_size", "poll_mode", "poll_thresh_size",
                      "max_device_cache_size", "max_pinned_memory_size")
_SETTINGS = ("num_threads", "task_size", "gds_threshold", "bounce_buffer_size")


def _kvikio_read_check(kvikio: Any) -> str:
    """Read 4 KiB into host memory through kvikio.CuFile: the smallest real use of KvikIO."""
    try:
        import numpy as np

        with tempfile.NamedTemporaryFile(prefix="gdslab-kvikio-check-") as tmp:
            data = os.urandom(4096)
            tmp.write(data)
            tmp.flush()
            buf = np.zeros(4096, dtype=np.uint8)
            f = kvikio.CuFile(tmp.name, "r")
            try:
                n = f.read(buf)
            finally:
                f.close()
            if n != 4096 or buf.tobytes() != data:
                return f"failed: read {n} bytes, content {'matches' if buf.tobytes() == data else 'differs'}"
            return "ok"
    except Exception as e:
        return f"failed: {type(e).__name__}: {e}"


@functools.lru_cache(maxsize=1)
def _kvikio_info() -> KvikioInfo:
    cuda = _cuda_info()
    try:
        import kvikio  # type: ignore[import-not-found]
        import kvikio.cufile_driver
        import kvikio.defaults
    except Exception as e:
        return KvikioInfo(installed=False, version=None, import_error=f"{type(e).__name__}: {e}",
                          compat_mode_setting=None, compat_mode_preferred=None, resolved_mode="n/a",
                          libcufile_version=None, usable=False,
                          reason=f"KvikIO is not importable ({type(e).__name__}: {e}); "
                                 "install the gds-cu12 or gds-cu13 extra")
    version = getattr(kvikio, "__version__", None)
    problems: list[str] = []

    def ask(fn, what: str):
        try:
            return fn()
        except Exception as e:
            problems.append(f"{what}: {type(e).__name__}: {e}")
            return None

    with _captured_output() as said:
        setting = ask(lambda: kvikio.defaults.get("compat_mode"), "compat_mode")
        preferred = ask(kvikio.defaults.is_compat_mode_preferred, "is_compat_mode_preferred")
        cufile_version = ask(kvikio.cufile_driver.libcufile_version, "libcufile_version")
        props = {}
        for name in _DRIVER_PROPERTIES:
            value = ask(lambda: kvikio.cufile_driver.get(name), f"cufile_driver.get({name!r})")
            if value is not None:
                props[name] = value
        settings = {}
        for name in _SETTINGS:
            value = ask(lambda: kvikio.defaults.get(name), f"defaults.get({name!r})")
            if value is not None:
                settings[name] = value
    messages = " ".join(m for m in said if m)
    if problems:
        messages = "; ".join([*problems, messages] if messages else problems)

    if preferred is None:
        resolved = "unknown (is_compat_mode_preferred() failed)"
    elif preferred:
        resolved = "compatibility mode: POSIX reads into host bounce buffers, then copies (no GDS)"
    else:
        gds = props.get("is_gds_available")
        resolved = f"cuFile (not compatibility mode; is_gds_available={gds}: GDS only if the file system allows it)"

    # Try it for real: without libcuda.so.1 the read raises, and that error is the reason.
    read_check = _kvikio_read_check(kvikio)
    if not cuda.libcuda_loadable:
        reason = (f"KvikIO {version} imports, but every read fails for want of libcuda.so.1 "
                  f"(no NVIDIA driver here); a 4 KiB read {read_check}")
        usable = False
    elif read_check != "ok":
        reason, usable = f"a 4 KiB read through KvikIO {read_check}", False
    elif not cuda.gpu_available:
        reason, usable = f"KvikIO reads into host memory, but there is no CUDA GPU to load into ({cuda.gpu_reason})", False
    else:
        reason, usable = f"KvikIO {version} reads; mode: {resolved}", True
    cv = f"{cufile_version[0]}.{cufile_version[1]}" if isinstance(cufile_version, tuple) and len(cufile_version) == 2 \
        else (str(cufile_version) if cufile_version is not None else None)
    return KvikioInfo(
        installed=True, version=version, import_error=None,
        compat_mode_setting=getattr(setting, "name", None if setting is None else str(setting)),
        compat_mode_preferred=preferred, resolved_mode=resolved, libcufile_version=cv,
        driver_properties=props, driver_messages=messages, settings=settings,
        read_check=read_check, usable=usable, reason=reason,
    )


def kvikio_status() -> tuple[bool, str]:
    """(whether KvikIO can load into a CUDA GPU here, why or why not): GPU + KvikIO + libcuda + a real read."""
    info = _kvikio_info()
    return info.usable, info.reason


# ----------------------------------------------------------------------------- nvidia-fs


def _nvidia_fs() -> tuple[bool, str]:
    proc = Path("/proc/driver/nvidia-fs")
    if not proc.exists():
        return False, ("/proc/driver/nvidia-fs is missing: the GDS kernel module (nvidia-fs.ko) is not loaded, "
                       "so cuFile can only run in compatibility mode")
    version = (_read(str(proc / "version")) or "").strip().replace("\n", "; ")
    return True, version or "loaded (/proc/driver/nvidia-fs present)"


# ----------------------------------------------------------------------------- file system


@dataclass(frozen=True)
class _Mount:
    mount_point: str
    fstype: str
    source: str
    options: str       # per-mount and per-superblock options together
    dev: str           # major:minor


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _mounts(mountinfo: str) -> list[_Mount]:
    """Parse /proc/self/mountinfo (proc(5)): fields, optional fields up to "-", then fstype source options."""
    mounts = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        a, b = left.split(), right.split()
        if len(a) < 6 or len(b) < 2:
            continue
        mounts.append(_Mount(mount_point=_unescape(a[4]), fstype=b[0], source=_unescape(b[1]),
                             options=",".join([a[5], *(b[2:3])]), dev=a[2]))
    return mounts


def _mount_of(path: Path, mounts: list[_Mount]) -> _Mount | None:
    """The mount whose mount point is the longest prefix of `path` (the last one wins when stacked)."""
    best: _Mount | None = None
    for m in mounts:
        mp = m.mount_point.rstrip("/") or "/"
        if mp == "/" or path == Path(mp) or str(path).startswith(mp + "/"):
            if best is None or len(mp) >= len(best.mount_point.rstrip("/") or "/"):
                best = m
    return best


def _leaf_block_devices(dev: str) -> tuple[str, ...]:
    """The block devices under major:minor, through md RAID and device-mapper (via /sys/.../slaves)."""
    node = Path("/sys/dev/block") / dev
    if not node.exists():
        return ()

    def leaves(path: Path) -> list[str]:
        real = path.resolve()
        # a partition's slaves live on its parent disk
        slaves = real / "slaves"
        if not slaves.is_dir() and (real / "partition").exists():
            slaves = real.parent / "slaves"
        below = sorted(slaves.iterdir()) if slaves.is_dir() else []
        if not below:
            return [real.name]
        return [leaf for s in below for leaf in leaves(s)]

    try:
        return tuple(leaves(node))
    except OSError:
        return ()


def _gds_capable(m: _Mount, devices: tuple[str, ...]) -> tuple[bool, str]:
    kind = m.fstype
    if kind == "fuse" or kind.startswith("fuse."):
        return False, f"{kind} is a FUSE file system: data passes through a user-space daemon in host memory"
    if kind not in GDS_FILESYSTEMS:
        return False, (f"{kind} cannot do GDS (cuFile supports {', '.join(sorted(set(GDS_FILESYSTEMS) - {'nfs4'}))}); "
                       "reads here go through host memory")
    need = GDS_FILESYSTEMS[kind]
    opts = set(m.options.split(","))
    if kind in _NFS:
        if "proto=rdma" not in opts:
            proto = next((o for o in opts if o.startswith("proto=")), "proto unknown")
            return False, f"NFS over {proto.removeprefix('proto=')}, not RDMA: GDS needs NFS over RDMA"
        return True, f"NFS over RDMA ({need})"
    if kind in _LOCAL_FS:
        if kind == "ext4" and ({"data=journal", "data=writeback"} & opts):
            mode = next(o for o in opts if o.startswith("data="))
            return False, f"ext4 mounted with {mode}: GDS needs ordered mode"
        if not devices:
            return False, f"{kind} on {m.source}: the block device could not be identified ({need})"
        not_nvme = [d for d in devices if not d.startswith("nvme")]
        if not_nvme:
            return False, f"{kind} on {', '.join(not_nvme)}, not NVMe: GDS needs {need}"
        return True, f"{kind} on NVMe ({', '.join(devices)})"
    return True, need


def filesystem_of(directory: str | os.PathLike) -> FileSystemInfo:
    """The file system holding `directory` (or its nearest existing ancestor) and whether it can do GDS."""
    path = Path(directory).expanduser().resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    text = _read("/proc/self/mountinfo")
    mount = _mount_of(path, _mounts(text)) if text else None
    if mount is None:
        return FileSystemInfo(directory=str(path), mount_point="?", fstype="unknown", source="?", options="",
                              block_devices=(), gds_capable=False,
                              reason="/proc/self/mountinfo is unreadable: the file system is unknown")
    devices = _leaf_block_devices(mount.dev) if mount.fstype in _LOCAL_FS else ()
    capable, reason = _gds_capable(mount, devices)
    return FileSystemInfo(directory=str(path), mount_point=mount.mount_point, fstype=mount.fstype,
                          source=mount.source, options=mount.options, block_devices=devices,
                          gds_capable=capable, reason=reason)


# ----------------------------------------------------------------------------- the report


def _default_directory() -> Path:
    from .synthetic import checkpoints_home

    return Path(checkpoints_home())


def probe(directory: str | os.PathLike | None = None) -> ProbeReport:
    """The machine's report, for file system questions about `directory` (default: where checkpoints go)."""
    path = Path(directory) if directory is not None else _default_directory()
    return _probe(str(path.expanduser().resolve()))


@functools.lru_cache(maxsize=None)
def _probe(directory: str) -> ProbeReport:
    from .cache import can_evict

    cuda = _cuda_info()
    kv = _kvikio_info()
    nvfs_loaded, nvfs = _nvidia_fs()
    fs = filesystem_of(directory)
    evictable, page_cache = can_evict(fs.directory)
    total, available = _meminfo()
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1

    reasons: list[str] = []
    if not cuda.gpu_available:
        reasons.append(f"no usable NVIDIA GPU ({cuda.gpu_reason})")
    if not cuda.libcuda_loadable:
        reasons.append("libcuda.so.1 cannot be loaded (no NVIDIA driver), so KvikIO/cuFile cannot read at all")
    if not kv.installed:
        reasons.append(f"KvikIO is not importable ({kv.import_error})")
    if not nvfs_loaded:
        reasons.append("the nvidia-fs kernel module is not loaded (/proc/driver/nvidia-fs is missing)")
    if kv.installed and "is_gds_available" not in kv.driver_properties:
        reasons.append(f"cuFile could not say whether GDS is available ({kv.driver_messages.split('; ')[0]})")
    elif kv.installed and kv.driver_properties["is_gds_available"] is not True:
        reasons.append(f"cuFile reports is_gds_available={kv.driver_properties['is_gds_available']}")
    if not fs.gds_capable:
        reasons.append(f"{fs.directory} is on {fs.fstype}: {fs.reason}")

    return ProbeReport(
        os=_os_name(), kernel=platform.release(), python=sys.version.split()[0],
        cpu_model=_cpu_model(), cpu_count=os.cpu_count() or 1, cpu_affinity=affinity,
        ram_total=total, ram_available=available, cuda=cuda, kvikio=kv,
        nvidia_fs_loaded=nvfs_loaded, nvidia_fs=nvfs, filesystem=fs,
        page_cache_evictable=evictable, page_cache=page_cache,
        gds_ready=not reasons, reasons=tuple(reasons),
    )


def _forget() -> None:
    """Drop every cached answer (tests change the environment under the probe)."""
    for cached in (_probe, _kvikio_info, _cuda_info, _libcuda):
        cached.cache_clear()
