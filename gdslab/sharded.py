"""One node, many devices: every rank's tensor-parallel slice loaded at once, one worker thread per device.

`load_sharded(source, world)` plans each rank's reads (`gdslab.plan`, or a pre-sharded
set's own files, `gdslab.reshard`), releases the ranks together and runs each through the
same timed load as `gdslab.load`; the load time is the slowest rank's. `load_rank` is the
per-device worker, also used by the torch.distributed session (`gdslab.dist`).

Without GPUs every rank's destination is host memory ("cpu"), and every record says
"simulated ranks on CPU": the ranks share one machine's cores, memory and page cache,
so their rates show contention, not what N GPUs with N links would do.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from . import datapaths
from .cache import CacheError, can_evict, evict_all, resident_fraction_all, warm
from .checkpoint import Checkpoint
from .costs import LoadCosts
from .datapaths.base import TensorRead
from .errors import DatapathUnavailable, LoadCancelled
from .loader import LoadResult, cache_state, load, resolve_device
from .plan import DEFAULT_STRIDED, RankPlan, rank_plan
from .policy import resolve
from .profile import EventLog, FillCurve, fill_curve
from .reshard import is_preshard, open_set, rank_plan_of
from .sizes import format_size, parse_size

SIMULATED = "simulated ranks on CPU"
CACHE_CHOICES = ("as-is", "cold", "warm")


def default_datapath(device: torch.device | str) -> str:
    """host-direct for host destinations; on a GPU gds when KvikIO can read here, else pinned-bounce."""
    device = torch.device(device)
    if device.type == "cpu":
        return "host-direct"
    return "gds" if datapaths.get("gds").info(device).available else "pinned-bounce"


def prepare_cache(files: Iterable[Path | str], cache: str) -> None:
    """Make the files cold (evicted) or warm (read once) before a run; 'as-is' leaves them."""
    files = [Path(f) for f in files]
    if cache not in CACHE_CHOICES:
        raise ValueError(f"cache must be one of {CACHE_CHOICES}, got {cache!r}")
    if cache == "cold" and files:
        ok, reason = can_evict(files[0].parent)
        if not ok:
            raise CacheError(files[0].parent, f"cannot make a cold run: {reason}")
        evict_all(files)
    elif cache == "warm":
        warm(files)


# --- one rank --------------------------------------------------------------------------------


@dataclass
class RankResult:
    """One rank's tensors (its slices, finished) and how long it took."""

    rank: int
    world: int
    mode: str
    strided: str
    vocab: str
    tensors: dict[str, torch.Tensor] = field(repr=False)
    load: LoadResult = field(repr=False)  # the rank's gdslab.load (its tensors moved to `tensors`)
    nbytes: int  # bytes of the rank's finished tensors
    read_nbytes: int  # bytes the rank read from files
    seconds: float  # the rank's time: read + cut + exchange
    post_seconds: float = 0.0  # cutting coalesced spans to slices
    comm_seconds: float = 0.0  # scatter/broadcast in mode 'share'
    began: float = 0.0  # seconds from the run's common start to this rank's first read
    backend: str = "threads"  # threads (load_sharded), gloo or nccl
    clock_start: float = field(default=0.0, repr=False)  # time.perf_counter() at the first read (this process)
    clock_end: float = field(default=0.0, repr=False)  # time.perf_counter() when the tensors were ready

    @property
    def device(self) -> str:
        return self.load.device

    @property
    def simulated(self) -> bool:
        return torch.device(self.device).type == "cpu"

    @property
    def gbps(self) -> float:
        """Rank bytes per second, decimal GB/s."""
        return self.nbytes / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def label(self) -> str:
        return f"rank {self.rank} ({self.device})"

    def record(self) -> dict:
        """`LoadResult.record()` with rank, world, mode and the rank's own bytes and times."""
        rec = self.load.record()
        rec.update({
            "rank": self.rank, "world": self.world, "mode": self.mode, "backend": self.backend,
            "strided": self.strided, "vocab": self.vocab, "tensors": len(self.tensors),
            "nbytes": self.nbytes, "read_nbytes": self.read_nbytes, "seconds": self.seconds,
            "gbps": self.gbps, "load_seconds": self.load.seconds, "post_seconds": self.post_seconds,
            "comm_seconds": self.comm_seconds, "began": self.began,
            "simulated": self.simulated, "note": SIMULATED if self.simulated else "",
            **read_pattern(self.load.events, self.read_nbytes, self.nbytes),
        })
        return rec

    def fill_curve(self) -> FillCurve:
        """Bytes this rank's load landed over time, on the run's common clock."""
        curve = fill_curve(self.load.events)
        return FillCurve(self.label, curve.times + self.began, curve.nbytes, curve.source)


