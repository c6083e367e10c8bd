"""Sharded parallel loading: every rank loads its tensor-parallel slice at the same time.

Two ways to run N ranks, one per GPU:

- one node, many GPUs — `load_sharded(...)`: one worker thread per device in this
  process, each its own `gdslab.load` with its rank's reads (`gdslab.plan`); the load
  time is the slowest rank's.
- many nodes — `torch.distributed`: one process per rank, launched by
  ``torchrun --nproc-per-node N -m gdslab.dist CHECKPOINT`` (NCCL on GPUs, gloo on CPU).
  Mode ``slice``: each rank reads its own slice. Mode ``share``: each rank reads 1/N of
  the checkpoint (whole tensors), then the ranks scatter the slices to their owners (and
  broadcast replicated tensors), as fastsafetensors and InstantTensor do. Rank 0
  gathers one record per rank and one per run. `run_local` launches the same thing as N
  local processes over 127.0.0.1 (tests, notebooks).

Without GPUs every rank's destination is host memory ("cpu"), and every record says
"simulated ranks on CPU": the ranks share one machine's cores, memory and page cache,
so their rates show contention, not what N GPUs with N links would do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Iterable, Sequence

import torch

from . import datapaths
from .cache import CacheError, can_evict, evict_all, resident_fraction_all, warm
from .checkpoint import Checkpoint
from .costs import LoadCosts
from .datapaths.base import TensorRead
from .errors import DatapathUnavailable, GdslabError, LoadCancelled
from .loader import LoadResult, cache_state, load, resolve_device
from .plan import DEFAULT_STRIDED, RankPlan, STRIDED_MODES, VOCAB_POLICIES, rank_plan, share_partition
from .reshard import is_preshard, open_set, rank_plan_of
from .profile import EventLog, FillCurve, fill_curve
from .sizes import format_size, parse_size

SIMULATED = "simulated ranks on CPU"
MODES = ("slice", "share")
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
    threads: int = 4,
    io_size: int | str = "16MiB",
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
    result, origin = _timed_load(ckpt, list(plan.reads), datapath or default_datapath(device), device,
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


def _devices(world: int | None, devices: Sequence[str | torch.device] | None) -> list[torch.device]:
    if devices is None:
        if torch.cuda.is_available() and world is None:
            devices = [f"cuda:{k}" for k in range(torch.cuda.device_count())]
        elif world is None:
            raise ValueError("give world (the number of ranks) or devices: there is no GPU to count here")
        elif torch.cuda.is_available() and world <= torch.cuda.device_count():
            devices = [f"cuda:{k}" for k in range(world)]
        else:
            devices = ["cpu"] * world
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
    threads: int = 4,
    io_size: int | str = "16MiB",
    *,
    strided: str = DEFAULT_STRIDED,
    vocab: str = "split",
    cache: str = "as-is",
    cancel: threading.Event | None = None,
    **options,
) -> ShardedResult:
    """Load every rank's slice at once, one worker thread per device (rank r → devices[r]).

    `devices` defaults to every local GPU (the first `world` of them), else `world` × "cpu"
    (simulated ranks). Each rank runs `threads` readers by `datapath` (default per device:
    `default_datapath`). `cache` 'cold' evicts the files first, 'warm' reads them first.
    Any rank failing stops the others, and its error is raised once they have all stopped.
    `options` are the data path's own knobs. KvikIO's thread pool is one per process, so
    for gds it is set once for all ranks (`threads` × ranks threads).
    """
    pset = None if isinstance(source, Checkpoint) or not is_preshard(source) else open_set(source)
    if pset is not None:  # a pre-sharded set: its TP degree decides the ranks, each reads its own files whole
        pset.check_world(world if world is not None else (len(devices) if devices is not None else None))
        devices = _devices(pset.tp if devices is None else world, devices)
        ckpts, plans = zip(*(rank_plan_of(pset, r) for r in range(pset.tp)))
        world = pset.tp
    else:
        ckpt = source if isinstance(source, Checkpoint) else Checkpoint.open(source)
        devices = _devices(world, devices)
        world = len(devices)
        plans = [rank_plan(ckpt, r, world, strided, vocab) for r in range(world)]  # plan errors before any read
        ckpts = [ckpt] * world
    ckpt = ckpts[0]
    paths = [datapath or default_datapath(d) for d in devices]
    for path, device in zip(paths, devices):  # refuse an unavailable path before any rank starts
        info = datapaths.get(path).info(device)
        if not info.available:
            raise DatapathUnavailable(f"{path} cannot run on {device}: {info.reason}")
    files = list(dict.fromkeys(f.path for c in ckpts for f in c.files))
    warm_probe(ckpt)
    prepare_cache(files, cache)
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


# --- many nodes: torch.distributed ---------------------------------------------------------------


def _dist():
    import torch.distributed as dist

    return dist


def _barrier(device: torch.device) -> None:
    dist = _dist()
    if device.type == "cuda" and dist.get_backend() == "nccl":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()


def _raw(tensor: torch.Tensor) -> torch.Tensor:
    """A flat uint8 view sharing `tensor`'s memory: collectives then move any dtype, gloo or NCCL."""
    return tensor.reshape(-1).view(torch.uint8)


