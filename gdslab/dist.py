"""Many ranks, many nodes: the same sharded load over `torch.distributed`, one process per rank.

Launched by ``torchrun --nproc-per-node G -m gdslab.dist CHECKPOINT`` on one node, or by
``torchrun --nnodes N --nproc-per-node G --rdzv-backend c10d --rdzv-endpoint HOST:PORT -m
gdslab.dist CHECKPOINT`` on each of N nodes (`torchrun_command` writes that line). NCCL on
GPUs, one GPU per local rank; gloo on CPU. Mode ``slice``: each rank reads its own slice (or,
from a pre-sharded set, its own files and no other). Mode ``share``: each rank reads 1/N of
the checkpoint (whole tensors), then the ranks scatter the slices to their owners (and
broadcast replicated tensors), as fastsafetensors and InstantTensor do.

A node is what torchrun calls a group: its rank is ``GROUP_RANK`` (two "nodes" on one host
are still two nodes). Cold means cold on every node: local rank 0 of each node evicts what
that node's ranks will read, and measures it. Before the data and after it, every rank
all-gathers every rank's status, so one rank's missing file ends every rank with the same
`JobFailed` naming the rank, its node and the file, never a hang; collectives time out after
`timeout_s`. Rank 0 gathers one record per rank, one per node and one per run. `run_local`
launches the same thing as N local processes over 127.0.0.1 (tests, notebooks). One node's
threads-per-device loading is `gdslab.sharded`, re-exported here.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Sequence

import torch

from .cache import resident_fraction_all
from .checkpoint import Checkpoint
from .datapaths.base import TensorRead
from .errors import DatapathUnavailable, GdslabError
from .loader import cache_state, resolve_device
from .policy import knob_arg
from .plan import DEFAULT_STRIDED, RankPlan, STRIDED_MODES, VOCAB_POLICIES, rank_plan, share_partition
from .reshard import is_preshard, open_set, rank_plan_of
from .sharded import (CACHE_CHOICES, SIMULATED, RankResult, ShardedResult, _sync, _timed_load, default_datapath,
                      load_rank, load_sharded, prepare_cache, run_record, warm_probe)

MODES = ("slice", "share")


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


class JobFailed(GdslabError):
    """One or more ranks failed at a stage of the job: raised on every rank alike, naming each failed rank.

    `failures` holds one status per failed rank: its rank, node rank, hostname and error.
    """

    def __init__(self, stage: str, failures: Sequence[dict], world: int):
        self.stage, self.failures, self.world = stage, list(failures), world
        named = "; ".join(f"rank {f['rank']} (node {f['node_rank']}, {f['hostname']}): {f['error']}" for f in failures)
        super().__init__(f"the job failed at '{stage}' on {len(failures)} of {world} rank(s), so every rank "
                         f"stops: {named}")


def node_identity(rank: int) -> dict:
    """Which node this rank runs on: torchrun's group rank (GROUP_RANK), the host, and its local rank there.

    Two torchrun "nodes" on one host share a hostname; the group rank still tells them apart.
    """
    return {"rank": rank, "node_rank": int(os.environ.get("GROUP_RANK", 0)), "hostname": socket.gethostname(),
            "local_rank": int(os.environ.get("LOCAL_RANK", rank)),
            "local_world_size": int(os.environ.get("LOCAL_WORLD_SIZE", 0)) or None}


def _error_text(e: BaseException) -> str:
    return str(e) if isinstance(e, GdslabError) else f"{type(e).__name__}: {e}"


def agree(stage: str, error: BaseException | None = None, payload=None) -> list:
    """Every rank's payload, once every rank has reported on `stage`; `JobFailed` on all if any failed.

    One all-gather of a small status per rank: a rank that failed says so here instead of
    leaving the others waiting in a collective it will never join.
    """
    dist = _dist()
    world = dist.get_world_size()
    status = {**node_identity(dist.get_rank()), "error": None if error is None else _error_text(error),
              "payload": payload}
    gathered: list = [None] * world
    dist.all_gather_object(gathered, status)
    failures = [g for g in gathered if g["error"] is not None]
    if failures:
        raise JobFailed(stage, failures, world)
    return [g["payload"] for g in gathered]


def _rank_source(source, rank: int, world: int, strided: str, vocab: str) -> tuple[Checkpoint, RankPlan]:
    """The checkpoint rank `rank` reads and its plan: its own files of a pre-sharded set, or its slices."""
    if not isinstance(source, Checkpoint) and is_preshard(source):
        pset = open_set(source, ranks=[rank])  # this rank's own files, and no other's
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
    threads: int | str = "auto",
    io_size: int | str = "auto",
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
    datapath = datapath or "auto"  # gdslab.policy's, sharing the node with LOCAL_WORLD_SIZE ranks
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
    try:
        result, origin = _timed_load(ckpt, reads, datapath, device, threads, io_size, None)
    except Exception as e:  # noqa: BLE001 - every rank must hear of it before the exchange
        agree("read", e)
        raise
    agree("read")
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

    First every rank opens what it will read (a pre-sharded set: its own files only) and all
    agree that every rank could. Before each run, local rank 0 of each node prepares the page
    cache of its node's files ('cold' evicts, 'warm' reads) and measures their residency;
    then all agree again (the barrier). After the run all agree a third time, with each
    rank's record. A failure at any stage raises `JobFailed` on every rank. Rank records
    carry `repeat` and their node; after them come one record per node (`"kind": "node"`)
    and the run record (`"kind": "run"`, with `nodes`). With `save_dir`, each rank saves its
    tensors of the last repeat of each mode there, as `<mode>-rank<r>.pt`.
    """
    dist = _dist()
    rank, world = dist.get_rank(), dist.get_world_size()
    me = node_identity(rank)
    device = rank_device(options.get("device"), me["local_rank"])
    options["device"] = device
    preshard = not isinstance(source, Checkpoint) and is_preshard(source)
    error, files = None, []
    try:
        ckpt, _ = _rank_source(source, rank, world, options.get("strided", DEFAULT_STRIDED),
                               options.get("vocab", "split"))
        files = [str(f.path) for f in ckpt.files]
        warm_probe(ckpt)
    except Exception as e:  # noqa: BLE001 - reported to every rank by agree()
        error = e
    everyone = agree("open", error, {**me, "files": files})
    node_files = list(dict.fromkeys(f for o in everyone if o["node_rank"] == me["node_rank"] for f in o["files"]))
    out: list[dict] = []
    for repeat in range(repeats):
        for mode in modes:
            rr = None  # drop the last run's tensors before the next run allocates its own
            error, resident = None, None
            if me["local_rank"] == 0:  # once per node, for every rank of the node
                try:
                    prepare_cache(node_files, cache)
                    resident = resident_fraction_all(node_files)
                except Exception as e:  # noqa: BLE001
                    error = e
            residency = agree("cache", error, resident)
            error, record = None, None
            try:
                rr = run_rank(source if preshard else ckpt, mode, **options)
                record = {**rr.record(), **me, "repeat": repeat, "cache_asked": cache, "kind": "rank",
                          "bytes_by_file": bytes_by_file(rr)}
            except JobFailed:
                raise  # every rank raises it alike: nothing left to agree on
            except Exception as e:  # noqa: BLE001
                error = e
            gathered = agree("load", error, record)
            if rank == 0:
                nodes = node_records(gathered, {o["node_rank"]: r for o, r in zip(everyone, residency)
                                                if r is not None})
                run = {**run_record(gathered), "repeat": repeat, "cache_asked": cache, "kind": "run",
                       "node_count": len(nodes), "nodes": nodes}
                out += gathered + [{**n, "repeat": repeat, "mode": mode, "kind": "node"} for n in nodes] + [run]
            if save_dir is not None and repeat == repeats - 1:
                torch.save({k: v.cpu() for k, v in rr.tensors.items()}, Path(save_dir) / f"{mode}-rank{rank}.pt")
    return out if rank == 0 else None


