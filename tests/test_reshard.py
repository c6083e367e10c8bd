"""`gdslab reshard` and loading its output: bit-exact, FP8 rounding, streaming memory, safety."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

import gdslab
from gdslab import dist, fp8
from gdslab.checkpoint import Checkpoint
from gdslab.errors import CheckpointError
from gdslab.reshard import MANIFEST, ReshardError, open_set, reshard
from gdslab.synthetic import write_checkpoint
from gdslab.writer import DATA_ALIGN


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A Llama-shaped checkpoint (6 layers, so FP8 leaves the first and last alone) and its full tensors."""
    folder = write_checkpoint(tmp_path_factory.mktemp("src"), "3MiB", shards=3, seed=4)
    full = {}
    for f in sorted(folder.glob("*.safetensors")):
        full.update(load_file(str(f)))
    return folder, full


def raw(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


# Megatron/vLLM tensor parallelism for Llama, written down here as the test's own oracle (not gdslab.plan's):
# column-parallel layers and the vocabulary split their rows, row-parallel layers their columns, norms are whole.
ROWS = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "gate_proj.weight", "up_proj.weight",
        "embed_tokens.weight", "lm_head.weight")
COLUMNS = ("o_proj.weight", "down_proj.weight")


def expected_slice(full: torch.Tensor, name: str, rank: int, tp: int) -> torch.Tensor:
    """Rank `rank`'s part of `full`, cut by plain indexing."""
    if name.endswith(ROWS):
        step = full.shape[0] // tp
        return full[rank * step:(rank + 1) * step]
    if name.endswith(COLUMNS):
        step = full.shape[1] // tp
        return full[:, rank * step:(rank + 1) * step]
    assert full.dim() == 1, name  # a norm: every rank holds all of it
    return full


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_each_rank_holds_exactly_its_slices(source, tmp_path, tp):
    folder, full = source
    done = reshard(folder, tmp_path / "set", tp, max_file_size="400KiB", progress=False)
    assert done.tp == tp and (tmp_path / "set" / MANIFEST).exists()
    presharded = dist.load_sharded(tmp_path / "set", threads=2, device="cpu")
    sliced = dist.load_sharded(folder, tp, threads=2, device="cpu")
    assert presharded.world == tp and sliced.world == tp
    for result in (presharded, sliced):  # each against slices of safetensors' own tensors
        for r in result.ranks:
            assert set(r.tensors) == set(full), r.rank
            for name, tensor in r.tensors.items():
                want = expected_slice(full[name], name, r.rank, tp)
                assert tensor.dtype == want.dtype and tensor.shape == want.shape, (r.rank, name)
                assert raw(tensor) == raw(want), (r.rank, name)
    for b in presharded.ranks:
        record = b.record()
        assert record["strided"] == "presharded" and record["amplification"] == 1.0  # reads only what it keeps
        assert b.read_nbytes == b.nbytes
    assert done.nbytes == sum(r.nbytes for r in presharded.ranks)


def test_files_are_safetensors_in_reading_order_with_aligned_data(source, tmp_path):
    folder, _ = source
    done = reshard(folder, tmp_path / "set", 2, max_file_size="300KiB", progress=False)
    order = [e.name for e in Checkpoint.open(folder).tensors]
    for rank in range(2):
        names = []
        for path in done.files(rank):
            assert path.name.startswith(f"model-rank-{rank}-part-")
            part = Checkpoint.of_files(path.parent, [path])
            assert part.nbytes <= 300 << 10 or len(part.tensors) == 1  # tensor bytes per file, as vLLM counts them
            names += [e.name for e in part.tensors]
            load_file(str(path))  # the safetensors library reads it
            assert part.files[0].data_start % DATA_ALIGN == 0
        assert names == order  # laid out in the order the rank reads them
    assert len(done.files(0)) > 1  # split by max_file_size


