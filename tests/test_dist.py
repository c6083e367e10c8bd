"""Sharded loading: one worker per device (threads) and real torch.distributed ranks over gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import require_eviction
import torch
from safetensors.torch import load_file

from gdslab import dist as gdist
from gdslab.checkpoint import Checkpoint
from gdslab.errors import DatapathUnavailable
from gdslab.errors import LoadCancelled, LoadError
from gdslab.plan import PlanError, rank_plan, split_kind
from gdslab.synthetic import write_checkpoint

HAS_CUDA = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine (torch.cuda.is_available() is False)")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    folder = write_checkpoint(tmp_path_factory.mktemp("llama"), "2MiB", shards=3, seed=7)
    full = {}
    for f in sorted(folder.glob("*.safetensors")):
        # copies: tensors that still map the files would pin their pages and defeat eviction
        full.update({name: t.clone() for name, t in load_file(str(f)).items()})
    return folder, full


def assert_rank_exact(tensors: dict, full: dict, ckpt: Checkpoint, rank: int, world: int) -> None:
    assert list(tensors) == [e.name for e in ckpt.tensors]
    for e in ckpt.tensors:
        _, dim = split_kind(e.name, len(e.shape))
        want = full[e.name] if dim is None else torch.chunk(full[e.name], world, dim)[rank]
        got = tensors[e.name].cpu()
        assert got.dtype == want.dtype and got.shape == want.shape, e.name
        assert got.is_contiguous(), e.name
        assert torch.equal(got.view(torch.int16), want.contiguous().view(torch.int16)), (e.name, rank, world)


def no_rank_threads() -> bool:
    return not [t for t in threading.enumerate() if t.name.startswith(("gdslab-rank", "gdslab-direct"))]


@pytest.mark.parametrize("strided", ["rows", "span"])
@pytest.mark.parametrize("world", [1, 2, 4])
def test_load_sharded_threads_bit_exact(llama, world, strided):
    folder, full = llama
    ckpt = Checkpoint.open(folder)
    result = gdist.load_sharded(ckpt, world, threads=2, io_size="256KiB", strided=strided)
    assert result.world == world and result.simulated
    for r in result.ranks:
        assert r.device == "cpu" and r.mode == "slice"
        assert_rank_exact(r.tensors, full, ckpt, r.rank, world)
        assert r.load.tensors == {}  # the finished tensors live in one place only
    # the run's time is the slowest rank's finish on the common clock
    assert result.seconds == pytest.approx(max(r.began + r.seconds for r in result.ranks))
    assert min(r.began for r in result.ranks) == 0.0
    assert result.nbytes == sum(rank_plan(ckpt, k, world).owned_nbytes for k in range(world))
    record = result.record()
    assert record["world"] == world and record["note"] == gdist.SIMULATED and record["simulated"] is True
    assert record["gbps"] == pytest.approx(result.nbytes / result.seconds / 1e9)
    assert record["slowest_rank"] == result.slowest.rank
    assert len(result.records()) == world and all(r["note"] == gdist.SIMULATED for r in result.records())
    curves = result.fill_curves()
    assert list(curves) == [f"rank {k} (cpu)" for k in range(world)]
    for r, curve in zip(result.ranks, curves.values()):
        assert curve.total == r.read_nbytes  # every byte the rank read landed, on the shared clock
        assert curve.times[0] == pytest.approx(r.began)
    assert set(result.per_rank_gbps()) == set(curves)
    assert gdist.SIMULATED in str(result)


def test_load_sharded_cold(llama, tmp_path):
    folder, full = llama
    require_eviction(folder)
    result = gdist.load_sharded(folder, 2, threads=2, cache="cold")
    assert result.record()["cache"] == "cold" and result.resident_before < 0.05
    assert_rank_exact(result.ranks[1].tensors, full, Checkpoint.open(folder), 1, 2)
    warm = gdist.load_sharded(folder, 2, threads=2, cache="warm")
    assert warm.record()["cache"] == "warm"


def test_load_sharded_errors(llama, tmp_path):
    folder, _ = llama
    with pytest.raises(PlanError, match="not divisible by 3"):
        gdist.load_sharded(folder, 3)
    with pytest.raises(ValueError, match="world is 2 but 3 devices"):
        gdist.load_sharded(folder, 2, devices=["cpu"] * 3)
    if not HAS_CUDA:  # with GPUs the default is one rank per GPU
        with pytest.raises(ValueError, match="give world"):
            gdist.load_sharded(folder)
    # a shard truncated after the table was read: one rank fails, the others stop, one error, no thread left
    copy = tmp_path / "ckpt"
    copy.mkdir()
    for f in folder.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    ckpt = Checkpoint.open(copy)
    last = ckpt.files[-1].path
    last.write_bytes(last.read_bytes()[: ckpt.files[-1].size - 1000])
    with pytest.raises(LoadError, match=rf"{last.name}: (truncated|modified since)"):
        gdist.load_sharded(ckpt, 4, threads=2)
    assert no_rank_threads()


def test_load_sharded_cancelled(llama):
    folder, _ = llama
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(LoadCancelled):
        gdist.load_sharded(folder, 4, threads=2, cancel=cancel)
    assert no_rank_threads()


def test_cli_dist_load(llama, tmp_path, capsys):
    from gdslab.cli import main

    folder, _ = llama
    out = tmp_path / "records.json"
    assert main(["dist-load", str(folder), "--world", "2", "--threads", "2", "--strided", "rows",
                 "--json", str(out)]) == 0
    assert gdist.SIMULATED in capsys.readouterr().out
    records = json.loads(out.read_text())
    assert [r["kind"] for r in records] == ["rank", "rank", "run"] and records[-1]["strided"] == "rows"
    assert main(["dist-load", str(folder), "--world", "3"]) == 2  # PlanError: one line, exit code 2
    assert "not divisible by 3" in capsys.readouterr().err


def test_main_in_process_destroys_the_group(llama, tmp_path, monkeypatch, capsys):
    """`python -m gdslab.dist` as rank 0 of 1 (gloo): records out, and the group destroyed, ok or not."""
    folder, _ = llama
    import torch.distributed as dist

    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(gdist.free_port()), "RANK": "0",
                       "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "records.json"
    assert gdist.main([str(folder), "--modes", "slice,share", "--threads", "2", "--json", str(out),
                       "--backend", "gloo"]) == 0
    assert not dist.is_initialized()
    records = json.loads(out.read_text())
    assert [r["kind"] for r in records] == ["rank", "node", "run", "rank", "node", "run"]  # one node here
    assert [r["mode"] for r in records if r["kind"] == "run"] == ["slice", "share"]
    assert "slice" in capsys.readouterr().out
    monkeypatch.setenv("MASTER_PORT", str(gdist.free_port()))
    assert gdist.main([str(tmp_path / "missing"), "--backend", "gloo"]) == 2  # a GdslabError: one line, code 2
    assert not dist.is_initialized()
    assert "missing" in capsys.readouterr().err


def check_saved(save_dir, full, ckpt, world, modes):
    for mode in modes:
        for rank in range(world):
            tensors = torch.load(save_dir / f"{mode}-rank{rank}.pt")
            assert_rank_exact(tensors, full, ckpt, rank, world)


def check_records(records, ckpt, world, modes):
    runs = [r for r in records if r["kind"] == "run"]
    assert [r["mode"] for r in runs] == list(modes)
    for run in runs:
        ranks = [r for r in records if r["kind"] == "rank" and r["mode"] == run["mode"]]
        assert sorted(r["rank"] for r in ranks) == list(range(world))
        assert all(r["world"] == world and r["backend"] == "gloo" and r["note"] == gdist.SIMULATED for r in ranks)
        assert run["world"] == world and run["simulated"] is True
        assert run["nbytes"] == sum(rank_plan(ckpt, k, world).owned_nbytes for k in range(world))
        assert run["seconds"] == pytest.approx(max(r["began"] + r["seconds"] for r in ranks))
        if run["mode"] == "share":  # 1/N of the bytes each, then the exchange
            assert run["read_nbytes"] == ckpt.nbytes and run["comm_seconds"] > 0
        else:
            assert run["read_nbytes"] >= run["nbytes"] and run["comm_seconds"] == 0


def test_four_gloo_ranks_slice_and_share(llama, tmp_path):
    """4 processes over gloo on 127.0.0.1 (torch.multiprocessing), both modes, bit-exact."""
    folder, full = llama
    ckpt = Checkpoint.open(folder)
    records = gdist.run_local(folder, 4, modes=("slice", "share"), save_dir=tmp_path, threads=1,
                              strided="rows")
    check_records(records, ckpt, 4, ("slice", "share"))
    check_saved(tmp_path, full, ckpt, 4, ("slice", "share"))


def test_two_ranks_through_torchrun(llama, tmp_path):
    """The documented command: torchrun --nproc-per-node 2 -m gdslab.dist CHECKPOINT."""
    folder, full = llama
    ckpt = Checkpoint.open(folder)
    out = tmp_path / "records.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "gdslab.dist", str(folder), "--modes", "slice,share", "--threads", "1",
               "--json", str(out), "--save-dir", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert gdist.SIMULATED in done.stdout
    records = json.loads(out.read_text())
    check_records(records, ckpt, 2, ("slice", "share"))
    check_saved(tmp_path, full, ckpt, 2, ("slice", "share"))


@pytest.mark.gpu
@needs_gpu
def test_gpu_per_device_worker(llama):
    folder, full = llama
    ckpt = Checkpoint.open(folder)
    world = torch.cuda.device_count()
    result = gdist.load_sharded(ckpt, world, threads=2)
    assert not result.simulated and result.record()["note"] == ""
    for r in result.ranks:
        assert r.device == f"cuda:{r.rank}"
        assert_rank_exact(r.tensors, full, ckpt, r.rank, world)


@pytest.mark.gpu
@needs_gpu
def test_gpu_nccl_one_rank(llama, tmp_path):
    folder, full = llama
    ckpt = Checkpoint.open(folder)
    records = gdist.run_local(folder, 1, modes=("slice", "share"), backend="nccl", save_dir=tmp_path)
    assert {r["backend"] for r in records} == {"nccl"} and {r["device"] for r in records} == {"cuda:0"}
    check_saved(tmp_path, full, ckpt, 1, ("slice", "share"))


def test_rank_devices_without_a_gpu():
    if HAS_CUDA:
        pytest.skip("checks the answers of a machine without a GPU")
    assert gdist.rank_device(None, 3) == torch.device("cpu")
    assert gdist.rank_device("cpu", 1) == torch.device("cpu")
    with pytest.raises(DatapathUnavailable, match="no CUDA GPU"):
        gdist.rank_device("cuda", 0)
    with pytest.raises(DatapathUnavailable, match="need"):
        gdist.run_local("unused", 2, backend="nccl")


@pytest.mark.gpu
@needs_gpu
def test_cuda_spreads_ranks_over_the_visible_gpus():
    count = torch.cuda.device_count()
    assert [gdist.rank_device("cuda", r) for r in range(count + 1)] == \
        [torch.device("cuda", r % count) for r in range(count + 1)]
    assert gdist.rank_device("cuda:0", 5) == torch.device("cuda", 0)


@pytest.mark.gpu
@needs_gpu
def test_nccl_over_every_visible_gpu_by_default(llama, tmp_path):
    folder, full = llama
    ckpt = Checkpoint.open(folder)
    world = torch.cuda.device_count()
    records = gdist.run_local(folder, world, modes=("slice", "share"), save_dir=tmp_path, device="cuda")
    ranks = [r for r in records if r["kind"] == "rank"]
    assert {r["backend"] for r in records} == {"nccl"}
    assert sorted({r["device"] for r in ranks}) == [f"cuda:{k}" for k in range(world)]
    assert not any(r["simulated"] for r in records)
    check_saved(tmp_path, full, ckpt, world, ("slice", "share"))


# --- many nodes: the pieces the two-node test (tests/test_multinode.py) relies on -------------------


def test_node_records_slowest_rank_per_node():
    ranks = [  # hand-made rank records: two nodes on one host, told apart by node rank
        {"rank": 0, "node_rank": 0, "hostname": "h", "nbytes": 10, "read_nbytes": 12, "began": 0.0, "seconds": 2.0},
        {"rank": 1, "node_rank": 0, "hostname": "h", "nbytes": 10, "read_nbytes": 10, "began": 0.5, "seconds": 2.0},
        {"rank": 2, "node_rank": 1, "hostname": "h", "nbytes": 7, "read_nbytes": 7, "began": 0.1, "seconds": 3.0},
    ]
    nodes = gdist.node_records(ranks, {0: 0.01, 1: 0.5})
    assert [n["node_rank"] for n in nodes] == [0, 1]
    assert nodes[0]["ranks"] == [0, 1] and nodes[0]["read_nbytes"] == 22 and nodes[0]["nbytes"] == 20
    assert nodes[0]["seconds"] == 2.5 and nodes[0]["slowest_rank"] == 1 and nodes[0]["cache"] == "cold"
    assert nodes[1]["seconds"] == pytest.approx(3.1) and nodes[1]["cache"] == "partial"


def test_job_failed_names_rank_node_and_file():
    e = gdist.JobFailed("open", [{"rank": 3, "node_rank": 1, "hostname": "ip-10-0-0-2",
                                  "error": "/fsx/set/model-rank-3-part-1.safetensors: missing"}], 16)
    assert str(e).startswith("the job failed at 'open' on 1 of 16 rank(s)")
    assert "rank 3 (node 1, ip-10-0-0-2): /fsx/set/model-rank-3-part-1.safetensors: missing" in str(e)


def test_torchrun_command_is_what_torchrun_parses():
    from torch.distributed.run import get_args_parser

    line = gdist.torchrun_command("/fsx/llama-405b-tp16", 2, 8, "10.0.0.1:29500", args=["--cache", "cold"])
    words = line.split()
    assert words[0] == "torchrun"
    args = get_args_parser().parse_args(words[1:])
    assert (args.nnodes, args.nproc_per_node, args.rdzv_backend, args.rdzv_endpoint) == ("2", "8", "c10d",
                                                                                         "10.0.0.1:29500")
    assert args.rdzv_conf == "join_timeout=300" and args.max_restarts == 0 and args.module
    assert args.training_script == "gdslab.dist"
    ours = gdist.build_parser().parse_args(args.training_script_args)
    assert ours.checkpoint == "/fsx/llama-405b-tp16" and ours.cache == "cold" and ours.timeout == 300
    assert "$HEAD_NODE:29500" in gdist.torchrun_command("/x", 2, 8)  # left for the shell to expand
    with pytest.raises(ValueError, match="HOST:PORT"):
        gdist.torchrun_command("/x", 2, 8, "head")
    with pytest.raises(ValueError, match="positive"):
        gdist.torchrun_command("/x", 0, 8)


def test_open_set_checks_only_the_ranks_asked(tmp_path):
    from gdslab.reshard import ReshardError, open_set, reshard

    src = write_checkpoint(tmp_path / "src", "1MiB", shards=1, seed=3)
    dst = tmp_path / "tp2"
    reshard(src, dst, 2, progress=False)
    (dst / "model-rank-1-part-0.safetensors").unlink()
    assert open_set(dst, ranks=[0]).tp == 2  # rank 0 never looks at rank 1's file
    with pytest.raises(ReshardError, match="model-rank-1-part-0.safetensors: missing"):
        open_set(dst, ranks=[1])
    with pytest.raises(ReshardError, match="missing"):
        open_set(dst)


def test_cli_dist_load_prints_the_torchrun_line_for_n_nodes(capsys):
    from torch.distributed.run import get_args_parser

    from gdslab.cli import main

    assert main(["dist-load", "/fsx/set", "--nodes", "4", "--nproc-per-node", "8", "--rdzv-endpoint",
                 "10.1.2.3:29400", "--cache", "cold"]) == 0
    line = capsys.readouterr().out.strip()
    args = get_args_parser().parse_args(line.split()[1:])
    assert (args.nnodes, args.nproc_per_node, args.rdzv_endpoint) == ("4", "8", "10.1.2.3:29400")
    assert gdist.build_parser().parse_args(args.training_script_args).cache == "cold"


def test_a_node_that_never_joins_ends_the_job_at_the_join_timeout(tmp_path):
    """torchrun --nnodes 2 with one node only: c10d's rendezvous gives up after join_timeout, no rank starts."""
    join_timeout = 5
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "2",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{gdist.free_port()}", "--rdzv-id", "alone",
               "--rdzv-conf", f"join_timeout={join_timeout}", "--max-restarts", "0", "-m", "gdslab.dist",
               str(tmp_path), "--backend", "gloo", "--json", str(tmp_path / "records.json")]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start
    assert done.returncode != 0 and "RendezvousTimeoutError" in done.stderr, done.stderr[-2000:]
    assert join_timeout <= seconds < join_timeout + 60  # the agent's own start-up, on a busy 2-core runner
    assert not (tmp_path / "records.json").exists()
