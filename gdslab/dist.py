"""Many nodes: the same sharded load over `torch.distributed`, one process per rank.

Launched by ``torchrun --nproc-per-node N -m gdslab.dist CHECKPOINT`` (NCCL on GPUs, one
GPU per rank; gloo on CPU). Mode ``slice``: each rank reads its own slice (or, from a
pre-sharded set, its own files). Mode ``share``: each rank reads 1/N of the checkpoint
(whole tensors), then the ranks scatter the slices to their owners (and broadcast
replicated tensors), as fastsafetensors and InstantTensor do. Rank 0 gathers one record
per rank and one per run. `run_local` launches the same thing as N local processes over
127.0.0.1 (tests, notebooks). One node's threads-per-device loading is `gdslab.sharded`,
re-exported here.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Sequence

import torch

from .checkpoint import Checkpoint
from .datapaths.base import TensorRead
from .errors import DatapathUnavailable, GdslabError
from .loader import resolve_device
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
    "rank_device",
]


if __name__ == "__main__":
    sys.exit(main())
