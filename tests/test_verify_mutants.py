"""gdslab.verify where mutmut found it unchecked: the checksum against a hand oracle, and every error.

tests/test_verify.py checks that the checksum is self-consistent (flip a byte, it changes;
chain two pieces, they agree). A sign flip or a wrong position in the formula keeps it
self-consistent, so here the checksum is compared with the formula its module docstring
states, written out in plain Python over the same bytes: little-endian 64-bit words x_i
(the last zero-padded), sum((A*i + B) * x_i) mod 2**64, with A and B the two literals the
module defines. Sizes sit at exact block multiples and one off, with blocks made small.

Also here: the per-device cache of positions and ones (its contract only shows through
the cache itself on a machine with one real device; the `meta` device stands in for a
second one), the bounded number of re-reads (a loop that never ends fails fast instead of
timing out), and each error's type, file and key words.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time

import numpy as np
import pytest
import torch

from gdslab import LoadCancelled, LoadError
from gdslab import verify as verify_module
from gdslab.datapaths.base import TensorRead
from gdslab.verify import checksum, source_checksum, tensor_bytes, verify_tensors

A = 0x5851F42D4C957F2D * 2 % (1 << 64)  # the weights' step, as gdslab/verify.py defines it (even)
B = 0x14057B7EF767814F  # the weight of word 0 (odd)
HAS_CUDA = torch.cuda.is_available()

# mutmut runs a mutant's tests fastest first, by durations from one earlier run; a loop that
# never ends (a mutated block or re-read loop) only fails fast if the two small tests that
# bound it run first. So torch's first-call costs are paid here, at import, not inside them.
_warm = torch.zeros(24, dtype=torch.uint8)
torch.dot(torch.arange(3), _warm[:24].view(torch.int64)).item()
torch.bitwise_left_shift(_warm[:5].to(torch.int64), torch.arange(5, dtype=torch.int64) * 8).sum().reshape(1)
_warm[:5].numpy()


def oracle(data: bytes, first_byte: int = 0) -> int:
    """The documented checksum, word by word in Python integers."""
    padded = bytes(data) + b"\0" * (-len(data) % 8)
    total = 0
    for i in range(len(padded) // 8):
        x = int.from_bytes(padded[8 * i:8 * i + 8], "little")
        total += (A * (first_byte // 8 + i) + B) * x
    return total % (1 << 64)


def some_bytes(n: int, seed: int = 0) -> bytes:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n,), dtype=torch.uint8, generator=g).numpy().tobytes()


def as_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def test_small_blocks_match_the_oracle_fast(monkeypatch):
    """Two 8-byte blocks: every block counted once, from word 0 (runs first: a block loop gone wrong fails here)."""
    monkeypatch.setattr(verify_module, "BLOCK_BYTES", 8)
    data = bytes(range(1, 17))
    assert checksum(as_tensor(data)) == oracle(data)


@pytest.fixture()
def counted_bytes(tmp_path):
    """64 known bytes in a file (written here, in setup, to keep the test's own time tiny)."""
    path = tmp_path / "counted"
    path.write_bytes(bytes(range(7, 71)))
    return path


def test_bounded_rereads(counted_bytes, monkeypatch):
    """Re-reading never asks for more reads than buffer fills plus runs (a stuck loop fails fast)."""
    monkeypatch.setattr(verify_module, "BLOCK_BYTES", 16)
    calls = []
    real = verify_module.pread_into

    def counting(fd, buffer, offset, file):
        calls.append((offset, len(buffer)))
        if len(calls) > 4:  # 21 bytes into a 16-byte buffer: 2 fills, 1 run
            raise AssertionError(f"too many reads: {calls}")
        real(fd, buffer, offset, file)

    monkeypatch.setattr(verify_module, "pread_into", counting)
    read = TensorRead("t", counted_bytes, "U8", (21,), ((3, 21),))
    fd = os.open(counted_bytes, os.O_RDONLY)
    try:
        assert source_checksum(read, fd, torch.empty(16, dtype=torch.uint8)) == oracle(bytes(range(10, 31)))
    finally:
        os.close(fd)
    assert sum(n for _, n in calls) == 21 and len(calls) <= 3


def test_known_answers():
    """Worked by hand: one word 1 at word 0 is B; at word 1 it is A + B; a tail byte is zero-padded."""
    assert checksum(torch.empty(0, dtype=torch.uint8)) == 0
    assert checksum(as_tensor(bytes([1]) + bytes(7))) == B
    assert checksum(as_tensor(bytes(8) + bytes([1]) + bytes(7))) == (A + B) % (1 << 64)
    assert checksum(as_tensor(bytes(8) + bytes([1]))) == (A + B) % (1 << 64)  # 9 bytes: the tail is word 1
    assert checksum(as_tensor(bytes(8) + bytes([0, 1]))) == (A + B) * 256 % (1 << 64)  # tail byte 1 is bits 8..15
    assert checksum(as_tensor(bytes([1]) + bytes(7)), first_byte=16) == (2 * A + B) % (1 << 64)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 15, 63, 64, 65, 127, 128, 129, 200, 203])
