"""The file system a checkpoint lives on, and whether storage of that kind can DMA into a GPU.

GDS needs storage that can move bytes to GPU memory over PCIe: a local NVMe drive (ext4
in ordered mode, xfs), NVMe over fabrics, or a parallel file system whose client speaks
RDMA (Lustre over InfiniBand or EFA, WekaFS, GPFS, BeeGFS, NFS over RDMA). Three things
are easy to get wrong, and each is read from the machine rather than guessed:

- A device named ``nvme*`` is not proof of a local drive: on AWS Nitro an EBS volume is
  an NVMe device too. The drive's model in /sys says which ("Amazon Elastic Block Store"
  vs "Amazon EC2 NVMe Instance Storage").
- Lustre is GDS-capable only when LNet runs over an RDMA network (o2ib, EFA, kfi), not
  TCP. The LNet networks come from `lnetctl net show` or LNet's NID list in /sys or /proc;
  where neither is readable the answer is "cannot tell", not yes. Over EFA (FSx) the client
  must also be an instance type FSx lists for GDS; the servers' side is never visible here.
- The 4 KiB alignment rule belongs to O_DIRECT, not to GDS: cuFile takes unaligned reads
  and moves their edges through its own GPU bounce buffers.

`gds_capable` is True, False or None ("cannot tell"), always with the reason.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .sysroot import HOST, SysRoot

# File system types cuFile can drive in GDS mode, and what each needs besides.
GDS_FILESYSTEMS: dict[str, str] = {
    "ext4": "ext4 in ordered data mode on NVMe or NVMe-oF",
    "xfs": "xfs on NVMe or NVMe-oF",
    "lustre": "Lustre over an RDMA network (InfiniBand o2ib, or EFA as on FSx for Lustre)",
    "wekafs": "RDMA-capable parallel file system (WekaFS)",
    "beegfs": "RDMA-capable parallel file system (BeeGFS)",
    "gpfs": "RDMA-capable parallel file system (IBM Storage Scale / GPFS)",
    "nfs": "NFS over RDMA (proto=rdma), e.g. VAST, NetApp",
    "nfs4": "NFS over RDMA (proto=rdma), e.g. VAST, NetApp",
}
LOCAL_FS = {"ext4", "xfs"}
_NFS = {"nfs", "nfs4"}
RDMA_LNET = ("o2ib", "efa", "kfi", "gni", "ptl4")  # LNet network types that carry RDMA
EBS_MODEL = "Amazon Elastic Block Store"
INSTANCE_STORE_MODEL = "Amazon EC2 NVMe Instance Storage"
# EC2 families FSx for Lustre documents as GDS clients (FSx Lustre Guide, "Working with EFA-enabled
# file systems" and "Configuring EFA clients"); Lustre over EFA means FSx.
FSX_GDS_FAMILIES = ("p5", "p5e", "p5en", "p6-b200", "p6e-gb200")


@dataclass(frozen=True)
class FileSystemInfo:
    """The mount a directory lives on, and whether that kind of file system can do GDS."""

    directory: str
    mount_point: str
    fstype: str
    source: str
    options: str
    block_devices: tuple[str, ...]       # the block devices underneath (after md/dm), if local
    gds_capable: bool | None             # None: cannot tell from here (the reason says why)
    reason: str
    device_models: tuple[str, ...] = ()  # the NVMe drives' models, where /sys names them
    lnet_networks: tuple[str, ...] = ()  # for Lustre: the LNet networks of this client ("efa", "tcp"...)


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str
    source: str
    options: str       # per-mount and per-superblock options together
    dev: str           # major:minor


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def mounts(mountinfo: str) -> list[Mount]:
    """Parse /proc/self/mountinfo (proc(5)): fields, optional fields up to "-", then fstype source options."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        a, b = left.split(), right.split()
        if len(a) < 6 or len(b) < 2:
            continue
        out.append(Mount(mount_point=_unescape(a[4]), fstype=b[0], source=_unescape(b[1]),
                         options=",".join([a[5], *(b[2:3])]), dev=a[2]))
    return out


