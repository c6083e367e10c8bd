"""Two torchrun "nodes" on 127.0.0.1 (c10d rendezvous, gloo, two ranks each) over a TP 4 pre-sharded set.

Each node is its own `torchrun --nnodes 2 --node-rank K` process, as on two machines; the
oracles are the source read by `safetensors.torch.load_file` and cut by plain indexing, and
the set's files listed by their names on disk.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest
import torch
from safetensors.torch import load_file

from gdslab.cache import can_evict
from gdslab.dist import free_port
from gdslab.reshard import reshard
from gdslab.synthetic import write_checkpoint

TP, NODES, PER_NODE = 4, 2, 2
TIMEOUT_S = 20  # the job's collective timeout: a failed job must end well within it on every rank
COLUMN = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "embed_tokens", "lm_head")  # split on dim 0
ROW = ("o_proj", "down_proj")  # split on dim 1 (Megatron-LM's row-parallel linear)


@pytest.fixture(scope="module")
def tp4(tmp_path_factory):
    root = tmp_path_factory.mktemp("multinode")
    source = write_checkpoint(root / "source", "2MiB", shards=2, seed=23)
    reshard(source, root / "tp4", TP, max_file_size="256KiB", progress=False)
    full = {}
    for f in sorted(source.glob("*.safetensors")):
        full.update({k: v.clone() for k, v in load_file(str(f)).items()})
    return root / "tp4", full


def reference_slice(name: str, tensor: torch.Tensor, rank: int) -> torch.Tensor:
    """Rank `rank`'s part of a full tensor, cut by plain indexing (Llama's tensor-parallel layout)."""
    module = name.split(".")[-2]
    if module in COLUMN:
        n = tensor.shape[0] // TP
        return tensor[rank * n:(rank + 1) * n]
    if module in ROW and tensor.dim() == 2:
        n = tensor.shape[1] // TP
        return tensor[:, rank * n:(rank + 1) * n]
    return tensor


def own_files(folder, rank: int) -> dict[str, int]:
    """Rank `rank`'s files by their names on disk, each with its tensor bytes as safetensors reads them."""
    return {f.name: sum(t.numel() * t.element_size() for t in load_file(str(f)).values())
            for f in sorted(folder.glob(f"model-rank-{rank}-part-*.safetensors"))}


def launch_two_nodes(folder, out, *extra: str) -> list[tuple[int, str, str, float]]:
    """Start both nodes at once, as two torchrun agents; (exit code, stdout, stderr, seconds) per node."""
    port, run_id = free_port(), f"gdslab-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = []
    start = time.perf_counter()
    for node in range(NODES):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(NODES), "--node-rank", str(node),
                   "--nproc-per-node", str(PER_NODE), "--rdzv-backend", "c10d", "--rdzv-endpoint",
                   f"127.0.0.1:{port}", "--rdzv-id", run_id, "--rdzv-conf", "join_timeout=30", "--max-restarts", "0",
                   "-m", "gdslab.dist", str(folder), "--backend", "gloo", "--threads", "1",
                   "--timeout", str(TIMEOUT_S), "--json", str(out / "records.json"), *extra]
        nodes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    done = []
    for proc in nodes:
        try:
            stdout, stderr = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            for p in nodes:
                p.kill()
            raise
        done.append((proc.returncode, stdout, stderr, time.perf_counter() - start))
    return done


def test_two_nodes_each_rank_reads_its_own_files_bit_exact(tp4, tmp_path):
    folder, full = tp4
    cold = can_evict(folder)[0]
    done = launch_two_nodes(folder, tmp_path, "--save-dir", str(tmp_path), "--cache", "cold" if cold else "as-is")
    for code, stdout, stderr, _ in done:
        assert code == 0, stderr[-3000:]
    records = json.loads((tmp_path / "records.json").read_text())
    ranks = sorted((r for r in records if r["kind"] == "rank"), key=lambda r: r["rank"])
    nodes = [r for r in records if r["kind"] == "node"]
    (run,) = [r for r in records if r["kind"] == "run"]

    # every rank read exactly its own files, every byte of their tensors, and nothing else
    assert [r["rank"] for r in ranks] == list(range(TP))
    for r in ranks:
        assert r["bytes_by_file"] == own_files(folder, r["rank"]), r["rank"]
        assert r["read_nbytes"] == sum(own_files(folder, r["rank"]).values())

    # the gathered tensors are the source's slices, bit for bit
    for rank in range(TP):
        got = torch.load(tmp_path / f"slice-rank{rank}.pt")
        assert sorted(got) == sorted(full)
        for name, tensor in full.items():
            want = reference_slice(name, tensor, rank)
            assert got[name].dtype == want.dtype and got[name].shape == want.shape, (name, rank)
            assert torch.equal(got[name].view(torch.uint8), want.contiguous().view(torch.uint8)), (name, rank)

    # two nodes told apart by torchrun's group rank, not the (shared) hostname; each with its record
    assert len({r["hostname"] for r in ranks}) == 1
    by_node = {}
    for r in ranks:
        by_node.setdefault(r["node_rank"], []).append(r["rank"])
    assert sorted(by_node.values()) == [[0, 1], [2, 3]]
    assert sorted(n["node_rank"] for n in nodes) == sorted(by_node) and run["node_count"] == NODES
    for n in nodes:
        mine = [r for r in ranks if r["node_rank"] == n["node_rank"]]
        assert n["ranks"] == by_node[n["node_rank"]]
        assert n["read_nbytes"] == sum(r["read_nbytes"] for r in mine)
        assert n["seconds"] == max(r["began"] + r["seconds"] for r in mine)  # the node's slowest rank
        assert 0.0 <= n["resident_before"] <= 1.0
        if cold:
            assert n["resident_before"] < 0.05 and n["cache"] == "cold"
    assert run["seconds"] == max(n["seconds"] for n in nodes)  # the job: the slowest rank of all
    assert run["nodes"] == [{k: v for k, v in n.items() if k not in ("kind", "repeat", "mode")} for n in nodes]
    assert "node 1" in done[0][1] + done[1][1]  # rank 0 prints a line per node


def test_a_shard_deleted_under_one_node_fails_every_rank_by_name(tp4, tmp_path):
    folder, _ = tp4
    broken = tmp_path / "tp4"
    shutil.copytree(folder, broken)
    lost = broken / "model-rank-3-part-1.safetensors"
    lost.unlink()  # rank 3 runs on the second node (ranks 2, 3)
    done = launch_two_nodes(broken, tmp_path)
    stderr = "".join(e for _, _, e, _ in done)
    assert all(code != 0 for code, *_ in done), stderr[-3000:]
    assert max(seconds for *_, seconds in done) < 90
    for rank in range(TP):
        lines = [line for line in stderr.splitlines() if line.startswith(f"gdslab.dist rank {rank} ")]
        assert len(lines) == 1, (rank, stderr[-3000:])
        assert re.search(r"failed at 'open' on 1 of 4 rank\(s\)", lines[0]), lines[0]
        assert f"rank 3 (node 1, " in lines[0] and str(lost) in lines[0] and "missing" in lines[0], lines[0]
    assert not (tmp_path / "records.json").exists()
