"""What the peer loaders share: is the package importable, and is a tensor its own.

Peers are other people's loaders (Run:ai Model Streamer, fastsafetensors) run under our
protocol. Each must hand back tensors that own their memory, as our paths do: a peer
that returns views into one big buffer of its own is cloned out of it, and the clone is
part of what is timed (it is what a user holding the tensors would have to do).
A peer's own staging buffers are not ours to count: each says so on the load's ledger
(`job.host_memory.cannot_count`), and its record has no counted host overhead.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata

import torch

from ..errors import LoadError
from .base import LoadJob, TensorRead


@functools.lru_cache(maxsize=None)
def package_status(module: str, distribution: str) -> tuple[bool, str]:
    """(importable, why not / version) for an optional peer package; tried once per process."""
    try:
        importlib.import_module(module)
    except ImportError as e:
        return False, f"the {distribution} package is not installed ({e}); pip install {distribution}"
    except Exception as e:  # noqa: BLE001 - a package that breaks on import is unavailable, with its reason
        return False, f"the {distribution} package fails to import: {type(e).__name__}: {e}"
    try:
        return True, importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return True, "unknown version"


def owns_memory(tensor: torch.Tensor) -> bool:
    """True when `tensor` is the whole of its storage (not a view into a larger buffer)."""
    return tensor.storage_offset() == 0 and tensor.untyped_storage().nbytes() == tensor.nbytes


def whole_tensor_reads(job: LoadJob, peer: str) -> dict[str, int]:
    """Name -> read index; peers load whole tensors by name, so slices and duplicates are refused."""
    index: dict[str, int] = {}
    for i, read in enumerate(job.reads):
        if len(read.runs) != 1:
            raise LoadError(read.file, f"{peer} loads whole tensors, not slices ({read.name!r})")
        if read.name in index:
            raise LoadError(read.file, f"{peer} loads tensors by name, and {read.name!r} is asked for twice")
        index[read.name] = i
    return index


def accept(job: LoadJob, read: TensorRead, tensor: torch.Tensor, peer: str) -> torch.Tensor:
    """Check what a peer handed back against the table; clone it if it does not own its memory."""
    if tensor.dtype != read.dtype or tuple(tensor.shape) != tuple(read.shape):
        raise LoadError(
            read.file,
            f"{peer} returned {read.name!r} as {tensor.dtype} {list(tensor.shape)}, "
            f"the header says {read.dtype} {list(read.shape)}",
        )
    if tensor.device != job.device:
        tensor = tensor.to(job.device)
    return tensor if owns_memory(tensor) else tensor.clone()
