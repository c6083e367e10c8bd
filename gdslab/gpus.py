"""The GPUs and the NVIDIA driver, as torch, NVML and the dynamic loader see them.

Nothing here raises for a missing part: no GPU, no driver, no NVML all become reasons.
NVML numbers every GPU of the machine; CUDA (and torch) number only the visible ones, in
the order `CUDA_VISIBLE_DEVICES` gives. Each `GpuInfo` carries both numbers, so a GPU is
never named by the wrong one.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

from . import pcie
from .sizes import format_size
from .sysroot import HOST


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as NVML (or, without NVML, torch.cuda) describes it."""

    index: int                           # NVML's index (all GPUs of the machine); torch's where NVML is missing
    name: str
    memory_bytes: int
    pci_bus_id: str | None = None
    pcie_gen: int | None = None          # current link generation (drops when the GPU idles)
    pcie_width: int | None = None        # current lanes
    pcie_max_gen: int | None = None
    pcie_max_width: int | None = None
    source: str = "nvml"                 # "nvml" or "torch"
    uuid: str | None = None
    cuda_index: int | None = None        # the cuda:N this GPU is to torch here; None when not visible

    def describe(self) -> str:
        link = ""
        if self.pcie_max_gen is not None:
            link = (f", PCIe gen{self.pcie_gen} x{self.pcie_width} now"
                    f" (max gen{self.pcie_max_gen} x{self.pcie_max_width})")
        bus = f" [{self.pci_bus_id}]" if self.pci_bus_id else ""
        seen = (f"cuda:{self.cuda_index}" if self.cuda_index is not None else "not visible to CUDA here")
        number = f"GPU {self.index} ({seen})" if self.source == "nvml" else f"cuda:{self.index}"
        return f"{number}: {self.name}, {format_size(self.memory_bytes)}{link}{bus}"


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


def visible_indices(visible: str | None, uuids: list[str | None]) -> list[int] | None:
    """NVML indices of the GPUs CUDA sees, in CUDA's order, from `CUDA_VISIBLE_DEVICES`.

    None when unset (every GPU, in NVML order). Entries are indices or UUIDs ("GPU-…",
    prefixes allowed); as in CUDA, the list ends at the first entry that names no GPU.
    """
    if visible is None:
        return None
    out: list[int] = []
    for item in (v.strip() for v in visible.split(",")):
        if item.isdigit() and int(item) < len(uuids):
            found = int(item)
        else:
            matches = [i for i, u in enumerate(uuids) if item and u and u.startswith(item)]
            if len(matches) != 1:
                break
            found = matches[0]
        if found in out:
            break
        out.append(found)
    return out


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


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _try(fn: Callable[[], Any]) -> Any:
    """One optional NVML field: None where this GPU or driver does not report it."""
    try:
        return fn()
    except Exception:
        return None


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
                uuid=_try(lambda: _decode(pynvml.nvmlDeviceGetUUID(h))),
                source="nvml",
            ))
        visible = visible_indices(os.environ.get("CUDA_VISIBLE_DEVICES"), [g.uuid for g in gpus])
        order = visible if visible is not None else list(range(len(gpus)))
        gpus = [dataclasses.replace(g, cuda_index=order.index(g.index) if g.index in order else None) for g in gpus]
        return True, f"{len(gpus)} device(s)", driver, tuple(gpus)
    except Exception as e:
        return False, f"NVML query failed: {e}", None, ()
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


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
        gpus.append(GpuInfo(index=i, name=p.name, memory_bytes=int(p.total_memory), pci_bus_id=bus, source="torch",
                            cuda_index=i))
    return torch.__version__, cuda_version, True, f"{count} CUDA device(s)", tuple(gpus)


def _with_sysfs_link(gpu: GpuInfo) -> GpuInfo:
    if gpu.pcie_max_gen is not None:
        return gpu
    found = pcie.link(gpu.pci_bus_id, HOST)
    return dataclasses.replace(gpu, **found) if found else gpu


@functools.lru_cache(maxsize=1)
def cuda_info() -> CudaInfo:
    """The driver, torch's CUDA and every GPU; computed once per process."""
    loadable, lib_reason, cuda_driver = _libcuda()
    nvml_ok, nvml_reason, driver, nvml_gpus = _nvml()
    if driver is None:  # the kernel driver says its version here even without NVML
        m = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", HOST.read("/proc/driver/nvidia/version") or "")
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
    return cuda_info().gpu_available


def forget() -> None:
    """Drop the cached answers (tests change the environment under them)."""
    cuda_info.cache_clear()
    _libcuda.cache_clear()


__all__ = ["GpuInfo", "CudaInfo", "cuda_info", "gpu_available", "visible_indices", "forget"]