def test_fp8_set_is_the_quantization_of_each_slice(source, tmp_path):
    folder, full = source
    done = reshard(folder, tmp_path / "fp8", 2, dtype="fp8_e4m3", progress=False)
    manifest = done.manifest
    assert manifest["dtype"] == "fp8_e4m3" and manifest["quantization"]["quant_method"] == "fbgemm_fp8"
    layers = fp8.layer_count(full)
    quantized = {n for n in full if fp8.is_quantized(n, layers)}
    assert quantized and all(".mlp." in n for n in quantized)
    assert not any(".layers.0." in n or f".layers.{layers - 1}." in n for n in quantized)  # first and last stay
    bf16_bytes = sum(t.numel() * t.element_size() for t in full.values())
    loaded = dist.load_sharded(tmp_path / "fp8", threads=2, device="cpu")
    for r in loaded.ranks:
        for name, source_tensor in full.items():
            want = expected_slice(source_tensor, name, r.rank, 2)
            got = r.tensors[name]
            if name not in quantized:
                assert raw(got) == raw(want), name
                assert fp8.scale_name(name) not in r.tensors or not name.endswith(".weight")
                continue
            scale = r.tensors[fp8.scale_name(name)]
            assert got.dtype == fp8.FP8 and scale.dtype == torch.float32 and scale.shape == (got.shape[0], 1)
            # equal to the quantization of the whole source tensor, cut to this rank's slice
            whole = fp8.quantize(source_tensor, fp8.row_scales(source_tensor))
            assert raw(got) == raw(expected_slice(whole, name, r.rank, 2)), name
            # and within FP8 E4M3's rounding of the source
            error = (fp8.dequantize(got, scale) - want.float()).abs()
            assert bool((error <= fp8.rounding_bound(want, scale)).all()), name
    assert done.nbytes < bf16_bytes


def test_fp8_size_of_the_real_405b_is_the_published_one():
    from gdslab.synthetic import PRESETS

    size = fp8.model_bytes(PRESETS["llama-3.1-405b"].tensors())
    assert abs(size / 2**30 - 453.8) < 0.5  # GiB; "bf16 / 2" would be 378 GiB


