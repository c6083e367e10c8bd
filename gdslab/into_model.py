"""`gdslab.load_into(model, checkpoint)`: the checkpoint's bytes straight into a model's own tensors.

`gdslab.load` hands back a dict of fresh tensors; a user then copies them into a model
(`load_state_dict`): a second copy, and fresh memory to fault in first. Here each tensor
is read where it will live:

- a parameter or buffer that already has memory (on the device) is filled in place: the
  data path reads into it as into any destination, and no other memory is taken for it;
- one on `meta` (a model built without memory, `parameters_on_meta()`) is allocated once by
  the loader, filled, and then becomes the parameter itself: no second copy.

Before a byte is read, names, shapes and dtypes are checked against the checkpoint, and one
`CheckpointMismatch` names every mismatch (missing, unexpected, wrong shape, wrong dtype,
meta tensors nothing would fill). Tied tensors (a model whose `lm_head.weight` is its
`embed_tokens.weight`) are one tensor under two names: the checkpoint needs to hold one of
them, and the others are not read again. Non-persistent buffers (rotary frequencies, say)
are not in checkpoints: they keep what the model computed when it was built, moved to the
device when the parameters were on `meta`.

Tensor parallelism: a rank's module holds its slices (`rank`, `world` as in
`gdslab.plan`; row-parallel slices are read row by row, straight into the slice), or the
source is a pre-sharded set (`gdslab.reshard`) whose rank files hold them whole.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Iterator, Mapping

import torch
from torch import nn

from .checkpoint import DTYPES, Checkpoint
from .datapaths.base import TensorRead
from .devices import resolve_device
from .errors import LoadError
from .loader import LoadResult, load
from .plan import rank_plan
from .reshard import is_preshard, open_set

IN_PLACE_PATHS = ("pageable-bounce", "pinned-bounce", "host-direct", "gds")  # the lab's own: they fill destinations
_META = torch.device("meta")


class CheckpointMismatch(LoadError):
    """The checkpoint does not fit the model: every mismatch, named, before anything was read."""

    def __init__(self, path, missing=(), unexpected=(), shape=(), dtype=(), unfilled=(), other=()):
        self.missing, self.unexpected = list(missing), list(unexpected)
        self.shape, self.dtype, self.unfilled, self.other = list(shape), list(dtype), list(unfilled), list(other)
        parts = [(f"missing from the checkpoint ({len(self.missing)})", self.missing),
                 (f"in the checkpoint, not in the model ({len(self.unexpected)})", self.unexpected),
                 (f"wrong shape ({len(self.shape)})", self.shape),
                 (f"wrong dtype ({len(self.dtype)})", self.dtype),
                 (f"on meta with nothing to fill them ({len(self.unfilled)})", self.unfilled),
                 (f"cannot be filled in place ({len(self.other)})", self.other)]
        count = sum(len(items) for _, items in parts)
        lines = [f"the checkpoint does not fit the model: {count} mismatch(es), nothing was read"]
        lines += [f"  {title}: " + "; ".join(items) for title, items in parts if items]
        super().__init__(path, "\n".join(lines))


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Build modules with every parameter on `meta` (no memory, initialisers do nothing) and buffers real.

    Buffers stay real because some are computed at construction and never saved (rotary
    frequencies): a model built on `meta` entirely has nothing to fill them with. Not
    thread-safe: it patches `nn.Module.register_parameter` while the block runs.
    """
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param) -> None:
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = type(param)(param.to(_META), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def _named_tensors(target) -> dict[str, torch.Tensor]:
    """What a checkpoint fills: a module's state dict (persistent tensors, tied ones under each name) or a dict."""
    if isinstance(target, nn.Module):
        return dict(target.state_dict(keep_vars=True))
    if isinstance(target, Mapping):
        bad = [name for name, t in target.items() if not isinstance(t, torch.Tensor)]
        if bad:
            raise TypeError(f"load_into needs tensors; not tensors: {', '.join(map(repr, bad))}")
        return dict(target)
    raise TypeError(f"load_into needs an nn.Module or a dict of tensors, got {type(target).__name__}")


def _source(source, rank: int | None, world: int | None, vocab: str) -> tuple[Checkpoint, list[TensorRead]]:
    """The checkpoint and its reads: whole tensors, a rank's slices, or a pre-sharded rank's files."""
    if not isinstance(source, Checkpoint) and is_preshard(source):
        pset = open_set(source)
        if rank is None:
            raise ValueError(f"{source} is pre-sharded for TP {pset.tp}: say which rank this model is (rank=...)")
        pset.check_world(world)
        ckpt = pset.rank_checkpoint(rank)
        return ckpt, TensorRead.all_of(ckpt.tensors)
    ckpt = source if isinstance(source, Checkpoint) else Checkpoint.open(source)
    if rank is None and world is None:
        return ckpt, TensorRead.all_of(ckpt.tensors)
    if rank is None or world is None:
        raise ValueError("a tensor-parallel load needs both rank and world")
    return ckpt, list(rank_plan(ckpt, rank, world, strided="rows", vocab=vocab).reads)  # rows: straight into the slice


def _device_of(tensors: dict[str, torch.Tensor], device) -> torch.device:
    """The device asked for, else the one the target's memory is on (the default where all of it is on meta)."""
    if device is not None:
        return resolve_device(device)
    real = {t.device for t in tensors.values() if t.device.type != "meta"}
    if len(real) > 1:
        raise ValueError(f"the target's tensors are on {', '.join(sorted(map(str, real)))}: pass device=...")
    return resolve_device(real.pop() if real else None)


def _plan(names: dict[str, torch.Tensor], reads: list[TensorRead], device: torch.device, strict: bool,
          root: Path) -> tuple[list[TensorRead], list[torch.Tensor | None], list[str], dict[str, list[str]]]:
    """Match reads to the target's tensors; raise one `CheckpointMismatch` naming every mismatch.

    Returns the reads to do, a destination per read (None: on meta, the loader allocates),
    the names of the target's tensors each read fills (aliases of tied tensors included),
    and which checkpoint names were skipped as a second copy of a tied tensor.
    """
    aliases: dict[int, list[str]] = {}
    for name, tensor in names.items():
        aliases.setdefault(id(tensor), []).append(name)
    filled: set[int] = set()
    keep, destinations, tied_skipped = [], [], {}
    missing, unexpected, shape, dtype, other = [], [], [], [], []
    for read in reads:
        tensor = names.get(read.name)
        if tensor is None:
            unexpected.append(read.name)
            continue
        key = id(tensor)
        if key in filled:  # a second name of a tied tensor: its bytes are already being read
            tied_skipped.setdefault(aliases[key][0], []).append(read.name)
            continue
        filled.add(key)
        want = DTYPES.get(read.dtype_name)
        if tuple(tensor.shape) != tuple(read.shape):
            shape.append(f"{read.name}: model {list(tensor.shape)}, checkpoint {list(read.shape)}")
        if want != tensor.dtype:
            dtype.append(f"{read.name}: model {str(tensor.dtype).removeprefix('torch.')}, checkpoint {read.dtype_name}")
        if tensor.device.type != "meta":
            if tensor.device != device:
                other.append(f"{read.name}: on {tensor.device}, the load goes to {device}")
            elif not tensor.is_contiguous():
                other.append(f"{read.name}: not contiguous")
        keep.append(read)
        destinations.append(None if tensor.device.type == "meta" else tensor.detach())
    unfilled = []
    for key, group in aliases.items():
        if key not in filled:
            label = group[0] + (f" (tied: {', '.join(group[1:])})" if len(group) > 1 else "")
            if strict:
                missing.append(label)
            elif names[group[0]].device.type == "meta":  # tolerated as missing, but it would stay without memory
                unfilled.append(label)
    if not strict:
        unexpected = []
    if missing or unexpected or shape or dtype or other or unfilled:
        raise CheckpointMismatch(root, missing, unexpected, shape, dtype, unfilled, other)
    return keep, destinations, [aliases[id(names[r.name])] for r in keep], tied_skipped


def _meta_buffers(module: nn.Module) -> list[str]:
    """Non-persistent buffers on meta: no checkpoint holds them, so nothing could ever fill them."""
    out = []
    for prefix, sub in module.named_modules(remove_duplicate=False):
        for name, buffer in sub._buffers.items():
            if buffer is not None and name in sub._non_persistent_buffers_set and buffer.device.type == "meta":
                out.append(f"{prefix + '.' if prefix else ''}{name}")
    return sorted(set(out))


def _swap(module: nn.Module, new: dict[int, torch.Tensor]) -> None:
    """Put each materialized tensor where its meta placeholder was, in every module that holds it (ties stay tied)."""
    for sub in module.modules():
        for store in (sub._parameters, sub._buffers):
            for name, old in store.items():
                if old is not None and id(old) in new:
                    store[name] = new[id(old)]


def _move_buffers(module: nn.Module, device: torch.device) -> int:
    """Non-persistent buffers built on the host join the weights on `device` (they are small); returns how many."""
    moved = 0
    for sub in module.modules():
        for name in sub._non_persistent_buffers_set:
            buffer = sub._buffers.get(name)
            if buffer is not None and buffer.device != device:
                sub._buffers[name] = buffer.to(device)
                moved += 1
    return moved


def load_into(
    target,
    source,
    datapath: str = "auto",
    device: str | torch.device | None = None,
    threads: int | str = "auto",
    io_size: int | str = "auto",
    *,
    rank: int | None = None,
    world: int | None = None,
    vocab: str = "split",
    strict: bool = True,
    log=None,
    cancel: threading.Event | None = None,
    verify: bool = False,
    measure_costs: bool = True,
    **options,
) -> LoadResult:
    """Read `source` straight into `target` (an `nn.Module` or a dict of tensors) by `datapath`.

    `device` defaults to where the target's memory is (the default device when all of it
    is on `meta`). `rank`/`world` load a tensor-parallel rank's slices; a pre-sharded set
    needs `rank`. `strict=False` tolerates missing and unexpected names (shapes and dtypes
    must still agree). The rest is `gdslab.load`'s ("auto" knobs chosen by `gdslab.policy`),
    and so is the record returned: its
    `tensors` are the target's own. On a failure part-way, tensors filled in place hold
    partial bytes, and ones that were on `meta` stay there.
    """
    if datapath != "auto" and datapath not in IN_PLACE_PATHS:
        raise ValueError(f"{datapath!r} cannot load in place (peers hand back tensors of their own); "
                         f"use one of {', '.join(IN_PLACE_PATHS)}")
    names = _named_tensors(target)
    ckpt, reads = _source(source, rank, world, vocab)
    device = _device_of(names, device)
    buffers = [f"{b} (a non-persistent buffer: build with parameters_on_meta(), which keeps buffers real)"
               for b in (_meta_buffers(target) if isinstance(target, nn.Module) else [])]
    try:
        reads, destinations, owners, tied_skipped = _plan(names, reads, device, strict, Path(ckpt.root))
    except CheckpointMismatch as e:  # one error for everything: the buffers join the rest
        if not buffers:
            raise
        raise CheckpointMismatch(e.path, e.missing, e.unexpected, e.shape, e.dtype, e.unfilled + buffers,
                                 e.other) from None
    if buffers:
        raise CheckpointMismatch(ckpt.root, unfilled=buffers)
    result = load(ckpt, datapath, device, threads, io_size, reads=reads, log=log, cancel=cancel, verify=verify,
                  measure_costs=measure_costs, destinations=destinations, **options)
    landed = result.tensors
    materialized: dict[int, torch.Tensor] = {}
    for read, given, group in zip(reads, destinations, owners):
        tensor = landed[read.name]
        if given is not None:
            if tensor.data_ptr() != given.data_ptr():  # a path that replaced the destination did not load in place
                raise LoadError(ckpt.root, f"{datapath} did not fill {read.name!r} in place")
            continue
        old = names[group[0]]
        new = nn.Parameter(tensor, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else tensor
        materialized[id(old)] = new
        if isinstance(target, nn.Module):
            continue
        for name in group:
            target[name] = new
    moved = 0
    if isinstance(target, nn.Module):
        _swap(target, materialized)
        if materialized:
            moved = _move_buffers(target, device)
        result.tensors = dict(target.state_dict(keep_vars=True))
    else:
        result.tensors = {name: target[name] for name in names}
    result.details.update(in_place=sum(d is not None for d in destinations), materialized=len(materialized),
                          tied_skipped=";".join(f"{k}<-{','.join(v)}" for k, v in tied_skipped.items()),
                          buffers_moved=moved, target_tensors=len(names))
    return result


__all__ = ["CheckpointMismatch", "IN_PLACE_PATHS", "load_into", "parameters_on_meta"]
