"""The `auto` knobs: data path, threads, io size and O_DIRECT, chosen from the machine and the load.

Most users never pass a knob, so the default must be right for the machine the lab runs
on: a 2-core laptop, a CPU-quota'd CI container or a 192-vCPU, 8-GPU node on Lustre.
`choose(machine, load)` is a pure function of two records, and says why for every knob:

- `Machine`: usable cores (the affinity mask, cut by the cgroup CPU quota: v2 `cpu.max`,
  v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`), GPUs, and the storage under the checkpoint
  (file system, local block device or NVMe, Lustre stripe count and OSTs);
- `LoadFacts`: the destination, and the checkpoint's page-cache residency, which every
  load measures before its clock starts anyway.

Cold bytes come from the device: reads spend their time waiting, so the policy keeps many
in flight (more for NVMe and for Lustre's stripes) and, on a host, reads with O_DIRECT
where the file system allows it (skipping the page cache's copy, as GDS does). Warm bytes
are memcpys out of the page cache: one thread per usable core. On a GPU, GDS where the
probe says it is ready (KvikIO's pool and task size set here), else the pinned bounce with
its ring sized here. A profile written by `gdslab tune` (see `gdslab.tuned`) for this
machine and file system replaces the guesses with measured winners, and says so.

`machine_facts(report)` collects a `Machine` from the probe's report and /proc, /sys (a
`SysRoot`, so recorded machines can be tested). Nothing here imports the loader.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass, field, replace

from .sizes import format_size
from .sysroot import HOST, SysRoot

AUTO = "auto"
MiB = 1 << 20
COLD_BELOW = 0.5  # resident fraction under which most bytes come from the device: read them as cold
NO_O_DIRECT = {"tmpfs": "tmpfs keeps files in memory and refuses O_DIRECT",
               "ramfs": "ramfs keeps files in memory and refuses O_DIRECT",
               "devtmpfs": "devtmpfs refuses O_DIRECT",
               "hugetlbfs": "hugetlbfs refuses O_DIRECT",
               "squashfs": "squashfs refuses O_DIRECT"}
HOST_IO_SIZE = 16 * MiB        # large enough that per-read overhead vanishes, small enough to balance threads
GPU_TASK_SIZE = 16 * MiB       # KvikIO splits reads into tasks of this size (its own default is 4 MiB)
MAX_THREADS = 128              # per load: beyond this, threads cost more to schedule than they keep busy
PINNED_RING_BUDGET = 1 << 30   # pinned staging per device at most: pinned memory is taken from the OS for good
# Reads in flight that keep each kind of storage busy when the page cache has nothing.
IN_FLIGHT = {"nvme": 16, "local": 8, "network": 16}
PER_LUSTRE_STRIPE = 4


@dataclass(frozen=True)
class Machine:
    """What the policy needs to know about the machine and the storage under the checkpoint."""

    cpu_model: str = ""
    logical_cpus: int = 1
    affinity_cpus: int = 1
    cpu_quota: float | None = None       # CPUs the cgroup allows (quota / period), None: no quota
    quota_source: str = ""               # the file the quota came from
    gpus: int = 0
    kernel: str = ""
    fstype: str = "unknown"
    mount_point: str = "?"
    mount_source: str = "?"
    block_devices: tuple[str, ...] = ()
    lustre_stripes: int | None = None    # stripe count of the checkpoint's folder (-1: every OST)
    lustre_osts: int | None = None
    gds_ready: bool = False              # the probe's verdict is "ready"

    @property
    def usable_cpus(self) -> int:
        """The cores this process can really run on: its affinity mask, cut by the CPU quota (rounded up)."""
        cpus = max(1, self.affinity_cpus)
        if self.cpu_quota is not None and self.cpu_quota > 0:
            cpus = min(cpus, max(1, math.ceil(self.cpu_quota - 1e-9)))
        return cpus

    def describe_cpus(self) -> str:
        text = f"{self.usable_cpus} usable core{'s' if self.usable_cpus != 1 else ''}"
        limits = []
        if self.affinity_cpus < self.logical_cpus:
            limits.append(f"affinity {self.affinity_cpus} of {self.logical_cpus}")
        if self.cpu_quota is not None and math.ceil(self.cpu_quota - 1e-9) < self.affinity_cpus:
            limits.append(f"cgroup quota {self.cpu_quota:g} CPUs")
        return text + (f" ({', '.join(limits)})" if limits else "")

    @property
    def storage(self) -> str:
        """'lustre', 'nvme', 'local', 'memory' or 'network': what decides how many reads to keep in flight."""
        if self.fstype == "lustre":
            return "lustre"
        if self.fstype in NO_O_DIRECT:
            return "memory"
        if self.block_devices:
            return "nvme" if all(d.startswith("nvme") for d in self.block_devices) else "local"
        if self.fstype in ("ext4", "xfs", "btrfs", "ext3", "ext2", "f2fs", "vfat", "overlay"):
            return "local"
        return "network"

    def key(self) -> dict:
        """What a tune profile is keyed by on the machine's side."""
        return {"cpu_model": self.cpu_model, "usable_cpus": self.usable_cpus, "gpus": self.gpus}