def warm_probe(ckpt: Checkpoint) -> None:
    """Run the (cached) machine probe that `gdslab.load` runs first, so it is not in a timed run."""
    from .probe import probe

    probe(ckpt.root if ckpt.root.is_dir() else ckpt.root.parent)


def _timed_load(ckpt: Checkpoint, reads: list[TensorRead], datapath: str, device: torch.device,
                threads: int, io_size, cancel: threading.Event | None, measure_costs: bool = True,
                options: dict | None = None) -> tuple[LoadResult, float]:
    """gdslab.load with our own event log, so the absolute start of its clock is known."""
    log = EventLog()
    result = load(ckpt, datapath, device, threads, io_size, reads=reads, log=log, cancel=cancel,
                  measure_costs=measure_costs, **(options or {}))
    return result, log.origin


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_rank(
    source,
    rank: int,
    world: int,
    *,
    datapath: str | None = None,
    device: str | torch.device | None = None,
    threads: int | str = "auto",
    io_size: int | str = "auto",
    strided: str = DEFAULT_STRIDED,
    vocab: str = "split",
    plan: RankPlan | None = None,
    cancel: threading.Event | None = None,
    measure_costs: bool = True,
    options: dict | None = None,
) -> RankResult:
    """Load rank `rank`'s tensor-parallel slices (of `world`) and cut coalesced spans: the per-GPU worker.

    `options` are the data path's own knobs; `measure_costs` is off when several ranks share
    this process (their memory peaks are then measured once, for the whole load).
    """
    ckpt = source if isinstance(source, Checkpoint) else Checkpoint.open(source)
    device = resolve_device(device)
    plan = plan if plan is not None else rank_plan(ckpt, rank, world, strided, vocab)
    result, origin = _timed_load(ckpt, list(plan.reads), datapath or "auto", device,
                                 threads, io_size, cancel, measure_costs, options)
    cut = time.perf_counter()
    tensors = plan.finish(dict(result.tensors))
    _sync(device)
    end = time.perf_counter()
    result.tensors = {}  # the finished tensors live in RankResult.tensors only
    return RankResult(plan.rank, plan.world, "slice", plan.strided, plan.vocab, tensors, result,
                      plan.owned_nbytes, plan.read_nbytes, end - origin, post_seconds=end - cut,
                      clock_start=origin, clock_end=end)


# --- one node, many devices: threads ------------------------------------------------------------


