"""PCIe as GDS sees it: link speed, where a device sits in the tree, how two devices are joined, the IOMMU.

A direct read is a DMA from the NVMe drive (or the RDMA NIC) straight into GPU memory, so
its path through PCIe matters: peers behind one PCIe switch talk at full speed; through
the CPU's root complex they usually still work; across two root complexes (two sockets)
the transfer crosses the CPU interconnect, which cuFile may refuse or slow; and an IOMMU
that translates addresses (not in passthrough) can block peer-to-peer DMA altogether.
Everything here reads /sys through a `SysRoot`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .sysroot import HOST, SysRoot

_BDF = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_GT_PER_S_TO_GEN = {"2.5": 1, "5.0": 2, "8.0": 3, "16.0": 4, "32.0": 5, "64.0": 6}


def sysfs_bus_id(bus_id: str) -> str:
    """NVML's "00000000:18:00.0" as sysfs names it: "0000:18:00.0"."""
    domain, _, rest = bus_id.strip().lower().partition(":")
    return f"{domain[-4:]:0>4}:{rest}"


def link(bus_id: str | None, sysroot: SysRoot = HOST) -> dict[str, int]:
    """PCIe link generation and width of a device (current and max), from sysfs."""
    if not bus_id:
        return {}
    node = f"/sys/bus/pci/devices/{sysfs_bus_id(bus_id)}"
    out: dict[str, int] = {}
    for key, file in (("pcie_gen", "current_link_speed"), ("pcie_max_gen", "max_link_speed")):
        speed = (sysroot.read(f"{node}/{file}") or "").split()
        if speed and speed[0] in _GT_PER_S_TO_GEN:
            out[key] = _GT_PER_S_TO_GEN[speed[0]]
    for key, file in (("pcie_width", "current_link_width"), ("pcie_max_width", "max_link_width")):
        width = (sysroot.read(f"{node}/{file}") or "").strip()
        if width.isdigit():
            out[key] = int(width)
    return out


@dataclass(frozen=True)
class PciPlace:
    """Where a PCI device hangs: its root complex ("pci0000:80") and the bridges down to it."""

    bus_id: str
    root: str
    chain: tuple[str, ...]  # bridge and device addresses from the root port down, the device last
    numa_node: int | None = None


def place_of_path(real: str | None, sysroot: SysRoot = HOST) -> PciPlace | None:
    """The PCI place of the device a resolved /sys path belongs to (its last PCI address)."""
    if not real:
        return None
    parts = real.strip("/").split("/")
    roots = [i for i, p in enumerate(parts) if p.startswith("pci")]
    if not roots:
        return None
    start = roots[0]
    chain = []
    for p in parts[start + 1:]:
        if not _BDF.match(p):
            break
        chain.append(p)
    if not chain:
        return None
    numa = (sysroot.read(f"/sys/bus/pci/devices/{chain[-1]}/numa_node") or "").strip()
    return PciPlace(chain[-1], parts[start], tuple(chain), int(numa) if numa.lstrip("-").isdigit() and int(numa) >= 0 else None)


def place(bus_id: str, sysroot: SysRoot = HOST) -> PciPlace | None:
    """The PCI place of a device by its bus id (NVML or sysfs spelling)."""
    return place_of_path(sysroot.realpath(f"/sys/bus/pci/devices/{sysfs_bus_id(bus_id)}"), sysroot)


def block_device_place(name: str, sysroot: SysRoot = HOST) -> PciPlace | None:
    """The PCI place of a block device ("nvme0n1", "nvme0n1p1"): its NVMe controller."""
    return place_of_path(sysroot.realpath(f"/sys/class/block/{name}"), sysroot)


def rdma_nics(sysroot: SysRoot = HOST) -> dict[str, PciPlace]:
    """RDMA NICs (EFA, InfiniBand/RoCE) by name, with their PCI places."""
    out = {}
    for name in sysroot.listdir("/sys/class/infiniband"):
        where = place_of_path(sysroot.realpath(f"/sys/class/infiniband/{name}/device"), sysroot)
        if where is not None:
            out[name] = where
    return out


# How two devices are joined, closest first (NVML's topology words in brackets).
SWITCH = "same PCIe switch (PIX/PXB)"
HOST_BRIDGE = "same root complex, through the host bridge (PHB)"
NUMA_NODE = "different root complexes on one NUMA node (NODE)"
CROSS_SOCKET = "different root complexes across the CPU interconnect (SYS)"
RANK = {SWITCH: 0, HOST_BRIDGE: 1, NUMA_NODE: 2, CROSS_SOCKET: 3}


def relation(a: PciPlace, b: PciPlace) -> str:
    """How the PCIe tree joins two devices: one of SWITCH, HOST_BRIDGE, NUMA_NODE, CROSS_SOCKET."""
    if a.root == b.root:
        # Sharing the first element (the root port) means sharing everything above both devices.
        return SWITCH if a.chain[0] == b.chain[0] else HOST_BRIDGE
    if a.numa_node is not None and a.numa_node == b.numa_node:
        return NUMA_NODE
    return CROSS_SOCKET


def iommu_mode(bus_id: str, sysroot: SysRoot = HOST) -> str:
    """The IOMMU's handling of a device: 'off' (no IOMMU group), 'passthrough' (identity) or 'translated'."""
    node = f"/sys/bus/pci/devices/{sysfs_bus_id(bus_id)}"
    if not sysroot.exists(f"{node}/iommu_group"):
        return "off"
    kind = (sysroot.read(f"{node}/iommu_group/type") or "").strip()
    if kind == "identity":
        return "passthrough"
    return f"translated ({kind})" if kind else "translated (type unknown)"


__all__ = [
    "PciPlace", "link", "place", "place_of_path", "block_device_place", "rdma_nics", "relation", "iommu_mode",
    "sysfs_bus_id", "SWITCH", "HOST_BRIDGE", "NUMA_NODE", "CROSS_SOCKET", "RANK",
]
