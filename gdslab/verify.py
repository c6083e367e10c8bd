"""Verification of a finished load: every tensor checksummed where it landed, against the file.

`load(..., verify=True)` calls `verify_tensors` after the data path ran (its time is not
counted in the load's seconds). Each destination is checksummed with torch ops on its own
device, so GPU tensors are never copied back; the same checksum is computed over the
tensor's source bytes, read again from the file by a plain `pread` that shares nothing
with the data path. A mismatch raises `LoadError` naming the file and the tensor.

The checksum is position-weighted: the bytes, as little-endian 64-bit words x_i (the last
one zero-padded), summed as sum(w_i * x_i) modulo 2**64 (torch's int64 arithmetic wraps)
with odd weights w_i = A*i + B (A even, B odd). Odd weights make any change to a single
word visible; weights that grow with the position make a chunk landing at the wrong place
visible. Being linear, it is two reductions per block, A*sum(i*x_i) + B*sum(x_i), with the
positions i an arange kept per device. It guards against loader bugs and torn reads, not
against an adversary (it is not a cryptographic hash).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .datapaths.base import TensorRead, pread_into
from .errors import LoadCancelled, LoadError

BLOCK_BYTES = 8 << 20  # checksum and re-read granularity: bounds temporary memory on both sides
_STEP = 0x5851F42D4C957F2D * 2 % (1 << 64)  # A: even, so every weight A*i + B is odd
_BASE = 0x14057B7EF767814F  # B for word 0: odd
_MASK = (1 << 64) - 1
_constants_by_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # positions and ones, per device


@dataclass(frozen=True)
class VerifyReport:
    """What a verification covered and what it cost."""

    tensors: int
    nbytes: int
    seconds: float


def checksum(data: torch.Tensor, first_byte: int = 0) -> int:
    """Checksum of a flat uint8 tensor that starts `first_byte` (a multiple of 8) into its stream.

    Chained over consecutive blocks by adding results modulo 2**64, so a tensor checksummed
    in one piece and its source checksummed block by block agree.
    """
    if data.dtype != torch.uint8 or data.dim() != 1:
        raise TypeError("checksum wants a flat uint8 tensor")
    if first_byte % 8:
        raise ValueError("blocks must start at a multiple of 8 bytes")
    total = 0
    whole = data.numel() // 8 * 8
    for start in range(0, whole, BLOCK_BYTES):
        block = data[start:min(whole, start + BLOCK_BYTES)]
        words = _as_words(block)
        total += _weighted_sum(words, (first_byte + start) // 8)
    if whole < data.numel():
        tail = data[whole:].to(torch.int64)
        shifts = torch.arange(tail.numel(), device=data.device, dtype=torch.int64) * 8
        word = torch.bitwise_left_shift(tail, shifts).sum().reshape(1)
        total += _weighted_sum(word, (first_byte + whole) // 8)
    return _wrap(total)


def _as_words(block: torch.Tensor) -> torch.Tensor:
    try:
        return block.view(torch.int64)
    except RuntimeError:  # a view whose start is not 8-byte aligned in its storage
        return block.clone().view(torch.int64)


def _weighted_sum(words: torch.Tensor, first_word: int) -> int:
    """sum((A*(first_word + j) + B) * words[j]) mod 2**64, as A*sum(j*x_j) + (A*first_word + B)*sum(x_j)."""
    n = words.numel()
    positions, ones = _constants(words.device, n)
    if words.device.type == "cpu":  # int64 dot products: one pass each, no temporary (CUDA has no int dot)
        by_position, plain = torch.dot(positions[:n], words).item(), torch.dot(ones[:n], words).item()
    else:
        by_position, plain = torch.mul(positions[:n], words).sum().item(), words.sum().item()
    return _wrap(_STEP * int(by_position) + (_STEP * first_word + _BASE) * int(plain))


def _constants(device: torch.device, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions 0..n-1 and a vector of ones, kept per device and grown as needed."""
    key = str(device)
    cached = _constants_by_device.get(key)
    if cached is None or cached[0].numel() < n:
        size = max(n, BLOCK_BYTES // 8)
        cached = (torch.arange(size, device=device, dtype=torch.int64),
                  torch.ones(size, device=device, dtype=torch.int64))
        _constants_by_device[key] = cached
    return cached


def _wrap(value: int) -> int:
    return value & _MASK


def tensor_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as a flat uint8 view, on its device (contiguous tensors only)."""
    if not tensor.is_contiguous():
        raise ValueError("verification needs contiguous tensors")
    flat = tensor.reshape(-1) if tensor.dim() else tensor.reshape(1)
    return flat.view(torch.uint8)


def source_checksum(read: TensorRead, fd: int, buffer: torch.Tensor) -> int:
    """The checksum of `read`'s bytes in the file, read again block by block into `buffer`."""
    total, filled, stream = 0, 0, 0
    for offset, nbytes in read.runs:
        done = 0
        while done < nbytes:
            n = min(nbytes - done, buffer.numel() - filled)
            pread_into(fd, buffer[filled:filled + n].numpy(), offset + done, read.file)
            filled, done = filled + n, done + n
            if filled == buffer.numel():
                total += checksum(buffer, stream)
                stream, filled = stream + filled, 0
    if filled:
        total += checksum(buffer[:filled], stream)
    return _wrap(total)


def verify_tensors(
    tensors: dict[str, torch.Tensor], reads: list[TensorRead], cancel=None
) -> VerifyReport:
    """Check every read's tensor against its file; `LoadError` naming file and tensor on a mismatch."""
    started = time.perf_counter()
    buffer = torch.empty(BLOCK_BYTES, dtype=torch.uint8)
    fds: dict[Path, int] = {}
    try:
        for read in reads:
            if cancel is not None and cancel.is_set():
                raise LoadCancelled(read.file, "cancelled during verification")
            tensor = tensors.get(read.name)
            if tensor is None:
                raise LoadError(read.file, f"tensor {read.name!r} is missing from the result")
            landed = tensor_bytes(tensor)
            if landed.numel() != read.nbytes:
                raise LoadError(
                    read.file, f"tensor {read.name!r}: {landed.numel()} bytes landed, the file holds {read.nbytes}"
                )
            if read.nbytes == 0:
                continue
            if read.file not in fds:
                try:
                    fds[read.file] = os.open(read.file, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                except OSError as e:
                    raise LoadError(read.file, f"cannot reopen to verify: {e.strerror or e}") from None
            expected = source_checksum(read, fds[read.file], buffer)
            got = checksum(landed)
            if got != expected:
                raise LoadError(
                    read.file,
                    f"verification failed: tensor {read.name!r} on {tensor.device} has checksum {got:016x}, "
                    f"its bytes in the file {expected:016x}",
                )
    finally:
        for fd in fds.values():
            os.close(fd)
    return VerifyReport(len(reads), sum(r.nbytes for r in reads), time.perf_counter() - started)


__all__ = ["VerifyReport", "checksum", "source_checksum", "tensor_bytes", "verify_tensors"]