def test_reshard_streams_in_bounded_memory(tmp_path):
    """A 2 GiB source resharded to FP8 at TP 2: the resharding process's peak RSS stays under 1 GiB."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    write = subprocess.run([sys.executable, "-c", "from gdslab.synthetic import write_checkpoint; "
                            f"write_checkpoint({str(src)!r}, '2GiB', shards=2, seed=1)"],
                           capture_output=True, text=True, timeout=300)
    assert write.returncode == 0, write.stderr[-2000:]
    script = textwrap.dedent(f"""
        import resource
        from gdslab.reshard import reshard
        done = reshard({str(src)!r}, {str(dst)!r}, 2, dtype="fp8_e4m3", progress=False)
        print(done.manifest["source"]["nbytes"], done.nbytes, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    source_bytes, set_bytes, peak = map(int, run.stdout.split())
    assert source_bytes > 2_000_000_000 and set_bytes < source_bytes
    assert peak < 1 << 30, f"peak RSS {peak / 2**20:.0f} MiB while resharding {source_bytes / 2**30:.2f} GiB"


def test_an_interrupted_reshard_leaves_nothing_that_looks_complete(source, tmp_path, monkeypatch):
    folder, _ = source
    from gdslab import writer

    calls = {"n": 0}
    real = writer.SafetensorsWriter.write

    def failing(self, name, tensor):
        calls["n"] += 1
        if calls["n"] == 40:
            raise KeyboardInterrupt
        return real(self, name, tensor)

    monkeypatch.setattr(writer.SafetensorsWriter, "write", failing)
    with pytest.raises(KeyboardInterrupt):
        reshard(folder, tmp_path / "set", 2, max_file_size="200KiB", progress=False)
    assert list((tmp_path / "set").iterdir()) == []  # no rank file, no partial file, no manifest


def test_rank_files_without_a_manifest_are_refused(source, tmp_path):
    folder, _ = source
    done = reshard(folder, tmp_path / "set", 2, progress=False)
    (tmp_path / "set" / MANIFEST).unlink()  # as a reshard killed before its last step would leave it
    with pytest.raises(ReshardError, match="no gdslab-preshard.json: an interrupted reshard"):
        dist.load_sharded(tmp_path / "set")
    with pytest.raises(CheckpointError, match="pre-sharded set"):
        Checkpoint.open(tmp_path / "set")
    assert done


def test_files_that_disagree_with_the_manifest_are_refused(source, tmp_path):
    folder, _ = source
    done = reshard(folder, tmp_path / "set", 2, progress=False)
    victim = done.files(1)[0]
    data = victim.read_bytes()
    victim.write_bytes(data[:-10])
    with pytest.raises(ReshardError, match=f"{victim.name}.*cut short"):
        dist.load_sharded(tmp_path / "set")
    other = reshard(folder, tmp_path / "other", 2, vocab="replicate", progress=False).files(1)[0]
    victim.write_bytes(other.read_bytes()[:len(data)].ljust(len(data), b"\0"))
    with pytest.raises(ReshardError, match="header differs"):
        open_set(tmp_path / "set")
    victim.unlink()
    with pytest.raises(ReshardError, match=f"{victim.name}: missing"):
        open_set(tmp_path / "set")


def test_a_set_loads_only_at_its_own_tp_degree(source, tmp_path):
    folder, _ = source
    reshard(folder, tmp_path / "set", 2, progress=False)
    with pytest.raises(ReshardError, match="pre-sharded for TP 2; it cannot be loaded by 4 rank"):
        dist.load_sharded(tmp_path / "set", 4)
    with pytest.raises(ReshardError, match="TP 2"):
        dist.run_local(tmp_path / "set", 1, modes=("slice",))


def test_torchrun_reads_each_rank_its_own_files(source, tmp_path):
    folder, full = source
    reshard(folder, tmp_path / "set", 2, progress=False)
    records = dist.run_local(tmp_path / "set", 2, modes=("slice",), save_dir=tmp_path)
    ranks = [r for r in records if r["kind"] == "rank"]
    assert {r["strided"] for r in ranks} == {"presharded"} and all(r["amplification"] == 1.0 for r in ranks)
    for rank in range(2):
        saved = torch.load(tmp_path / f"slice-rank{rank}.pt")
        for name, tensor in full.items():
            assert raw(saved[name]) == raw(expected_slice(tensor, name, rank, 2)), name
    with pytest.raises(ValueError, match="'slice' mode only"):
        dist.run_local(tmp_path / "set", 2, modes=("share",))


def test_destination_must_be_empty_unless_forced(source, tmp_path):
    folder, _ = source
    reshard(folder, tmp_path / "set", 2, progress=False)
    with pytest.raises(ReshardError, match="not empty"):
        reshard(folder, tmp_path / "set", 2, progress=False)
    again = reshard(folder, tmp_path / "set", 4, force=True, progress=False)
    assert again.tp == 4 and not list((tmp_path / "set").glob("*.partial"))
    (tmp_path / "set" / "notes.txt").write_text("mine")
    with pytest.raises(ReshardError, match="notes.txt: not part of a pre-sharded set"):
        reshard(folder, tmp_path / "set", 2, force=True, progress=False)
    assert (tmp_path / "set" / "notes.txt").exists() and open_set(tmp_path / "set").tp == 4
    with pytest.raises(gdslab.PlanError, match="not divisible by 3"):
        reshard(folder, tmp_path / "three", 3, progress=False)
    assert not (tmp_path / "three").exists()


def test_manifest_names_the_source(source, tmp_path):
    folder, _ = source
    manifest = reshard(folder, tmp_path / "set", 2, progress=False).manifest
    assert [f["name"] for f in manifest["source"]["files"]] == sorted(p.name for p in folder.glob("*.safetensors"))
    assert manifest["layout"].startswith("vLLM sharded_state") and len(manifest["source"]["headers_sha256"]) == 64
    assert json.loads((tmp_path / "set" / MANIFEST).read_text()) == manifest


def test_cli_reshard_and_inspect(source, tmp_path, capsys):
    from gdslab.cli import main

    folder, _ = source
    assert main(["reshard", str(folder), str(tmp_path / "set"), "--tp", "2", "--dtype", "fp8_e4m3",
                 "--no-progress"]) == 0
    assert "pre-sharded for TP 2 (FP8 E4M3" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "set")]) == 0
    assert "rank 1:" in capsys.readouterr().out
    assert main(["reshard", str(folder), str(tmp_path / "set"), "--tp", "2", "--no-progress"]) == 2
    assert "not empty" in capsys.readouterr().err