def exchange(ckpt: Checkpoint, partition: list[list], have: dict[str, torch.Tensor], vocab: str,
             device: torch.device) -> dict[str, torch.Tensor]:
    """Each rank's read tensors → every rank's slices: one collective per tensor, in table order.

    The rank that read a tensor scatters its `torch.chunk`s to their owners (each rank
    receives straight into its destination tensor) or broadcasts it whole when it is
    replicated. Every rank walks the same table, so the collectives match up. With one
    rank there is nothing to share.
    """
    from .plan import tensor_slice

    dist = _dist()
    rank, world = dist.get_rank(), dist.get_world_size()
    if world == 1:
        return {e.name: have[e.name] for e in ckpt.tensors}
    owner = {e.name: src for src, group in enumerate(partition) for e in group}
    out: dict[str, torch.Tensor] = {}
    for e in ckpt.tensors:
        src, s = owner[e.name], tensor_slice(e, rank, world, vocab)
        if s.dim is None:
            tensor = have.pop(e.name) if rank == src else torch.empty(e.shape, dtype=e.dtype, device=device)
            if tensor.numel():
                dist.broadcast(_raw(tensor), src=src)
            out[e.name] = tensor
            continue
        tensor = torch.empty(s.shape_owned, dtype=e.dtype, device=device)
        if tensor.numel():
            send = None
            if rank == src:
                send = [_raw(part.contiguous()) for part in torch.chunk(have.pop(e.name), world, s.dim)]
            dist.scatter(_raw(tensor), send, src=src)
        out[e.name] = tensor
    return out


def _rank_source(source, rank: int, world: int, strided: str, vocab: str) -> tuple[Checkpoint, RankPlan]:
    """The checkpoint rank `rank` reads and its plan: its own files of a pre-sharded set, or its slices."""
    if not isinstance(source, Checkpoint) and is_preshard(source):
        pset = open_set(source)
        pset.check_world(world)
        return rank_plan_of(pset, rank)
    ckpt = source if isinstance(source, Checkpoint) else Checkpoint.open(source)
    return ckpt, rank_plan(ckpt, rank, world, strided, vocab)