@dataclass
class ShardedResult:
    """Every rank of one sharded load, and the run as a whole (its time is the slowest rank's)."""

    ranks: list[RankResult]
    seconds: float  # from the first rank's first read to the last rank's finish
    cache: str  # what was asked: as-is, cold or warm
    resident_before: float  # page-cache fraction of the files just before the run
    costs: dict = field(default_factory=dict)  # memory besides the weights, for all ranks together

    @property
    def world(self) -> int:
        return len(self.ranks)

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self.ranks)

    @property
    def gbps(self) -> float:
        """Aggregate: all ranks' bytes over the run's time."""
        return self.nbytes / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def simulated(self) -> bool:
        return all(r.simulated for r in self.ranks)

    @property
    def slowest(self) -> RankResult:
        return max(self.ranks, key=lambda r: r.began + r.seconds)

    def per_rank_gbps(self) -> dict[str, float]:
        return {r.label: r.gbps for r in self.ranks}

    def records(self) -> list[dict]:
        return [r.record() for r in self.ranks]

    def record(self) -> dict:
        rec = run_record(self.records(), seconds=self.seconds)
        rec.update({"cache_asked": self.cache, "resident_before": self.resident_before,
                    "cache": cache_state(self.resident_before), **self.costs})
        return rec

    def fill_curves(self) -> dict[str, FillCurve]:
        return {r.label: r.fill_curve() for r in self.ranks}

    def __str__(self) -> str:
        lines = [f"{self.world} ranks{' (' + SIMULATED + ')' if self.simulated else ''}: "
                 f"{format_size(self.nbytes)} in {self.seconds:.3f} s = {self.gbps:.2f} GB/s aggregate "
                 f"({cache_state(self.resident_before)} cache; slowest: rank {self.slowest.rank})"]
        lines += [f"  {r.label}: {format_size(r.nbytes)} (read {format_size(r.read_nbytes)}) in {r.seconds:.3f} s "
                  f"= {r.gbps:.2f} GB/s, ran: {r.load.effective}" for r in self.ranks]
        return "\n".join(lines)


