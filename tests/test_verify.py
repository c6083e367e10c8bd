"""`load(..., verify=True)`: checksums where the tensors landed, against the file's bytes."""

from __future__ import annotations

import os
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file

from gdslab import Checkpoint, LoadCancelled, LoadError, datapaths
from gdslab import verify as verify_module
from gdslab.datapaths import direct_io  # host-direct reads through it
from gdslab.datapaths.base import TensorRead
from gdslab.loader import load
from gdslab.verify import checksum, tensor_bytes, verify_tensors

CPU_PATHS = [info.name for info in datapaths.available("cpu") if info.available]


def random_bytes(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n,), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture()
def checkpoint(tmp_path):
    g = torch.Generator().manual_seed(3)
    tensors = {
        "w": torch.randn(61, 33, generator=g).to(torch.bfloat16),
        "b": torch.randn(1001, generator=g),
        "i": torch.randint(-5, 5, (13,), generator=g, dtype=torch.int8),
        "s": torch.tensor(7, dtype=torch.int64),
        "e": torch.zeros(0, 4),
    }
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 64, 1000, 4099])
def test_checksum_sees_every_byte_and_every_position(n):
    data = random_bytes(n, seed=n)
    base = checksum(data)
    assert checksum(data.clone()) == base
    for at in sorted({0, n // 2, n - 1}) if n else []:
        flipped = data.clone()
        flipped[at] ^= 0x10
        assert checksum(flipped) != base, at
    for at in range(7, n - n % 8, 8):  # the top bit of every whole word: odd weights see it too
        top = data.clone()
        top[at] ^= 0x80
        assert checksum(top) != base, at
    if n >= 16:  # two 8-byte words swapped: same bytes, wrong places
        swapped = data.clone()
        swapped[:8], swapped[8:16] = data[8:16].clone(), data[:8].clone()
        if not torch.equal(swapped, data):
            assert checksum(swapped) != base


def test_dot_and_multiply_sum_agree():
    """The CPU dot product and the device-side multiply+sum give the same wrapped sums."""
    words = random_bytes(8 * 4099, seed=9).view(torch.int64)
    positions = torch.arange(words.numel(), dtype=torch.int64)
    assert torch.dot(positions, words).item() == torch.mul(positions, words).sum().item()
    assert torch.dot(torch.ones_like(words), words).item() == words.sum().item()


def test_checksum_chains_over_blocks_and_unaligned_views(monkeypatch):
    data = random_bytes(5000, seed=1)
    whole = checksum(data)
    assert (checksum(data[:4000]) + checksum(data[4000:], 4000)) % (1 << 64) == whole
    monkeypatch.setattr(verify_module, "BLOCK_BYTES", 64)
    assert checksum(data) == whole  # blockwise inside too
    backing = random_bytes(5003, seed=1)
    backing[3:] = data
    assert checksum(backing[3:]) == whole  # a view that starts mid-word in its storage


@pytest.mark.parametrize("datapath", CPU_PATHS)
def test_verify_passes_on_every_path(checkpoint, datapath):
    result = load(checkpoint, datapath, "cpu", threads=3, io_size=100, verify=True)
    reference = load_file(str(checkpoint))
    for name, ref in reference.items():
        assert torch.equal(tensor_bytes(result.tensors[name]), tensor_bytes(ref)), name


def test_verify_catches_a_corrupted_read(checkpoint, monkeypatch):
    """A reader that flips one bit: silent without verify, LoadError naming file and tensor with it."""
    real = direct_io.pread_into

    def corrupting(fd, buffer, offset, path):
        real(fd, buffer, offset, path)
        if offset <= Checkpoint.open(checkpoint)["b"].offset + 17 < offset + len(buffer):
            view = memoryview(buffer).cast("B")
            view[Checkpoint.open(checkpoint)["b"].offset + 17 - offset] ^= 0x01

    monkeypatch.setattr(direct_io, "pread_into", corrupting)
    quiet = load(checkpoint, "host-direct", "cpu", threads=2, io_size=256)
    assert not torch.equal(tensor_bytes(quiet.tensors["b"]), tensor_bytes(load_file(str(checkpoint))["b"]))
    with pytest.raises(LoadError) as caught:
        load(checkpoint, "host-direct", "cpu", threads=2, io_size=256, verify=True)
    assert caught.value.path == checkpoint and "'b'" in str(caught.value) and "verification failed" in str(caught.value)


def test_verify_slices_across_blocks(tmp_path, monkeypatch):
    """A read of several runs (a tensor-parallel slice) checks against exactly those bytes."""
    monkeypatch.setattr(verify_module, "BLOCK_BYTES", 16)
    raw = random_bytes(300, seed=5)
    path = tmp_path / "blob"
    path.write_bytes(raw.numpy().tobytes())
    runs = ((3, 21), (100, 9), (200, 50))
    landed = torch.cat([raw[o:o + n] for o, n in runs])
    read = TensorRead("slice", path, "U8", (landed.numel(),), runs)
    assert verify_tensors({"slice": landed}, [read]).nbytes == 80
    landed[30] ^= 1
    with pytest.raises(LoadError, match="'slice'"):
        verify_tensors({"slice": landed}, [read])
    with pytest.raises(LoadError, match="bytes landed"):
        verify_tensors({"slice": landed[:-1]}, [read])


def test_verify_honours_cancel_and_closes_files(checkpoint):
    ckpt = Checkpoint.open(checkpoint)
    reads = [TensorRead.whole(e) for e in ckpt.tensors]
    tensors = load(checkpoint, "host-direct", "cpu").tensors
    fds = len(os.listdir("/proc/self/fd"))
    stop = threading.Event()
    stop.set()
    with pytest.raises(LoadCancelled):
        verify_tensors(tensors, reads, stop)
    report = verify_tensors(tensors, reads)
    assert report.tensors == len(reads) and report.nbytes == ckpt.nbytes
    assert len(os.listdir("/proc/self/fd")) == fds