def mount_of(path: Path, table: list[Mount]) -> Mount | None:
    """The mount whose mount point is the longest prefix of `path` (the last one wins when stacked)."""
    best: Mount | None = None
    for m in table:
        mp = m.mount_point.rstrip("/") or "/"
        if mp == "/" or path == Path(mp) or str(path).startswith(mp + "/"):
            if best is None or len(mp) >= len(best.mount_point.rstrip("/") or "/"):
                best = m
    return best


def leaf_block_devices(dev: str, sysroot: SysRoot = HOST) -> tuple[str, ...]:
    """The block devices under major:minor, through md RAID and device-mapper (via /sys/.../slaves)."""
    real = sysroot.realpath(f"/sys/dev/block/{dev}")
    if real is None:
        return ()

    def leaves(path: str, depth: int = 0) -> list[str]:
        slaves = f"{path}/slaves"
        if not sysroot.listdir(slaves) and sysroot.exists(f"{path}/partition"):
            slaves = f"{path.rsplit('/', 1)[0]}/slaves"  # a partition's slaves live on its parent disk
        below = sysroot.listdir(slaves)
        if not below or depth > 8:
            return [path.rsplit("/", 1)[-1]]
        return [leaf for s in below for leaf in leaves(sysroot.realpath(f"{slaves}/{s}") or f"{slaves}/{s}", depth + 1)]

    return tuple(leaves(real))


def disk_of(leaf: str) -> str:
    """The disk a partition belongs to: "nvme0n1p1" -> "nvme0n1", "sda1" -> "sda"."""
    m = re.match(r"^(nvme\d+n\d+)p\d+$", leaf) or re.match(r"^([a-z]+)\d+$", leaf)
    return m.group(1) if m else leaf


def device_model(leaf: str, sysroot: SysRoot = HOST) -> str | None:
    """The drive's model from /sys ("Amazon EC2 NVMe Instance Storage", a vendor's part number...)."""
    model = sysroot.read(f"/sys/class/block/{disk_of(leaf)}/device/model")
    return model.strip() if model and model.strip() else None


def lnet_networks(sysroot: SysRoot = HOST) -> tuple[tuple[str, ...] | None, str]:
    """(the LNet network types of this client, where that came from), or (None, why not)."""
    text = sysroot.run("lnetctl net show")
    if text:
        nets = re.findall(r"net type:\s*([a-z0-9]+)", text)
        where = "lnetctl net show"
    else:
        for where in ("/sys/kernel/debug/lnet/nis", "/proc/sys/lnet/nis"):
            text = sysroot.read(where)
            if text:
                break
        nets = re.findall(r"@([a-z0-9]+)", text or "")
    kinds = tuple(dict.fromkeys(re.sub(r"\d+$", "", n) for n in nets if not n.startswith("lo")))
    if not kinds:
        return None, ("LNet's networks could not be read (no lnetctl, and /sys/kernel/debug/lnet/nis and "
                      "/proc/sys/lnet/nis are unreadable: they need root, or Lustre is not loaded)")
    return kinds, where


def ec2_instance_type(sysroot: SysRoot = HOST) -> str | None:
    """The EC2 instance type ("p5en.48xlarge") from DMI, readable without root; None off EC2."""
    if (sysroot.read("/sys/class/dmi/id/sys_vendor") or "").strip() != "Amazon EC2":
        return None
    return (sysroot.read("/sys/class/dmi/id/product_name") or "").strip() or None