def read_pattern(events, read_nbytes: int, kept_nbytes: int) -> dict:
    """How a rank read: bytes read over bytes kept (amplification), the number of reads and their sizes."""
    sizes = sorted(e.nbytes for e in events if e.stage == "read")
    return {
        "amplification": read_nbytes / kept_nbytes if kept_nbytes else 0.0,
        "reads": len(sizes),
        "read_min": sizes[0] if sizes else 0,
        "read_median": sizes[len(sizes) // 2] if sizes else 0,
        "read_max": sizes[-1] if sizes else 0,
    }


def slice_mismatches(tensors: dict[str, torch.Tensor], full: dict[str, torch.Tensor], rank: int, world: int,
                     vocab: str = "split") -> list[str]:
    """Names whose tensor is not, bit for bit, `torch.chunk` of the full one for this rank (or missing)."""
    from .plan import split_kind

    bad = sorted(set(full) ^ set(tensors))
    for name, got in tensors.items():
        if name not in full:
            continue
        _, dim = split_kind(name, full[name].dim(), vocab)
        want = full[name] if dim is None else torch.chunk(full[name], world, dim)[rank]
        got = got.cpu()
        if got.shape != want.shape or not torch.equal(got.reshape(-1).view(torch.uint8),
                                                      want.contiguous().reshape(-1).view(torch.uint8)):
            bad.append(name)
    return bad


def run_record(records: Sequence[dict], seconds: float | None = None) -> dict:
    """One record for a run from its per-rank records: totals, the slowest rank's time, spread."""
    if not records:
        raise ValueError("no rank records")

    def common(key: str):
        values = list(dict.fromkeys(str(r.get(key, "")) for r in records))
        return values[0] if len(values) == 1 else ", ".join(values)

    times = [r["began"] + r["seconds"] for r in records]
    seconds = max(times) if seconds is None else seconds
    nbytes = sum(r["nbytes"] for r in records)
    read = sum(r["read_nbytes"] for r in records)
    slowest = records[times.index(max(times))]
    rec = {key: common(key) for key in ("source", "datapath", "effective", "device", "mode", "backend",
                                        "strided", "vocab", "cache", "fs_type", "gds_verdict", "note")}
    rec.update({
        "started": min(r["started"] for r in records), "world": len(records),
        "threads": records[0]["threads"], "io_size": records[0]["io_size"], "files": records[0]["files"],
        "nbytes": nbytes, "read_nbytes": read, "seconds": seconds,
        "gbps": nbytes / seconds / 1e9 if seconds > 0 else 0.0,
        "read_gbps": read / seconds / 1e9 if seconds > 0 else 0.0,
        "slowest_rank": slowest["rank"], "fastest_seconds": min(r["seconds"] for r in records),
        "amplification": read / nbytes if nbytes else 0.0, "reads": sum(r.get("reads", 0) for r in records),
        "read_min": min(r.get("read_min", 0) for r in records), "read_max": max(r.get("read_max", 0) for r in records),
        "read_median": sorted(r.get("read_median", 0) for r in records)[len(records) // 2],
        "comm_seconds": max(r["comm_seconds"] for r in records),
        "simulated": all(r["simulated"] for r in records),
        "resident_before": sum(r["resident_before"] for r in records) / len(records),
    })
    return rec


def _devices(world: int | None, devices: Sequence[str | torch.device] | None, device: str | None = None,
             simulate: bool = False) -> list[torch.device]:
    """One device per rank. More ranks than GPUs is refused unless `simulate` (ranks on the CPU, recorded so)."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if devices is None:
        kind = torch.device(device).type if device is not None else ("cuda" if gpus else "cpu")
        if world is None:
            if kind == "cpu":
                raise ValueError("give world (the number of ranks) or devices: there is no GPU to count here")
            world = gpus
        if kind == "cpu":
            devices = ["cpu"] * world  # host ranks: simulated, and recorded so
        elif world <= gpus:
            devices = [f"cuda:{k}" for k in range(world)]
        elif simulate:
            devices = ["cpu"] * world
        else:
            raise DatapathUnavailable(
                f"{world} ranks on GPUs need {world} GPUs, but this machine has {gpus}: give world={gpus} or fewer, "
                "or simulate=True to run the ranks on the CPU (recorded as simulated, not a GPU result)")
    devices = [resolve_device(d) for d in devices]
    if world is not None and len(devices) != world:
        raise ValueError(f"world is {world} but {len(devices)} devices were given")
    if not devices:
        raise ValueError("no devices to load onto")
    return devices


def load_sharded(
    source,
    world: int | None = None,
    devices: Sequence[str | torch.device] | None = None,
    datapath: str | None = None,
    threads: int | str = "auto",
    io_size: int | str = "auto",
    *,
    strided: str = DEFAULT_STRIDED,
    vocab: str = "split",
    cache: str = "as-is",
    cancel: threading.Event | None = None,
    device: str | None = None,
    simulate: bool = False,
    **options,
) -> ShardedResult:
    """Load every rank's slice at once, one worker thread per device (rank r → devices[r]).

    `devices` defaults to the first `world` local GPUs (`device="cuda"`, or nothing asked on a
    GPU machine), else `world` × "cpu" (`device="cpu"`, or no GPU here: simulated ranks,
    recorded so). More ranks than GPUs is refused unless `simulate=True` asks for CPU ranks. Each rank runs `threads` readers by `datapath`; "auto" (the default; None too)
    knobs are chosen once for all ranks by `gdslab.policy`, which shares the machine among
    them. `cache` 'cold' evicts the files first, 'warm' reads them first.
    Any rank failing stops the others, and its error is raised once they have all stopped.
    `options` are the data path's own knobs. KvikIO's thread pool is one per process, so
    for gds it is set once for all ranks (`threads` × ranks threads).
    """
    pset = None if isinstance(source, Checkpoint) or not is_preshard(source) else open_set(source)
    if pset is not None:  # a pre-sharded set: its TP degree decides the ranks, each reads its own files whole
        pset.check_world(world if world is not None else (len(devices) if devices is not None else None))
        devices = _devices(pset.tp if devices is None else world, devices, device, simulate)
        ckpts, plans = zip(*(rank_plan_of(pset, r) for r in range(pset.tp)))
        world = pset.tp
    else:
        ckpt = source if isinstance(source, Checkpoint) else Checkpoint.open(source)
        devices = _devices(world, devices, device, simulate)
        world = len(devices)
        plans = [rank_plan(ckpt, r, world, strided, vocab) for r in range(world)]  # plan errors before any read
        ckpts = [ckpt] * world
    ckpt = ckpts[0]
    files = list(dict.fromkeys(f.path for c in ckpts for f in c.files))
    warm_probe(ckpt)
    prepare_cache(files, cache)
    auto = resolve(ckpt.root if ckpt.root.is_dir() else ckpt.root.parent, files, devices[0], datapath or "auto",
                   threads, io_size, options, ranks=world)  # one choice for every rank, the machine shared
    paths, threads, io_size, options = [auto.datapath] * world, auto.threads, auto.io_size, auto.options
    for path, device in zip(paths, devices):  # refuse an unavailable path before any rank starts
        info = datapaths.get(path).info(device)
        if not info.available:
            raise DatapathUnavailable(f"{path} cannot run on {device}: {info.reason}")
    resident = resident_fraction_all(files)

    stop = threading.Event()
    barrier = threading.Barrier(world)
    results: list[RankResult | None] = [None] * world
    errors: list[BaseException] = []

    def work(r: int) -> None:
        try:
            barrier.wait()
            results[r] = load_rank(ckpts[r], r, world, datapath=paths[r], device=devices[r], threads=threads,
                                   io_size=io_size, plan=plans[r], cancel=stop, measure_costs=world == 1,
                                   options=options)
        except BaseException as e:  # noqa: BLE001 - handed to the caller below
            errors.append(e)
            stop.set()
            barrier.abort()

    workers = [threading.Thread(target=work, args=(r,), name=f"gdslab-rank{r}", daemon=True) for r in range(world)]
    if cancel is not None and cancel.is_set():
        stop.set()
    shared = _kvikio_once(paths, threads * world, parse_size(io_size), options)
    costs = LoadCosts(devices[0]) if world > 1 else contextlib.nullcontext()
    try:
        with shared, costs:
            for w in workers:
                w.start()
            while any(w.is_alive() for w in workers):
                for w in workers:
                    w.join(0.05)
                if cancel is not None and cancel.is_set():
                    stop.set()
    except BaseException:
        stop.set()
        barrier.abort()
        for w in workers:
            w.join()
        results.clear()
        raise
    if errors:
        results.clear()
        real = [e for e in errors if not isinstance(e, (LoadCancelled, threading.BrokenBarrierError))]
        raise (real or errors)[0]
    ranks = [r for r in results if r is not None]
    for r in ranks:
        r.load.details.update(auto.details)  # what the policy chose for all ranks, and why
    start = min(r.clock_start for r in ranks)
    for r in ranks:
        r.began = r.clock_start - start
    measured = {}
    if world > 1:
        weights_on_host = sum(r.nbytes for r in ranks if r.simulated)
        measured = {**costs.costs(weights_on_host).record(), "costs_scope": "all ranks of this process"}
    return ShardedResult(ranks, max(r.clock_end for r in ranks) - start, cache, resident, measured)


def _kvikio_once(paths: Sequence[str], threads: int, io_size: int, options: dict):
    """KvikIO's settings for every rank at once when any rank reads by gds (its pool is one per process)."""
    if "gds" not in paths:
        return contextlib.nullcontext()
    from .datapaths.gds import DEFAULT_GDS_THRESHOLD, kvikio_settings

    return kvikio_settings(threads, io_size, options.get("gds_threshold", DEFAULT_GDS_THRESHOLD))


__all__ = [
    "SIMULATED", "CACHE_CHOICES", "RankResult", "ShardedResult", "load_rank", "load_sharded", "run_record",
    "read_pattern", "default_datapath", "prepare_cache", "warm_probe", "slice_mismatches",
]