@dataclass(frozen=True)
class LoadFacts:
    """What the load will find: where the bytes go and how much of the checkpoint is in the page cache."""

    device: str = "cpu"                  # "cpu" or "cuda" (the device type)
    resident: float = 0.0                # fraction of the checkpoint's bytes in the page cache
    gds_available: bool = False          # the gds path can run on this device (KvikIO reads here)
    ranks: int = 1                       # ranks of one process sharing the machine (a sharded load)

    @property
    def cache(self) -> str:
        return "cold" if self.resident < COLD_BELOW else "warm"


@dataclass(frozen=True)
class Choice:
    """The knobs a load runs with, each with its reason; `source` is 'policy' or the profile's file."""

    datapath: str
    threads: int
    io_size: int
    options: dict = field(default_factory=dict)   # the path's own knobs the policy set (direct, buffers_per_thread)
    why: dict = field(default_factory=dict)       # knob -> reason
    source: str = "policy"

    def summary(self) -> str:
        """One line: 'host-direct, 2 threads, 16 MiB, O_DIRECT'."""
        extra = []
        if "direct" in self.options:
            extra.append("O_DIRECT" if self.options["direct"] else "page cache")
        if "buffers_per_thread" in self.options:
            extra.append(f"ring {self.options['buffers_per_thread']}×{self.threads}×{format_size(self.io_size)}")
        return ", ".join([self.datapath, f"{self.threads} threads", format_size(self.io_size), *extra])

    def reasons(self) -> str:
        return "; ".join(self.why.values())


def _in_flight(machine: Machine) -> tuple[int, str]:
    """Reads to keep in flight for a cold load on this storage, and why."""
    kind = machine.storage
    if kind == "lustre":
        stripes = machine.lustre_stripes
        osts = machine.lustre_osts
        if stripes is not None and stripes < 0 and osts:
            stripes = osts
        if stripes:
            n = PER_LUSTRE_STRIPE * stripes
            return n, f"Lustre striped over {stripes} OST{'s' if stripes != 1 else ''}: {PER_LUSTRE_STRIPE} reads each"
        if osts:
            return PER_LUSTRE_STRIPE * osts, f"Lustre with {osts} OSTs (stripe count unknown): {PER_LUSTRE_STRIPE} reads each"
        return IN_FLIGHT["network"], "Lustre (stripes unknown): a network file system's depth"
    if kind == "memory":
        return 1, f"{machine.fstype} is memory"
    depth = IN_FLIGHT.get(kind, IN_FLIGHT["network"])
    what = {"nvme": "NVMe wants a deep queue", "local": "a local disk wants several reads queued",
            "network": f"{machine.fstype} is reached over the network: latency hidden by many reads"}[kind]
    return depth, f"{what} ({depth} in flight)"