def bytes_by_file(rr: RankResult) -> dict[str, int]:
    """Bytes the rank's reads took from each file, by file name, from the load's own read events."""
    counts: dict[str, int] = {}
    for e in rr.load.events:
        if e.stage == "read":
            name = Path(e.file).name
            counts[name] = counts.get(name, 0) + e.nbytes
    return counts


def node_records(ranks: Sequence[dict], resident: dict[int, float]) -> list[dict]:
    """One record per node from its ranks' records: bytes, its time to ready (its slowest rank), residency.

    `resident` is each node's page-cache fraction of its files, measured by its local rank 0
    just before the run (after eviction, for a cold run).
    """
    out = []
    for node in sorted({r["node_rank"] for r in ranks}):
        mine = [r for r in ranks if r["node_rank"] == node]
        ready = max(r["began"] + r["seconds"] for r in mine)
        res = resident.get(node)
        out.append({
            "node_rank": node, "hostname": ", ".join(dict.fromkeys(r["hostname"] for r in mine)),
            "ranks": [r["rank"] for r in mine], "nbytes": sum(r["nbytes"] for r in mine),
            "read_nbytes": sum(r["read_nbytes"] for r in mine), "seconds": ready,
            "slowest_rank": max(mine, key=lambda r: r["began"] + r["seconds"])["rank"],
            "resident_before": res, "cache": cache_state(res) if res is not None else "",
        })
    return out


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