@pytest.mark.parametrize("first_byte", [0, 24])
def test_checksum_matches_the_oracle_at_block_edges(monkeypatch, n, first_byte):
    monkeypatch.setattr(verify_module, "BLOCK_BYTES", 64)
    data = some_bytes(n, seed=n)
    assert checksum(as_tensor(data), first_byte) == oracle(data, first_byte)


def test_checksum_matches_the_oracle_at_the_real_block_size():
    """The default block (8 MiB) and one word past it, so two blocks and a tail."""
    n = verify_module.BLOCK_BYTES + 11
    data = as_tensor(some_bytes(n, seed=4))
    words = data[: n // 8 * 8].view(torch.int64)
    # the oracle's sum over whole words, in numpy's wrapping uint64 arithmetic, plus the tail by hand
    x = words.numpy().view(np.uint64)
    i = np.arange(x.size, dtype=np.uint64)
    with np.errstate(over="ignore"):
        body = int(((np.uint64(A) * i + np.uint64(B)) * x).sum(dtype=np.uint64))
    tail = data[n // 8 * 8:].numpy().tobytes()
    expected = (body + oracle(tail, n // 8 * 8)) % (1 << 64)
    assert checksum(data) == expected


def test_checksum_rejects_what_is_not_flat_uint8():
    with pytest.raises(TypeError, match="^checksum wants a flat uint8 tensor$"):
        checksum(torch.zeros(8, dtype=torch.float32))  # flat, wrong dtype
    with pytest.raises(TypeError, match="^checksum wants a flat uint8 tensor$"):
        checksum(torch.zeros(2, 8, dtype=torch.uint8))  # uint8, not flat
    with pytest.raises(ValueError, match="^blocks must start at a multiple of 8 bytes$"):
        checksum(torch.zeros(8, dtype=torch.uint8), first_byte=4)
    assert checksum(torch.zeros(8, dtype=torch.uint8), first_byte=8) == 0


def test_tensor_bytes():
    with pytest.raises(ValueError, match="^verification needs contiguous tensors$"):
        tensor_bytes(torch.zeros(4, 4).t())
    scalar = tensor_bytes(torch.tensor(0x0102, dtype=torch.int16))
    assert scalar.shape == (2,) and scalar.tolist() == [2, 1]


def test_source_checksum_over_runs_with_a_partial_last_block(tmp_path):
    """Runs that fill the buffer twice and leave 5 bytes: every block counted, each at its place."""
    raw = some_bytes(300, seed=5)
    path = tmp_path / "blob"
    path.write_bytes(raw)
    runs = ((3, 21), (100, 9), (200, 7))  # 37 bytes: 16 + 16 + 5
    read = TensorRead("t", path, "U8", (37,), runs)
    fd = os.open(path, os.O_RDONLY)
    try:
        got = source_checksum(read, fd, torch.empty(16, dtype=torch.uint8))
    finally:
        os.close(fd)
    assert got == oracle(b"".join(raw[o:o + n] for o, n in runs))


def test_source_checksum_names_a_truncated_file(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(some_bytes(50))
    read = TensorRead("t", path, "U8", (20,), ((40, 20),))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(LoadError, match="truncated") as caught:
            source_checksum(read, fd, torch.empty(16, dtype=torch.uint8))
    finally:
        os.close(fd)
    assert caught.value.path == path


@pytest.fixture()
def blob(tmp_path):
    raw = some_bytes(100, seed=7)
    path = tmp_path / "blob"
    path.write_bytes(raw)
    return path, raw


def test_constants_are_kept_per_device_reused_and_grown(monkeypatch):
    """One set per device, reused while big enough (a full block never regrows it), grown past that."""
    monkeypatch.setattr(verify_module, "_constants_by_device", {})
    full = verify_module.BLOCK_BYTES // 8
    meta = verify_module._constants(torch.device("meta"), 5)
    assert [t.device.type for t in meta] == ["meta", "meta"]
    assert verify_module._constants(torch.device("meta"), full) is meta
    cpu = verify_module._constants(torch.device("cpu"), 5)
    assert [t.device.type for t in cpu] == ["cpu", "cpu"]
    assert cpu[0].dtype == cpu[1].dtype == torch.int64
    assert cpu[0][:5].tolist() == [0, 1, 2, 3, 4] and cpu[1][:5].tolist() == [1] * 5
    assert verify_module._constants(torch.device("cpu"), 5) is cpu
    grown = verify_module._constants(torch.device("meta"), full + 3)
    assert grown is not meta and grown[0].numel() == grown[1].numel() == full + 3
    assert verify_module._constants(torch.device("meta"), full + 3) is grown


def test_verify_names_the_file_when_cancelled(blob):
    path, raw = blob
    stop = threading.Event()
    stop.set()
    read = TensorRead("t", path, "U8", (10,), ((0, 10),))
    with pytest.raises(LoadCancelled) as caught:
        verify_tensors({"t": as_tensor(raw[:10])}, [read], stop)
    assert caught.value.path == path and caught.value.reason == "cancelled during verification"


def test_verify_names_file_and_tensor_when_missing_or_the_wrong_size(blob):
    path, raw = blob
    read = TensorRead("t", path, "U8", (10,), ((0, 10),))
    with pytest.raises(LoadError) as caught:
        verify_tensors({}, [read])
    assert caught.value.path == path and caught.value.reason == "tensor 't' is missing from the result"
    with pytest.raises(LoadError) as caught:
        verify_tensors({"t": as_tensor(raw[:9])}, [read])
    assert caught.value.path == path and caught.value.reason == "tensor 't': 9 bytes landed, the file holds 10"


def test_verify_checks_one_byte_tensors_and_goes_on_after_empty_ones(blob):
    path, raw = blob
    empty = TensorRead("e", path, "U8", (0,), ((0, 0),))
    one = TensorRead("one", path, "U8", (1,), ((5, 1),))
    good = {"e": torch.empty(0, dtype=torch.uint8), "one": as_tensor(raw[5:6])}
    assert verify_tensors(good, [empty, one]).nbytes == 1
    bad = dict(good, one=as_tensor(bytes([raw[5] ^ 1])))
    with pytest.raises(LoadError, match="verification failed: tensor 'one'"):
        verify_tensors(bad, [one])
    with pytest.raises(LoadError, match="verification failed: tensor 'one'"):
        verify_tensors(bad, [empty, one])


def test_verify_names_a_file_it_cannot_reopen(tmp_path):
    gone = tmp_path / "gone"
    read = TensorRead("t", gone, "U8", (4,), ((0, 4),))
    with pytest.raises(LoadError) as caught:
        verify_tensors({"t": torch.zeros(4, dtype=torch.uint8)}, [read])
    assert caught.value.path == gone
    assert caught.value.reason == "cannot reopen to verify: No such file or directory"


def test_verify_reopens_close_on_exec_and_reports_its_time(blob, monkeypatch):
    path, raw = blob
    flags = []
    real = verify_module.pread_into

    def watching(fd, buffer, offset, file):
        flags.append(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
        real(fd, buffer, offset, file)

    monkeypatch.setattr(verify_module, "pread_into", watching)
    reads = [TensorRead("a", path, "U8", (30,), ((0, 30),)), TensorRead("b", path, "U8", (70,), ((30, 70),))]
    before = time.perf_counter()
    report = verify_tensors({"a": as_tensor(raw[:30]), "b": as_tensor(raw[30:])}, reads)
    after = time.perf_counter()
    assert flags and all(flags)
    assert (report.tensors, report.nbytes) == (2, 100)
    assert isinstance(report.seconds, float) and 0 <= report.seconds <= after - before


gpu = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine (torch.cuda.is_available() is False)")


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("n", [13, 64, 203])
def test_checksum_on_the_gpu_matches_the_oracle(blob, monkeypatch, n):
    """The device branch (multiply + sum, constants on the device) gives the documented value."""
    monkeypatch.setattr(verify_module, "_constants_by_device", {})
    monkeypatch.setattr(verify_module, "BLOCK_BYTES", 64)
    data = some_bytes(n, seed=n)
    assert checksum(as_tensor(data)) == oracle(data)  # fills the CPU entry first
    assert checksum(as_tensor(data).cuda()) == oracle(data)
    positions, ones = verify_module._constants(torch.device("cuda:0"), 8)
    assert positions.device.type == ones.device.type == "cuda"
    path, raw = blob
    read = TensorRead("t", path, "U8", (100,), ((0, 100),))
    assert verify_tensors({"t": as_tensor(raw).cuda()}, [read]).nbytes == 100
