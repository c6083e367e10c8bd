"""O_DIRECT reads (`direct=True`): bit-exact for every alignment case, the page cache bypassed, refusals honest."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_faults import LeakCheck, wrap_preadv

import gdslab
from gdslab.cache import evict_all, resident_fraction_all
from gdslab.errors import LoadError

DIRECT_PATHS = ["host-direct", "pageable-bounce", "pinned-bounce"]


def odd_tensors() -> dict[str, torch.Tensor]:
    """Offsets and sizes that are not multiples of 4 KiB, tensors smaller than a block, zero-size ones."""
    g = torch.Generator().manual_seed(21)
    out = {f"w{k:02d}": (torch.randn(37 + 13 * k, 29 + k, generator=g) * 10).to(torch.bfloat16) for k in range(9)}
    out["tiny"] = torch.tensor([1.5, -2.0, 3.25], dtype=torch.float32)  # 12 bytes: inside one block
    out["scalar"] = torch.tensor(7, dtype=torch.int64)
    out["empty"] = torch.zeros(0, dtype=torch.float16)
    out["big"] = torch.randn(3001, 257, generator=g).to(torch.float16)  # straddles many blocks and io sizes
    out["last"] = torch.arange(1001, dtype=torch.int16)  # the file's last block is partial
    return out


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    folder = tmp_path_factory.mktemp("odd")
    tensors = odd_tensors()
    names = sorted(tensors)
    for k in range(2):
        save_file({n: tensors[n] for n in names[k::2]}, str(folder / f"part{k}.safetensors"))
    for f in folder.glob("*.safetensors"):
        assert f.stat().st_size % 4096  # the last block of each file lies past its end
    return folder, tensors


def exact(result, tensors) -> bool:
    return set(result.tensors) == set(tensors) and all(
        result.tensors[n].dtype == t.dtype and result.tensors[n].shape == t.shape
        and torch.equal(result.tensors[n].reshape(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8))
        for n, t in tensors.items())


@pytest.mark.parametrize("datapath", DIRECT_PATHS)
@pytest.mark.parametrize("io_size", [4096 - 5, 4096 + 3, 65536, "16MiB"])
def test_direct_reads_are_bit_exact_for_every_alignment(odd, datapath, io_size):
    folder, tensors = odd
    files = list(folder.glob("*.safetensors"))
    evict_all(files)
    result = gdslab.load(folder, datapath, "cpu", threads=3, io_size=io_size, direct=True)
    assert exact(result, tensors)
    record = result.record()
    assert record["direct"] is True and record["direct_share"] == pytest.approx(1.0)
    assert "O_DIRECT 100% of bytes" in result.effective


def test_direct_reads_leave_the_page_cache_cold(tmp_path):
    folder = gdslab.write_checkpoint(tmp_path / "c", size="8MiB", shards=2, seed=2)
    files = list(folder.glob("*.safetensors"))
    evict_all(files)
    gdslab.load(folder, "host-direct", "cpu", threads=2, io_size="1MiB", direct=True)
    assert resident_fraction_all(files) < 0.05  # only headers went through the cache
    gdslab.load(folder, "host-direct", "cpu", threads=2, io_size="1MiB")
    assert resident_fraction_all(files) > 0.95  # a buffered load fills it


def _refuse_direct_open(monkeypatch):
    real = os.open

    def open_(path, flags, *rest):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(path, flags, *rest)

    monkeypatch.setattr(os, "open", open_)


def test_a_file_system_refusing_o_direct_at_open_gets_buffered_reads_said_so(odd, monkeypatch):
    folder, tensors = odd
    _refuse_direct_open(monkeypatch)
    result = gdslab.load(folder, "host-direct", "cpu", threads=2, io_size="64KiB", direct=True)
    assert exact(result, tensors)
    assert "O_DIRECT refused when opening" in result.effective and "buffered reads" in result.effective
    assert result.record()["direct_share"] == 0.0


def test_a_file_system_refusing_o_direct_at_the_first_read_gets_buffered_reads_said_so(odd, monkeypatch):
    folder, tensors = odd
    real = os.preadv

    def preadv(fd, buffers, offset, *rest):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, buffers, offset, *rest)

    monkeypatch.setattr(os, "preadv", preadv)
    for datapath in DIRECT_PATHS:
        result = gdslab.load(folder, datapath, "cpu", threads=2, io_size="64KiB", direct=True)
        assert exact(result, tensors), datapath
        assert "refused at the first read" in result.effective and result.record()["direct_share"] == 0.0


def test_a_tmpfs_file_says_what_ran(odd):
    folder, tensors = odd
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm here")
    shm = Path(tempfile.mkdtemp(dir="/dev/shm")) / "c"
    try:
        shutil.copytree(folder, shm)
        result = gdslab.load(shm, "host-direct", "cpu", threads=2, io_size="64KiB", direct=True)
        assert exact(result, tensors)
        share = result.record()["direct_share"]
        # Recent kernels accept O_DIRECT on tmpfs, older ones refuse it at open: either way, said so.
        assert ("O_DIRECT 100%" in result.effective) == (share == 1.0)
        assert ("refused" in result.effective) == (share == 0.0)
    finally:
        shutil.rmtree(shm.parent)


@pytest.mark.parametrize("datapath", DIRECT_PATHS)
def test_a_fault_mid_load_with_direct_leaves_nothing_behind(odd, datapath, monkeypatch):
    folder, _ = odd
    victim = sorted(folder.glob("*.safetensors"))[1]

    def failing(fd, buffers, offset, real):
        raise OSError(errno.EIO, "Input/output error")

    wrap_preadv(monkeypatch, victim, failing, after=2)
    check = LeakCheck(monkeypatch)
    with pytest.raises(LoadError, match=victim.name):
        gdslab.load(folder, datapath, "cpu", threads=3, io_size=4096 + 3, direct=True)
    check.assert_clean()


def test_direct_destinations_agree_with_their_file_offsets(odd):
    folder, _ = odd
    result = gdslab.load(folder, "host-direct", "cpu", threads=2, io_size="1MiB", direct=True)
    ckpt = gdslab.Checkpoint.open(folder)
    for entry in ckpt.tensors:
        tensor = result.tensors[entry.name]
        if entry.nbytes and entry.offset % tensor.element_size() == 0:
            assert (tensor.data_ptr() - entry.offset) % 4096 == 0, entry.name
    assert load_file  # the reference reader stays importable here