def run_rank(
    source,
    mode: str = "slice",
    *,
    datapath: str | None = None,
    device: str | torch.device | None = None,
    threads: int = 4,
    io_size: int | str = "16MiB",
    strided: str = DEFAULT_STRIDED,
    vocab: str = "split",
) -> RankResult:
    """This process's rank of an initialized process group: its slices, by `mode`.

    'slice': read the rank's own slices. 'share': read 1/N of the checkpoint (whole
    tensors), then `exchange`. Ranks start together after a barrier; `seconds` runs from
    there to this rank's tensors being ready. A pre-sharded set (`gdslab reshard`) is read in
    'slice' mode only: each rank reads its own files, whole.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    dist = _dist()
    rank, world = dist.get_rank(), dist.get_world_size()
    device = resolve_device(device)
    datapath = datapath or default_datapath(device)
    backend = str(dist.get_backend())
    ckpt, plan = _rank_source(source, rank, world, strided, vocab)
    if plan.strided == "presharded" and mode == "share":
        raise ValueError(f"{ckpt.root}: a pre-sharded set is read in 'slice' mode only (each rank reads its own "
                         "files); there is nothing to share")
    if mode == "share":
        partition = share_partition(ckpt, world)
        reads = [TensorRead.whole(e) for e in partition[rank]]
    warm_probe(ckpt)
    _barrier(device)
    start = time.perf_counter()
    if mode == "slice":
        rr = load_rank(ckpt, rank, world, datapath=datapath, device=device, threads=threads, io_size=io_size,
                       plan=plan)
        rr.backend, rr.began = backend, rr.clock_start - start
        return rr
    result, origin = _timed_load(ckpt, reads, datapath, device, threads, io_size, None)
    comm = time.perf_counter()
    tensors = exchange(ckpt, partition, dict(result.tensors), vocab, device)
    _sync(device)
    end = time.perf_counter()
    result.tensors = {}
    return RankResult(rank, world, "share", strided, vocab, tensors, result, plan.owned_nbytes,
                      sum(r.nbytes for r in reads), end - origin, comm_seconds=end - comm,
                      began=origin - start, backend=backend, clock_start=origin, clock_end=end)


def session(source, modes: Sequence[str] = ("slice",), repeats: int = 1, cache: str = "as-is",
            save_dir: str | Path | None = None, **options) -> list[dict] | None:
    """Run `modes` × `repeats` on an initialized process group; rank 0 gets every record, others None.

    Before each run, local rank 0 prepares the page cache ('cold' evicts, 'warm' reads).
    Rank records carry `repeat`; after each run's rank records comes its run record
    (`"kind": "run"`). With `save_dir`, each rank saves its tensors of the last repeat of
    each mode there, as `<mode>-rank<r>.pt` (to check them against the full tensors).
    """
    dist = _dist()
    rank = dist.get_rank()
    ckpt, _ = _rank_source(source, rank, dist.get_world_size(), options.get("strided", DEFAULT_STRIDED),
                           options.get("vocab", "split"))
    preshard = not isinstance(source, Checkpoint) and is_preshard(source)
    files = ([f for r in range(dist.get_world_size()) for f in open_set(source).files(r)] if preshard
             else [f.path for f in ckpt.files])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = rank_device(options.get("device"), local_rank)
    options["device"] = device
    out: list[dict] = []
    warm_probe(ckpt)
    for repeat in range(repeats):
        for mode in modes:
            rr = None  # drop the last run's tensors before the next run allocates its own
            if local_rank == 0:
                prepare_cache(files, cache)
            _barrier(device)
            rr = run_rank(source if preshard else ckpt, mode, **options)
            record = {**rr.record(), "repeat": repeat, "cache_asked": cache, "kind": "rank"}
            gathered = [None] * dist.get_world_size() if rank == 0 else None
            dist.gather_object(record, gathered, dst=0)
            if rank == 0:
                out += gathered
                out.append({**run_record(gathered), "repeat": repeat, "cache_asked": cache, "kind": "run"})
            if save_dir is not None and repeat == repeats - 1:
                torch.save({k: v.cpu() for k, v in rr.tensors.items()}, Path(save_dir) / f"{mode}-rank{rank}.pt")
    return out if rank == 0 else None


def rank_device(device: str | torch.device | None, local_rank: int) -> torch.device:
    """The device of a local rank: its own GPU (local rank mod the visible GPUs) unless one is named.

    None or "cuda" without an index spread the ranks over the visible GPUs; "cuda:N" and
    "cpu" are taken as given.
    """
    if device is None and not torch.cuda.is_available():
        return torch.device("cpu")
    if device is None or str(device) == "cuda":
        if not torch.cuda.is_available():
            raise DatapathUnavailable("cuda asked for, but there is no CUDA GPU here")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return resolve_device(device)


def _init(backend: str | None, init_method: str | None = None, rank: int | None = None,
          world: int | None = None, timeout_s: float = 600, device: str | torch.device | None = None) -> torch.device:
    """Init the process group (env:// under torchrun); the device this rank loads onto.

    On GPUs: NCCL, one GPU per local rank, and NCCL's communicator built now for that
    device (`device_id`), not lazily inside the first timed collective.
    """
    dist = _dist()
    local_rank = int(os.environ.get("LOCAL_RANK", rank or 0))
    cuda = torch.cuda.is_available()
    backend = backend or ("nccl" if cuda else "gloo")
    if backend == "nccl" and not cuda:
        raise DatapathUnavailable("the nccl backend needs CUDA GPUs; there are none here (use gloo)")
    device = rank_device(device if device is not None else (None if backend == "nccl" else "cpu"), local_rank)
    kwargs = {"timeout": timedelta(seconds=timeout_s)}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        if backend == "nccl":
            kwargs["device_id"] = device
    if init_method is not None:
        kwargs.update(init_method=init_method, rank=rank, world_size=world)
    dist.init_process_group(backend, **kwargs)
    return device


def _local_worker(rank: int, world: int, init_method: str, source: str, session_kwargs: dict,
                  out_file: str) -> None:
    os.environ["LOCAL_RANK"] = str(rank)
    dist = _dist()
    try:
        device = _init(session_kwargs.pop("backend", None), init_method, rank, world, timeout_s=300,
                       device=session_kwargs.get("device"))
        session_kwargs["device"] = device
        records = session(source, **session_kwargs)
        if rank == 0:
            Path(out_file).write_text(json.dumps(records))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run_local(source, world: int, *, modes: Sequence[str] = ("slice",), repeats: int = 1, cache: str = "as-is",
              backend: str | None = None, save_dir: str | Path | None = None, start_method: str | None = None,
              **options) -> list[dict]:
    """`world` local processes over 127.0.0.1 (torch.multiprocessing), as torchrun would start them.

    Returns rank 0's records (`session`). Options go to `run_rank` (datapath, threads,
    io_size, strided, vocab, device). `backend` defaults to NCCL where there are GPUs (one
    GPU per rank; `device="cuda"` spreads the ranks the same way), gloo without them: on
    CPU the ranks are simulated, host destinations over gloo.
    `start_method` defaults to 'forkserver' on Linux (torch is imported once, in the
    server, before any thread or CUDA context exists; each rank is a fork of it), else
    'spawn' (every rank imports torch itself).
    """
    import torch.multiprocessing as mp

    if not isinstance(world, int) or world < 1:
        raise ValueError(f"world must be a positive integer, got {world!r}")
    if not isinstance(source, Checkpoint) and is_preshard(source):  # refuse here, not inside every rank
        open_set(source).check_world(world)
        if "share" in modes:
            raise ValueError(f"{source}: a pre-sharded set is read in 'slice' mode only (each rank reads its own "
                             "files); there is nothing to share")
    if (backend or ("nccl" if torch.cuda.is_available() else "gloo")) == "nccl":
        count = torch.cuda.device_count()
        if world > count:
            raise DatapathUnavailable(f"{world} NCCL ranks need {world} GPUs, this machine has {count} "
                                      "(NCCL refuses two ranks on one GPU; use backend='gloo' or fewer ranks)")
    if start_method is None:
        start_method = "forkserver" if sys.platform.startswith("linux") else "spawn"
    if start_method == "forkserver":
        import multiprocessing.forkserver as forkserver

        forkserver.set_forkserver_preload([__name__])
    source = str(source.root if isinstance(source, Checkpoint) else source)
    kwargs = {"modes": tuple(modes), "repeats": repeats, "cache": cache, "save_dir": save_dir,
              "backend": backend, **options}
    with tempfile.TemporaryDirectory(prefix="gdslab-dist-") as tmp:
        out = Path(tmp) / "records.json"
        init = f"tcp://127.0.0.1:{free_port()}"
        mp.start_processes(_local_worker, args=(world, init, source, kwargs, str(out)), nprocs=world,
                           join=True, start_method=start_method)
        return json.loads(out.read_text())


# --- torchrun entry point ------------------------------------------------------------------------


def format_records(records: Sequence[dict]) -> str:
    """A table of the run records (and the slowest/fastest rank) for the terminal."""
    lines = [f"{'mode':6} {'rep':>3} {'world':>5} {'cache':8} {'GB':>8} {'read GB':>8} {'s':>8} {'GB/s':>7} "
             f"{'comm s':>7}  ran"]
    for r in records:
        if r.get("kind") != "run":
            continue
        lines.append(f"{r['mode']:6} {r['repeat']:>3} {r['world']:>5} {r['cache']:8} {r['nbytes'] / 1e9:8.3f} "
                     f"{r['read_nbytes'] / 1e9:8.3f} {r['seconds']:8.3f} {r['gbps']:7.2f} {r['comm_seconds']:7.3f}"
                     f"  {r['effective']} on {r['device']} via {r['backend']}")
    if any(r.get("simulated") for r in records):
        lines.append(f"({SIMULATED}: host destinations, ranks share this machine's cores and page cache)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gdslab.dist",
        description="Each rank loads its tensor-parallel slice; run under "
                    "`torchrun --nproc-per-node N -m gdslab.dist CHECKPOINT` (NCCL on GPUs, gloo on CPU).")
    p.add_argument("checkpoint")
    p.add_argument("--modes", default=None, help="comma list of: " + ", ".join(MODES)
                   + " (default: slice,share; slice for a pre-sharded set)")
    p.add_argument("--datapath", default=None, help="default: host-direct on CPU, gds or pinned-bounce on GPU")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--io-size", default="16MiB")
    p.add_argument("--strided", default=DEFAULT_STRIDED, choices=STRIDED_MODES)
    p.add_argument("--vocab", default="split", choices=VOCAB_POLICIES)
    p.add_argument("--cache", default="as-is", choices=CACHE_CHOICES)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--backend", default=None, choices=("gloo", "nccl"), help="default: nccl with GPUs, else gloo")
    p.add_argument("--json", default=None, help="rank 0 writes every record here")
    p.add_argument("--save-dir", default=None, help="each rank saves its tensors here (<mode>-rank<r>.pt)")
    return p


def cmd_dist_load(args) -> int:
    """`gdslab dist-load`: one node, one worker per device (threads); prints each run, saves records."""
    devices = [d.strip() for d in args.devices.split(",")] if args.devices else None
    records = []
    for repeat in range(args.repeats):
        result = load_sharded(args.checkpoint, args.world, devices, args.datapath, args.threads, args.io_size,
                              strided=args.strided, vocab=args.vocab, cache=args.cache)
        print(result, flush=True)
        records += [{**r, "repeat": repeat, "kind": "rank"} for r in result.records()]
        records.append({**result.record(), "repeat": repeat, "kind": "run"})
        del result
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    return 0


def add_subcommand(sub) -> None:
    """Register `gdslab dist-load` on the CLI's subparsers."""
    p = sub.add_parser("dist-load", help="sharded load: every rank's tensor-parallel slice at once, one worker "
                                         "per device (many nodes: torchrun -m gdslab.dist)")
    p.add_argument("checkpoint")
    p.add_argument("--world", type=int, default=None, help="ranks (default: one per GPU)")
    p.add_argument("--devices", default=None, help="comma list, e.g. cuda:0,cuda:1 (default: GPUs, else cpu × world)")
    p.add_argument("--datapath", default=None, help="default: host-direct on CPU, gds or pinned-bounce on GPU")
    p.add_argument("--threads", type=int, default=4, help="reader threads per rank")
    p.add_argument("--io-size", default="16MiB")
    p.add_argument("--strided", default=DEFAULT_STRIDED, choices=STRIDED_MODES)
    p.add_argument("--vocab", default="split", choices=VOCAB_POLICIES)
    p.add_argument("--cache", default="as-is", choices=CACHE_CHOICES)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", default=None, help="write every rank and run record here")
    p.set_defaults(func=cmd_dist_load)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    default = "slice" if is_preshard(args.checkpoint) else "slice,share"
    modes = [m.strip() for m in (args.modes or default).split(",") if m.strip()]
    dist = _dist()
    try:
        device = _init(args.backend)
        records = session(args.checkpoint, modes=modes, repeats=args.repeats, cache=args.cache,
                          save_dir=args.save_dir, device=device, datapath=args.datapath, threads=args.threads,
                          io_size=args.io_size, strided=args.strided, vocab=args.vocab)
        if records is not None:
            print(format_records(records), flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(records, indent=1))
        return 0
    except GdslabError as e:
        print(f"gdslab.dist rank {os.environ.get('RANK', '?')}: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


__all__ = [
    "SIMULATED", "MODES", "RankResult", "ShardedResult", "load_rank", "load_sharded", "run_rank", "exchange",
    "session", "run_local", "run_record", "default_datapath", "prepare_cache", "format_records", "main",
    "add_subcommand",
]


if __name__ == "__main__":
    sys.exit(main())
