"""gdslab.load by every data path: bit-identical to safetensors.torch.load_file."""

from __future__ import annotations

import os
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file

import gdslab
from gdslab import datapaths
from gdslab.errors import DatapathUnavailable, LoadCancelled, LoadError
from gdslab.profile import EventLog

CPU_PATHS = [i.name for i in datapaths.available("cpu") if i.available]
HAS_CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine (torch.cuda.is_available() is False)")


def mixed_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    dtypes = [torch.bfloat16, torch.float16, torch.float32, torch.float64, torch.float8_e4m3fn,
              torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool]
    out = {f"w{k}": (torch.randn(123, 77 + k, generator=g) * 30).to(dtype) for k, dtype in enumerate(dtypes)}
    out["big"] = torch.randn(1000, 333, generator=g).to(torch.bfloat16)  # straddles small io sizes
    out["scalar"] = torch.tensor(-7.5)
    out["scalar_int"] = torch.tensor(3, dtype=torch.int64)
    out["empty"] = torch.zeros(0, dtype=torch.float16)
    out["empty2d"] = torch.zeros(4, 0, dtype=torch.bfloat16)
    return out


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    tensors = mixed_tensors()
    names = sorted(tensors)
    for k in range(3):
        save_file({n: tensors[n] for n in names[k::3]}, str(folder / f"part{k}.safetensors"))
    return folder


def reference(folder) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def assert_bit_exact(result, ref):
    assert set(result.tensors) == set(ref)
    for name, tensor in result.tensors.items():
        want = ref[name]
        got = tensor.cpu()
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert got.is_contiguous()
        assert got.reshape(-1).view(torch.uint8).numpy().tobytes() == \
            want.reshape(-1).view(torch.uint8).numpy().tobytes(), name


@pytest.mark.parametrize("datapath", CPU_PATHS)
@pytest.mark.parametrize("io_size,threads", [("16MiB", 4), (4096 + 3, 3), (1000, 1)])
def test_every_cpu_path_is_bit_exact(sharded, datapath, io_size, threads):
    result = gdslab.load(sharded, datapath=datapath, device="cpu", threads=threads, io_size=io_size)
    assert_bit_exact(result, reference(sharded))
    assert result.nbytes == sum(t.nbytes for t in gdslab.Checkpoint.open(sharded).tensors)
    assert result.seconds > 0 and result.gbps > 0
    assert result.effective and result.datapath == datapath
    landed = sum(e.nbytes for e in result.events if e.landed)
    assert landed == result.nbytes
    assert result.record()["cache"] in ("cold", "warm", "partial")


@pytest.mark.parametrize("datapath", CPU_PATHS)
def test_tensors_own_their_memory(sharded, datapath):
    result = gdslab.load(sharded, datapath=datapath, device="cpu", threads=2, io_size=4096)
    pointers = set()
    for name, tensor in result.tensors.items():
        if tensor.numel():
            storage = tensor.untyped_storage()
            assert storage.nbytes() == tensor.numel() * tensor.element_size(), name
            pointers.add(storage.data_ptr())
    assert len(pointers) == sum(1 for t in result.tensors.values() if t.numel())


@pytest.mark.parametrize("datapath", CPU_PATHS)
def test_ten_thousand_tiny_tensors(tmp_path, datapath):
    tensors = {f"t{k}": torch.full((k % 7 + 1,), k, dtype=torch.int16) for k in range(10_000)}
    save_file(tensors, str(tmp_path / "tiny.safetensors"))
    result = gdslab.load(tmp_path / "tiny.safetensors", datapath=datapath, device="cpu", threads=4)
    assert_bit_exact(result, tensors)


@pytest.mark.parametrize("datapath", CPU_PATHS)
def test_synthetic_multishard(tmp_path, datapath):
    folder = gdslab.write_checkpoint(tmp_path / "c", size="3MiB", shards=4, dtype="fp8_e4m3")
    result = gdslab.load(folder, datapath=datapath, device="cpu", threads=3, io_size="64KiB")
    assert_bit_exact(result, reference(folder))


def test_gds_unavailable_here_says_why(sharded):
    info = {i.name: i for i in datapaths.available("cpu")}
    assert not info["gds"].available and "CUDA" in info["gds"].reason
    with pytest.raises(DatapathUnavailable, match="gds cannot run on cpu"):
        gdslab.load(sharded, datapath="gds", device="cpu")


@pytest.mark.skipif(HAS_CUDA, reason="checks the error on a machine without a GPU")
def test_cuda_device_without_gpu_is_a_clear_error(sharded):
    with pytest.raises(DatapathUnavailable, match="no CUDA GPU"):
        gdslab.load(sharded, datapath="pinned-bounce", device="cuda:0")


def test_unknown_path_and_bad_knobs(sharded):
    with pytest.raises(DatapathUnavailable, match="unknown datapath"):
        gdslab.load(sharded, datapath="teleport", device="cpu")
    with pytest.raises(ValueError):
        gdslab.load(sharded, datapath="host-direct", device="cpu", threads=0)
    with pytest.raises(ValueError):
        gdslab.load(sharded, datapath="host-direct", device="cpu", io_size="lots")


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("datapath", CPU_PATHS)
def test_truncated_mid_load_hands_back_nothing(tmp_path, datapath):
    folder = gdslab.write_checkpoint(tmp_path / "c", size="2MiB", shards=2)
    ckpt = gdslab.Checkpoint.open(folder)
    victim = ckpt.files[1].path
    os.truncate(victim, victim.stat().st_size - 1000)  # after planning: the table still promises the bytes
    threads, fds = threading.active_count(), fd_count()
    with pytest.raises(LoadError) as info:
        gdslab.load(ckpt, datapath=datapath, device="cpu", threads=4, io_size="64KiB")
    assert victim.name in str(info.value)
    assert threading.active_count() == threads
    assert fd_count() == fds