def _host_choice(machine: Machine, load: LoadFacts, datapath: str) -> Choice:
    cores = machine.usable_cpus
    why: dict[str, str] = {}
    options: dict = {}
    cold = load.cache == "cold"
    direct_refused = NO_O_DIRECT.get(machine.fstype)
    resident = f"{load.resident:.0%} of the checkpoint resident"
    if datapath == "host-direct":
        why["datapath"] = "datapath host-direct: one copy, straight into the destination (a bounce adds a copy)"
        if direct_refused:
            options["direct"] = False
            why["direct"] = f"page-cache reads: {direct_refused} ({resident})"
        elif cold:
            options["direct"] = True
            why["direct"] = (f"O_DIRECT: {resident}: the bytes come from the device, so skip the page cache's "
                             "copy (reads fall back, and say so, where the file system refuses)")
        else:
            options["direct"] = False
            why["direct"] = f"page-cache reads: {resident}: each read is a memcpy out of the page cache"
    if cold and machine.storage != "memory":
        depth, because = _in_flight(machine)
        threads = min(MAX_THREADS, max(cores, math.ceil(depth / load.ranks)))
        per_rank = f" over {load.ranks} ranks" if load.ranks > 1 else ""
        why["threads"] = f"threads {threads}: cold reads wait on the device; {because}{per_rank}"
    else:
        threads = max(1, cores // load.ranks)
        per_rank = f", shared by {load.ranks} ranks" if load.ranks > 1 else ""
        why["threads"] = (f"threads {threads}: {machine.describe_cpus()}{per_rank}, reads are CPU-bound copies "
                          f"({resident})")
    why["io_size"] = f"io_size {format_size(HOST_IO_SIZE)}: large reads (per-read costs vanish), still many per file"
    return Choice(datapath, threads, HOST_IO_SIZE, options, why)


def _gpu_choice(machine: Machine, load: LoadFacts, datapath: str) -> Choice:
    why: dict[str, str] = {}
    options: dict = {}
    cores = machine.usable_cpus
    depth, because = _in_flight(machine)
    if datapath == "gds":
        threads = min(MAX_THREADS, max(4, math.ceil(depth / load.ranks)))
        per_rank = f" over {load.ranks} GPUs" if load.ranks > 1 else ""
        why["threads"] = (f"threads {threads}: KvikIO's pool (its default is 1): DMA needs no CPU copies; "
                          f"{because}{per_rank}")
        why["io_size"] = f"io_size {format_size(GPU_TASK_SIZE)}: KvikIO's task size (its default 4 MiB)"
        return Choice(datapath, threads, GPU_TASK_SIZE, options, why)
    share = max(1, cores // max(load.ranks, 1))
    if load.cache == "cold":
        threads = min(MAX_THREADS, max(share, math.ceil(depth / load.ranks)))
        why["threads"] = f"threads {threads}: cold reads wait on the device; {because}"
    else:
        threads = share
        why["threads"] = (f"threads {threads}: {machine.describe_cpus()}"
                          f"{f' shared by {load.ranks} GPUs' if load.ranks > 1 else ''}; warm reads are copies")
    io_size = GPU_TASK_SIZE
    if datapath == "pinned-bounce":
        buffers = 2
        while buffers * threads * io_size > PINNED_RING_BUDGET and io_size > 4 * MiB:
            io_size //= 2
        options["buffers_per_thread"] = buffers
        why["buffers_per_thread"] = (f"ring of {buffers}×{threads} pinned buffers of {format_size(io_size)} "
                                     f"({format_size(buffers * threads * io_size)} pinned, at most "
                                     f"{format_size(PINNED_RING_BUDGET)}): a read fills one while the last is copied")
    why["io_size"] = f"io_size {format_size(io_size)}: large copies over the link"
    return Choice(datapath, threads, io_size, options, why)


def auto_datapath(machine: Machine, load: LoadFacts) -> tuple[str, str]:
    """The data path for `load` on `machine`, and why."""
    if load.device == "cpu":
        return "host-direct", "datapath host-direct: one copy, straight into the destination (a bounce adds a copy)"
    if load.gds_available and machine.gds_ready and load.cache == "cold":
        return "gds", "datapath gds: the probe says GDS is ready here: storage → GPU by DMA, no host copy"
    if load.gds_available and machine.gds_ready:
        return "pinned-bounce", (f"datapath pinned-bounce: {load.resident:.0%} of the checkpoint is in the page cache; "
                                 "copying it from host memory beats reading storage again")
    if load.gds_available:
        return "pinned-bounce", ("datapath pinned-bounce: KvikIO reads here but GDS is not ready (its compatibility "
                                 "mode is a bounce too)")
    return "pinned-bounce", "datapath pinned-bounce: gds cannot run here; pinned staging overlaps reads and copies"


def choose(machine: Machine, load: LoadFacts, datapath: str = AUTO, profile: dict | None = None,
           profile_source: str = "") -> Choice:
    """The knobs for `load` on `machine` (for `datapath`, or the path chosen too when 'auto').

    `profile` is a tune profile's winner for this device and cache state (`gdslab.tuned`);
    it is used when its path is the one that will run.
    """
    if datapath == AUTO:
        datapath, path_why = auto_datapath(machine, load)
        if profile and profile.get("datapath"):
            datapath, path_why = profile["datapath"], f"datapath {profile['datapath']}: measured best by gdslab tune"
    else:
        path_why = f"datapath {datapath}: asked for"
    pick = (_host_choice if load.device == "cpu" else _gpu_choice)(machine, load, datapath)
    why = {"datapath": path_why, **{k: v for k, v in pick.why.items() if k != "datapath"}}
    pick = replace(pick, why=why)
    if profile and profile.get("datapath") == datapath:
        measured = f"{profile.get('gbps', 0):.2f} GB/s {load.cache}" if profile.get("gbps") else load.cache
        note = f"tune profile {profile_source} ({measured})"
        options = {**pick.options, **{k: v for k, v in (profile.get("options") or {}).items()}}
        why = dict(pick.why)
        why["threads"] = f"threads {profile['threads']}: measured best by gdslab tune, {note}"
        why["io_size"] = f"io_size {format_size(profile['io_size'])}: measured best by gdslab tune"
        for name, value in (profile.get("options") or {}).items():
            why[name] = f"{name}={value}: measured best by gdslab tune"
        pick = Choice(datapath, int(profile["threads"]), int(profile["io_size"]), options, why, profile_source)
    return pick


# ----------------------------------------------------------------------------- the machine, from the probe


def _read_int(sysroot: SysRoot, name: str) -> int | None:
    text = sysroot.read(name)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def cgroup_cpu_quota(sysroot: SysRoot = HOST) -> tuple[float | None, str]:
    """(CPUs the process's cgroups allow, the file that says so), or (None, why none) where unlimited.

    cgroup v2: `cpu.max` ("max 100000" or "150000 100000") in the process's cgroup and each
    parent; v1: `cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1: no quota) in the cpu
    controller's hierarchy. The tightest limit on the way up wins.
    """
    lines = (sysroot.read("/proc/self/cgroup") or "").splitlines()
    limits: list[tuple[float, str]] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        path = path.strip() or "/"
        if controllers == "":
            bases = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            for base in bases:
                for folder in _ancestors(path):
                    name = f"{base}{folder}/cpu.max".replace("//", "/")
                    text = sysroot.read(name)
                    if not text:
                        continue
                    fields = text.split()
                    if len(fields) >= 2 and fields[0] != "max":
                        try:
                            limits.append((int(fields[0]) / int(fields[1]), name))
                        except (ValueError, ZeroDivisionError):
                            pass
        elif "cpu" in controllers.split(","):
            for base in dict.fromkeys((f"/sys/fs/cgroup/{controllers}", "/sys/fs/cgroup/cpu",
                                       "/sys/fs/cgroup/cpu,cpuacct")):
                for folder in _ancestors(path):
                    quota = _read_int(sysroot, f"{base}{folder}/cpu.cfs_quota_us".replace("//", "/"))
                    period = _read_int(sysroot, f"{base}{folder}/cpu.cfs_period_us".replace("//", "/"))
                    if quota is not None and period and quota > 0:
                        limits.append((quota / period, f"{base}{folder}/cpu.cfs_quota_us".replace("//", "/")))
    if not limits:
        return None, "no cgroup CPU quota"
    return min(limits)


def _ancestors(path: str) -> list[str]:
    """'/a/b' -> ['/a/b', '/a', '']: a cgroup and every parent up to the hierarchy's root."""
    parts = [p for p in path.split("/") if p]
    return ["/" + "/".join(parts[:k]) if k else "" for k in range(len(parts), -1, -1)]


def lustre_layout(directory: str, sysroot: SysRoot = HOST) -> tuple[int | None, int | None]:
    """(stripe count of `directory`, OSTs of the file system); None where unknown.

    The stripe count comes from `lfs getstripe -c` (live) or, failing that, the client's
    default layout in /sys/fs/lustre/lov/*/stripecount (-1 means every OST); the OSTs from
    /sys/fs/lustre/lov/*/numobd (older clients: /proc/fs/lustre/lov/).
    """
    stripes = None
    if sysroot.live:
        text = sysroot.run(f"lfs getstripe -c -d {directory}") or sysroot.run(f"lfs getstripe -c {directory}")
        if text and re.fullmatch(r"\s*-?\d+\s*", text):
            stripes = int(text)
    osts = None
    for base in ("/sys/fs/lustre/lov", "/proc/fs/lustre/lov"):
        for lov in sysroot.listdir(base):
            if stripes is None:
                stripes = _read_int(sysroot, f"{base}/{lov}/stripecount")
            if osts is None:
                osts = _read_int(sysroot, f"{base}/{lov}/numobd") or _read_int(sysroot, f"{base}/{lov}/activeobd")
    return stripes, osts


def machine_facts(report, sysroot: SysRoot = HOST) -> Machine:
    """A `Machine` from a `ProbeReport` (or its `as_dict()`), plus the cgroup quota and Lustre layout."""
    d = report if isinstance(report, dict) else report.as_dict()
    fs = d.get("filesystem") or {}
    cuda = d.get("cuda") or {}
    quota, source = cgroup_cpu_quota(sysroot)
    stripes = osts = None
    if fs.get("fstype") == "lustre":
        stripes, osts = lustre_layout(fs.get("directory", ""), sysroot)
    return Machine(
        cpu_model=d.get("cpu_model", ""), logical_cpus=int(d.get("cpu_count") or 1),
        affinity_cpus=int(d.get("cpu_affinity") or d.get("cpu_count") or 1),
        cpu_quota=quota, quota_source=source if quota is not None else "",
        gpus=len(cuda.get("gpus") or ()) if cuda.get("gpu_available") else 0, kernel=d.get("kernel", ""),
        fstype=fs.get("fstype", "unknown"), mount_point=fs.get("mount_point", "?"),
        mount_source=fs.get("source", "?"), block_devices=tuple(fs.get("block_devices") or ()),
        lustre_stripes=stripes, lustre_osts=osts, gds_ready=d.get("gds_state") == "ready",
    )


@functools.lru_cache(maxsize=64)
def _live_machine(directory: str) -> Machine:
    from .probe import probe

    return machine_facts(probe(directory))


def this_machine(directory) -> Machine:
    """The live machine, for checkpoints under `directory` (cached per folder, as the probe is)."""
    return _live_machine(str(directory))


def forget() -> None:
    """Drop the cached machines (tests change the environment under them)."""
    _live_machine.cache_clear()


def knob_arg(text: str) -> int | str:
    """A command line's --threads: a positive integer, or 'auto'."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        import argparse

        raise argparse.ArgumentTypeError(f"want a positive integer or 'auto', got {text!r}")
    return value


# ----------------------------------------------------------------------------- one load's knobs


@dataclass(frozen=True)
class Resolved:
    """A load's knobs after `auto`; `details` (chosen, why, auto) go into the load's record."""

    datapath: str
    threads: int | str
    io_size: int | str
    options: dict
    details: dict


def local_ranks() -> int:
    """Processes of one job on this node (torchrun's LOCAL_WORLD_SIZE), which share its cores and storage."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def resolve(directory, files, device, datapath=AUTO, threads=AUTO, io_size=AUTO, options: dict | None = None,
            ranks: int | None = None) -> Resolved:
    """Replace each `auto` knob by the policy's (or the tune profile's) choice; explicit values win.

    `directory` holds the checkpoint (its file system is probed), `files` are the ones the
    load reads (their residency is measured now), `device` a torch device. The path's own
    options (O_DIRECT, the pinned ring) are chosen only when the data path is.
    """
    options = dict(options or {})
    asked = {"datapath": datapath, "threads": threads, "io_size": io_size}
    auto = [name for name, value in asked.items() if isinstance(value, str) and value == AUTO]
    if not auto:
        return Resolved(datapath, threads, io_size, options, {})
    from . import datapaths, tuned
    from .cache import resident_fraction_all

    machine = this_machine(directory)
    kind = device.type if hasattr(device, "type") else str(device).split(":")[0]
    gds = kind == "cuda" and datapaths.get("gds").info(device).available
    facts = LoadFacts(kind, resident_fraction_all(files) if files else 0.0, gds, ranks or local_ranks())
    best, source = tuned.winner(machine, kind, facts.cache)
    pick = choose(machine, facts, AUTO if "datapath" in auto else datapath, best, source)
    why = dict(pick.why)
    for name in asked:
        if name not in auto:
            why[name] = f"{name} {asked[name]}: asked for"
    if "datapath" in auto:
        for name, value in pick.options.items():
            if name in options:
                why[name] = f"{name}={options[name]}: asked for"
            else:
                options[name] = value
    else:
        for name in pick.options:
            why.pop(name, None)
    final = Choice(pick.datapath if "datapath" in auto else datapath,
                   pick.threads if "threads" in auto else threads,
                   pick.io_size if "io_size" in auto else io_size, options, why, pick.source)
    details = {"chosen": _summary(final), "why": "; ".join(why.values()), "auto": ",".join(auto),
               "chosen_by": "tune profile " + source if pick.source != "policy" else "policy",
               "policy_cache": facts.cache}
    return Resolved(final.datapath, final.threads, final.io_size, options, details)


def is_auto_choice(directory, device, cache: str, datapath: str, threads: int, io_size: int,
                   options: dict | None = None) -> bool:
    """Whether these knobs are what an `auto` load would run with here for `cache` ('cold'/'warm'), profile included."""
    import torch

    from . import datapaths, tuned

    device = torch.device(device)
    machine = this_machine(directory)
    gds = device.type == "cuda" and datapaths.get("gds").info(device).available
    facts = LoadFacts(device.type, 0.0 if cache == "cold" else 1.0, gds, local_ranks())
    best, source = tuned.winner(machine, device.type, facts.cache)
    pick = choose(machine, facts, AUTO, best, source)
    given = {**datapaths.get(datapath).options, **(options or {})}
    return (pick.datapath, pick.threads, pick.io_size) == (datapath, threads, io_size) and all(
        given.get(name) == value for name, value in pick.options.items())


def _summary(choice: Choice) -> str:
    try:
        return choice.summary()
    except (TypeError, ValueError):  # an explicit io_size given as text: shown as given
        return f"{choice.datapath}, {choice.threads} threads, {choice.io_size}"


__all__ = ["AUTO", "COLD_BELOW", "Choice", "LoadFacts", "Machine", "auto_datapath", "cgroup_cpu_quota", "choose",
           "forget", "is_auto_choice", "knob_arg", "local_ranks", "lustre_layout", "machine_facts", "resolve", "Resolved", "this_machine"]