def gds_capable(m: Mount, devices: tuple[str, ...], models: tuple[str | None, ...] = (),
                lnet: tuple[tuple[str, ...] | None, str] | None = None,
                instance: str | None = None) -> tuple[bool | None, str]:
    """Whether this mount's storage can DMA into a GPU: (True/False/None = cannot tell, why).

    `instance` is the EC2 instance type, when this is one (`ec2_instance_type`)."""
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
    if kind == "lustre":
        nets, where = lnet if lnet is not None else (None, "LNet networks not looked up")
        if nets is None:
            return None, f"Lustre: cannot tell whether it runs over RDMA: {where}"
        rdma = [n for n in nets if n.startswith(RDMA_LNET)]
        if rdma:
            said = f"Lustre over RDMA (LNet networks {', '.join(nets)}, from {where})"
            if "efa" in rdma and instance and instance.split(".")[0] not in FSX_GDS_FAMILIES:
                return False, (f"{said}, but FSx for Lustre supports GDS only on {', '.join(FSX_GDS_FAMILIES)} "
                               f"clients, and this is {instance}")
            client = f"{instance} is an FSx GDS client type" if instance else "the instance type is unknown here"
            return True, (f"{said}; {client}; the servers' side (an EFA-enabled file system, its security "
                          "group) cannot be checked from the client")
        return False, (f"Lustre over {', '.join(nets)} only (from {where}): GDS on Lustre needs an RDMA network "
                       "(o2ib, or EFA on FSx for Lustre)")
    if kind in LOCAL_FS:
        if kind == "ext4" and ({"data=journal", "data=writeback"} & opts):
            mode = next(o for o in opts if o.startswith("data="))
            return False, f"ext4 mounted with {mode}: GDS needs ordered mode"
        if not devices:
            return False, f"{kind} on {m.source}: the block device could not be identified ({need})"
        not_nvme = [d for d in devices if not d.startswith("nvme")]
        if not_nvme:
            return False, f"{kind} on {', '.join(not_nvme)}, not NVMe: GDS needs {need}"
        named = dict(zip(devices, models))
        ebs = [d for d in devices if named.get(d) == EBS_MODEL]
        if ebs:
            return False, (f"{kind} on {', '.join(ebs)}: an EBS volume ({EBS_MODEL}), network storage that Nitro "
                           "presents as NVMe, not a local drive GDS can DMA from")
        local = ", ".join(f"{d} ({named[d]})" if named.get(d) else d for d in devices)
        return True, f"{kind} on NVMe: {local}"
    return True, need


def filesystem_of(directory: str | os.PathLike, sysroot: SysRoot = HOST) -> FileSystemInfo:
    """The file system holding `directory` (or its nearest existing ancestor) and whether it can do GDS."""
    path = Path(directory)
    if sysroot.live:
        path = path.expanduser().resolve()
        while not path.exists() and path != path.parent:
            path = path.parent
    text = sysroot.read("/proc/self/mountinfo")
    mount = mount_of(path, mounts(text)) if text else None
    if mount is None:
        return FileSystemInfo(directory=str(path), mount_point="?", fstype="unknown", source="?", options="",
                              block_devices=(), gds_capable=False,
                              reason="/proc/self/mountinfo is unreadable: the file system is unknown")
    devices = leaf_block_devices(mount.dev, sysroot) if mount.fstype in LOCAL_FS else ()
    models = tuple(device_model(d, sysroot) for d in devices)
    lnet = lnet_networks(sysroot) if mount.fstype == "lustre" else None
    instance = ec2_instance_type(sysroot) if mount.fstype == "lustre" else None
    capable, reason = gds_capable(mount, devices, models, lnet, instance)
    return FileSystemInfo(directory=str(path), mount_point=mount.mount_point, fstype=mount.fstype,
                          source=mount.source, options=mount.options, block_devices=devices,
                          gds_capable=capable, reason=reason,
                          device_models=tuple(m or "" for m in models),
                          lnet_networks=(lnet[0] or ()) if lnet else ())


__all__ = [
    "GDS_FILESYSTEMS", "FileSystemInfo", "Mount", "mounts", "mount_of", "leaf_block_devices", "device_model",
    "lnet_networks", "ec2_instance_type", "gds_capable", "filesystem_of", "EBS_MODEL", "INSTANCE_STORE_MODEL",
]