@pytest.mark.parametrize("datapath", [p for p in CPU_PATHS if p != "safetensors"])
def test_cancel_stops_the_load(tmp_path, datapath):
    folder = gdslab.write_checkpoint(tmp_path / "c", size="2MiB", shards=2)
    cancel = threading.Event()
    cancel.set()
    threads = threading.active_count()
    with pytest.raises(LoadCancelled):
        gdslab.load(folder, datapath=datapath, device="cpu", threads=4, io_size="4KiB", cancel=cancel)
    assert threading.active_count() == threads


def test_live_log_counts_landed_bytes(tmp_path):
    folder = gdslab.write_checkpoint(tmp_path / "c", size="2MiB", shards=2)
    log = EventLog()
    result = gdslab.load(folder, datapath="host-direct", device="cpu", log=log, io_size="64KiB")
    assert log.landed_bytes == result.nbytes
    stages = {e.stage for e in result.events}
    assert {"alloc", "read"} <= stages


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("datapath", ["pageable-bounce", "pinned-bounce", "gds", "safetensors"])
@pytest.mark.parametrize("io_size", ["16MiB", 4096 + 3])
def test_every_gpu_path_is_bit_exact(sharded, datapath, io_size):
    info = {i.name: i for i in datapaths.available("cuda:0")}
    if not info[datapath].available:
        pytest.skip(f"{datapath}: {info[datapath].reason}")
    result = gdslab.load(sharded, datapath=datapath, device="cuda:0", threads=4, io_size=io_size)
    assert all(t.device.type == "cuda" for t in result.tensors.values())
    assert_bit_exact(result, reference(sharded))


@gpu
@pytest.mark.gpu
def test_gpu_destination_too_large_is_refused(sharded):
    free, _ = torch.cuda.mem_get_info()
    reads = [datapaths.TensorRead("huge", next(sharded.glob("*.safetensors")), "U8", (free + (1 << 30),),
                                  ((0, free + (1 << 30)),))]
    before = torch.cuda.memory_allocated()
    with pytest.raises(LoadError, match="does not fit"):
        gdslab.load(sharded, datapath="pinned-bounce", device="cuda:0", reads=reads)
    assert torch.cuda.memory_allocated() == before


def test_cli_load_prints_what_ran(tmp_path, capsys):
    from gdslab.cli import main

    folder = gdslab.write_checkpoint(tmp_path / "c", size="1MiB", shards=2)
    assert main(["load", str(folder), "--datapath", "host-direct", "--device", "cpu", "--cold"]) == 0
    out = capsys.readouterr().out
    assert "host-direct → cpu" in out and "GB/s" in out and "ran: host-direct" in out
    assert main(["load", str(folder), "--datapath", "gds", "--device", "cpu"]) == 2
    assert "gds cannot run on cpu" in capsys.readouterr().err


def test_headline_table_and_chart(tmp_path, monkeypatch):
    from gdslab.headline import compare_paths

    monkeypatch.setenv("GDSLAB_CHECKPOINTS", str(tmp_path / "ckpt"))
    headline = compare_paths(tmp_path / "demo", size="1MiB", device="cpu", repeats=1, shards=2, progress=False)
    measured = {(row.datapath, row.cache) for row in headline.rows}
    assert ("host-direct", "warm") in measured and ("pageable-bounce", "warm") in measured
    assert "gds" in headline.unavailable
    assert min(row.vs_slowest for row in headline.rows) == pytest.approx(1.0)
    table = headline.table()
    assert "host-direct" in table and "not run here" in table
    assert headline.figure().axes


def test_direct_vs_buffered_varies_only_the_direct_knob(tmp_path, monkeypatch):
    from gdslab.headline import direct_vs_buffered
    from gdslab.synthetic import cached_checkpoint

    monkeypatch.setenv("GDSLAB_CHECKPOINTS", str(tmp_path / "ckpt"))
    folder = cached_checkpoint("2MiB", 2)
    headline = direct_vs_buffered(folder, out=tmp_path / "direct", device="cpu", repeats=1)
    assert {row.options for row in headline.rows} <= {"direct=False", "direct=True"}
    assert {row.datapath for row in headline.rows} == {"host-direct"}
    direct_runs = [r for r in headline.records if r["options"] == "direct=True"]
    # each direct run says whether O_DIRECT really ran: all of it, or a fallback it names
    assert direct_runs and all(r["direct_share"] == 1.0 or r["direct_note"] for r in direct_runs)
    assert "[direct=True]" in headline.table()
    assert headline.figure().axes


def test_a_direct_read_leaves_the_page_cache_as_it_found_it(tmp_path, monkeypatch):
    from conftest import require_eviction
    from gdslab.headline import page_cache_footprint
    from gdslab.synthetic import cached_checkpoint

    monkeypatch.setenv("GDSLAB_CHECKPOINTS", str(tmp_path / "ckpt"))
    folder = cached_checkpoint("4MiB", 2)
    require_eviction(folder)
    buffered, direct = page_cache_footprint(folder, device="cpu")
    assert not buffered.direct and direct.direct
    assert buffered.resident_before < 0.05 and direct.resident_before < 0.05
    assert buffered.resident_after > 0.95  # a buffered read fills the cache: the next run is warm
    if direct.direct_share == 1.0:  # O_DIRECT ran (this file system accepts it)
        assert direct.resident_after < 0.05