def check_local_ranks(local_world: int | None, gpus: int) -> None:
    """More local ranks than visible GPUs ends in NCCL's raw "Duplicate GPU detected": say what to change first."""
    if local_world and local_world > gpus:
        raise DatapathUnavailable(
            f"torchrun started LOCAL_WORLD_SIZE={local_world} ranks on this node, but there are {gpus} GPU(s) visible "
            f"(torch.cuda.device_count()): NCCL needs one GPU per rank. Use --nproc-per-node {gpus}, make more GPUs "
            "visible (CUDA_VISIBLE_DEVICES), or use gloo with --device cpu")


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
    if backend == "nccl":
        check_local_ranks(int(os.environ.get("LOCAL_WORLD_SIZE", 0)) or None, torch.cuda.device_count())
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

DEFAULT_TIMEOUT_S = 300.0  # a collective that waits longer than this for a rank fails the job
DEFAULT_JOIN_TIMEOUT_S = 300  # torchrun's rendezvous: how long the nodes that came wait for one that did not


def torchrun_command(checkpoint: str | Path, nodes: int, nproc_per_node: int, endpoint: str = "$HEAD_NODE:29500",
                     *, run_id: str = "gdslab", join_timeout_s: int = DEFAULT_JOIN_TIMEOUT_S,
                     timeout_s: float = DEFAULT_TIMEOUT_S, args: Sequence[str] = ()) -> str:
    """The torchrun line to run on each of `nodes` nodes (the same line on every node).

    c10d rendezvous at `endpoint` (a host all nodes reach, and a free port), no restarts (a
    failed load is not retried behind your back), `join_timeout_s` for a node that never
    comes, `timeout_s` for a rank that stops answering. A `$VARIABLE` in `endpoint` is left
    for the shell to expand.
    """
    if not isinstance(nodes, int) or nodes < 1 or not isinstance(nproc_per_node, int) or nproc_per_node < 1:
        raise ValueError(f"nodes and nproc_per_node must be positive integers, got {nodes!r} and {nproc_per_node!r}")
    if ":" not in endpoint:
        raise ValueError(f"endpoint must be HOST:PORT, got {endpoint!r}")
    head = ["torchrun", "--nnodes", str(nodes), "--nproc-per-node", str(nproc_per_node), "--rdzv-backend", "c10d"]
    quote = (lambda a: a) if endpoint.startswith("$") else shlex.quote
    words = [quote(endpoint), *map(shlex.quote, ["--rdzv-id", run_id, "--rdzv-conf", f"join_timeout={join_timeout_s}",
                                                 "--max-restarts", "0", "-m", "gdslab.dist", str(checkpoint),
                                                 "--timeout", f"{timeout_s:g}", *args])]
    return " ".join([*head, "--rdzv-endpoint", *words])




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
        for n in r.get("nodes", []) if r.get("node_count", 1) > 1 else []:
            res = "" if n["resident_before"] is None else f", {n['resident_before']:.0%} resident before"
            lines.append(f"  node {n['node_rank']} ({n['hostname']}): ranks {n['ranks']}, {n['read_nbytes'] / 1e9:.3f} "
                         f"GB read, ready in {n['seconds']:.3f} s (slowest: rank {n['slowest_rank']}){res}")
    if any(r.get("simulated") for r in records):
        lines.append(f"({SIMULATED}: host destinations, ranks share this machine's cores and page cache)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gdslab.dist",
        description="Each rank loads its tensor-parallel slice; run under "
                    "`torchrun --nproc-per-node N -m gdslab.dist CHECKPOINT` (NCCL on GPUs, gloo on CPU); "
                    "on many nodes, the line `gdslab dist-load CHECKPOINT --nodes N` prints.")
    p.add_argument("checkpoint")
    p.add_argument("--modes", default=None, help="comma list of: " + ", ".join(MODES)
                   + " (default: slice,share; slice for a pre-sharded set)")
    p.add_argument("--datapath", default="auto", help="default: auto (gdslab.policy: the machine and the cache)")
    p.add_argument("--threads", type=knob_arg, default="auto")
    p.add_argument("--io-size", default="auto")
    p.add_argument("--strided", default=DEFAULT_STRIDED, choices=STRIDED_MODES)
    p.add_argument("--vocab", default="split", choices=VOCAB_POLICIES)
    p.add_argument("--cache", default="as-is", choices=CACHE_CHOICES)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--backend", default=None, choices=("gloo", "nccl"), help="default: nccl with GPUs, else gloo")
    p.add_argument("--json", default=None, help="rank 0 writes every record here")
    p.add_argument("--save-dir", default=None, help="each rank saves its tensors here (<mode>-rank<r>.pt)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help="seconds any collective (and joining the process group) may wait for a rank before the "
                        f"job fails (default {DEFAULT_TIMEOUT_S:g})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    default = "slice" if is_preshard(args.checkpoint) else "slice,share"
    modes = [m.strip() for m in (args.modes or default).split(",") if m.strip()]
    dist = _dist()
    try:
        device = _init(args.backend, timeout_s=args.timeout)
        records = session(args.checkpoint, modes=modes, repeats=args.repeats, cache=args.cache,
                          save_dir=args.save_dir, device=device, datapath=args.datapath, threads=args.threads,
                          io_size=args.io_size, strided=args.strided, vocab=args.vocab)
        if records is not None:
            print(format_records(records), flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(records, indent=1))
        return 0
    except GdslabError as e:
        print(f"gdslab.dist rank {os.environ.get('RANK', '?')} (node {os.environ.get('GROUP_RANK', '0')}, "
              f"{socket.gethostname()}): {e}", file=sys.stderr, flush=True)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


__all__ = [
    "SIMULATED", "MODES", "RankResult", "ShardedResult", "load_rank", "load_sharded", "run_rank", "exchange",
    "session", "run_local", "run_record", "default_datapath", "prepare_cache", "format_records", "main",
    "rank_device", "JobFailed", "agree", "node_identity", "node_records", "bytes_by_file", "torchrun_command",
    "DEFAULT_TIMEOUT_S", "DEFAULT_JOIN_TIMEOUT_S",
]


if __name__ == "__main__":
    sys.exit(main())
