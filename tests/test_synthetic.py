"""Synthetic Llama-shaped checkpoints: shapes per preset, sizes, determinism, round trip."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from gdslab import Checkpoint, write_checkpoint
from gdslab.cli import main
from gdslab.synthetic import PRESETS, cached_checkpoint, scaled_shape


def test_presets_have_the_real_architectures():
    real = {  # hidden, intermediate, layers, heads, kv_heads, vocab (from the published configs)
        "llama-3.1-8b": (4096, 14336, 32, 32, 8, 128256),
        "llama-3.1-70b": (8192, 28672, 80, 64, 8, 128256),
        "llama-3.1-405b": (16384, 53248, 126, 128, 8, 128256),
    }
    for name, dims in real.items():
        p = PRESETS[name]
        assert (p.hidden, p.intermediate, p.layers, p.heads, p.kv_heads, p.vocab) == dims
        assert p.head_dim == 128
    assert 7.9e9 < PRESETS["llama-3.1-8b"].numel() < 8.1e9
    assert 403e9 < PRESETS["llama-3.1-405b"].numel() < 407e9


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("size", [8 << 20, 64 << 20, 2 << 30])
def test_scaled_shapes_keep_proportions(preset, size):
    base, shape = PRESETS[preset], scaled_shape(preset, size, 2)
    assert abs(shape.numel() * 2 / size - 1) < 0.08
    assert (shape.heads, shape.kv_heads) == (base.heads, base.kv_heads)  # GQA ratio kept
    assert shape.hidden % shape.heads == 0
    assert abs(shape.intermediate / shape.hidden - base.intermediate / base.hidden) < 0.1
    for dim in (shape.hidden, shape.intermediate, shape.vocab, shape.kv_heads * shape.head_dim):
        assert dim % 8 == 0  # tensor parallelism up to 8 divides every split dimension


def test_tensor_names_and_shapes(tmp_path):
    folder = write_checkpoint(tmp_path / "c", size="4MiB", shards=3, preset="llama-3.1-8b", dtype="bf16")
    ckpt = Checkpoint.open(folder)
    meta = json.loads(ckpt.files[0].metadata["gdslab.shape"])
    h, i, kv = meta["hidden"], meta["intermediate"], meta["kv_heads"] * meta["hidden"] // meta["heads"]
    shapes = {t.name: t.shape for t in ckpt.tensors}
    assert shapes["model.embed_tokens.weight"] == (meta["vocab"], h)
    assert shapes["lm_head.weight"] == (meta["vocab"], h)
    assert shapes["model.norm.weight"] == (h,)
    assert shapes["model.layers.0.self_attn.q_proj.weight"] == (h, h)
    assert shapes["model.layers.0.self_attn.k_proj.weight"] == (kv, h)
    assert shapes["model.layers.0.mlp.down_proj.weight"] == (h, i)
    assert shapes["model.layers.0.mlp.gate_proj.weight"] == (i, h)
    assert len(ckpt.files) == 3 and ckpt.index is not None
    assert {t.dtype for t in ckpt.tensors} == {torch.bfloat16}


@pytest.mark.parametrize("dtype,torch_dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16),
                                               ("fp32", torch.float32), ("fp8_e4m3", torch.float8_e4m3fn)])
def test_round_trip_bytes_equal_safetensors(tmp_path, dtype, torch_dtype):
    folder = write_checkpoint(tmp_path / dtype, size="2MiB", shards=2, dtype=dtype, seed=7)
    ckpt = Checkpoint.open(folder)
    for shard in ckpt.files:
        reference = load_file(str(shard.path))
        for entry in (t for t in ckpt.tensors if t.file == shard.path):
            with open(entry.file, "rb") as f:
                f.seek(entry.offset)
                raw = f.read(entry.nbytes)
            ref = reference[entry.name]
            assert ref.dtype == torch_dtype
            assert raw == ref.reshape(-1).view(torch.uint8).numpy().tobytes()
            assert ref.float().abs().sum() > 0  # not zeros


def test_deterministic_and_independent_of_shard_count(tmp_path):
    a = write_checkpoint(tmp_path / "a", size="2MiB", shards=1, seed=3)
    b = write_checkpoint(tmp_path / "b", size="2MiB", shards=4, seed=3)
    c = write_checkpoint(tmp_path / "c", size="2MiB", shards=4, seed=4)
    la = load_file(str(a / "model.safetensors"))
    lb = {k: v for f in sorted(b.glob("*.safetensors")) for k, v in load_file(str(f)).items()}
    lc = {k: v for f in sorted(c.glob("*.safetensors")) for k, v in load_file(str(f)).items()}
    assert la.keys() == lb.keys()
    assert all(torch.equal(la[k].view(torch.int16), lb[k].view(torch.int16)) for k in la)
    assert not all(torch.equal(la[k].view(torch.int16), lc[k].view(torch.int16)) for k in la)


def test_refuses_to_overwrite_and_caches(tmp_path):
    write_checkpoint(tmp_path / "x", size="1MiB", shards=2)
    with pytest.raises(FileExistsError):
        write_checkpoint(tmp_path / "x", size="1MiB", shards=2)
    first = cached_checkpoint("1MiB", 2, root=tmp_path)
    stamp = (first / "model-00001-of-00002.safetensors").stat().st_mtime_ns
    again = cached_checkpoint("1MiB", 2, root=tmp_path)
    assert again == first and (again / "model-00001-of-00002.safetensors").stat().st_mtime_ns == stamp


def test_cli_make_checkpoint_and_inspect(tmp_path, capsys):
    assert main(["make-checkpoint", str(tmp_path / "m"), "--size", "1MiB", "--shards", "2",
                 "--preset", "llama-3.1-70b", "--dtype", "fp16", "--seed", "1"]) == 0
    assert main(["inspect", str(tmp_path / "m"), "--tensors"]) == 0
    out = capsys.readouterr().out
    assert "2 file(s)" in out and "F16" in out and "model.layers.0.mlp.up_proj.weight" in out
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 20)
    assert main(["inspect", str(bad)]) == 2
    assert "bad.safetensors" in capsys.readouterr().err
