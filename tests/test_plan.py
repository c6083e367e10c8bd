"""Tensor-parallel plans: every rank's bytes equal torch.chunk of the full tensor, for every Llama kind."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

import gdslab
from gdslab.checkpoint import Checkpoint
from gdslab.errors import GdslabError
from gdslab.plan import (
    DEFAULT_STRIDED, STRIDED_MODES, PlanError, rank_plan, rank_reads, share_partition, split_kind, tensor_slice,
)
from gdslab.synthetic import write_checkpoint

KINDS = {
    "model.embed_tokens.weight": ("vocab", 0),
    "model.layers.0.input_layernorm.weight": ("replicated", None),
    "model.layers.0.self_attn.q_proj.weight": ("column", 0),
    "model.layers.0.self_attn.k_proj.weight": ("column", 0),
    "model.layers.0.self_attn.v_proj.weight": ("column", 0),
    "model.layers.0.self_attn.o_proj.weight": ("row", 1),
    "model.layers.0.post_attention_layernorm.weight": ("replicated", None),
    "model.layers.0.mlp.gate_proj.weight": ("column", 0),
    "model.layers.0.mlp.up_proj.weight": ("column", 0),
    "model.layers.0.mlp.down_proj.weight": ("row", 1),
    "model.norm.weight": ("replicated", None),
    "lm_head.weight": ("vocab", 0),
}


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A ~1.5 MiB Llama-shaped checkpoint in 3 shards, and its full tensors from safetensors."""
    folder = write_checkpoint(tmp_path_factory.mktemp("llama"), "1536KiB", shards=3, seed=3)
    full = {}
    for f in sorted(folder.glob("*.safetensors")):
        full.update(load_file(str(f)))
    return Checkpoint.open(folder), full


def file_bytes(read) -> torch.Tensor:
    """A read's bytes straight from the file (no loader): its runs, concatenated, as its dtype/shape."""
    data = bytearray()
    with open(read.file, "rb") as f:
        for offset, nbytes in read.runs:
            f.seek(offset)
            data += f.read(nbytes)
    flat = torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
    return flat.view(read.dtype).view(read.shape) if read.shape else flat.view(read.dtype).reshape(())


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.contiguous(), b.contiguous()
    return a.dtype == b.dtype and a.shape == b.shape and \
        a.reshape(-1).view(torch.uint8).numpy().tobytes() == b.reshape(-1).view(torch.uint8).numpy().tobytes()


def test_split_kind_for_every_llama_tensor():
    for name, want in KINDS.items():
        assert split_kind(name, 1 if "norm" in name else 2) == want, name
    assert split_kind("model.embed_tokens.weight", 2, vocab="replicate") == ("replicated", None)
    assert split_kind("lm_head.weight", 2, vocab="replicate") == ("replicated", None)
    assert split_kind("model.layers.0.self_attn.q_proj.bias", 1) == ("column", 0)
    assert split_kind("model.layers.0.self_attn.o_proj.bias", 1) == ("replicated", None)
    assert split_kind("model.rotary_emb.inv_freq", 1) == ("replicated", None)
    with pytest.raises(ValueError, match="vocab policy"):
        split_kind("lm_head.weight", 2, vocab="both")


@pytest.mark.parametrize("strided", STRIDED_MODES)
@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_every_rank_reads_exactly_its_chunk(llama, world, strided):
    ckpt, full = llama
    seen_kinds = set()
    owned = 0
    for rank in range(world):
        plan = rank_plan(ckpt, rank, world, strided)
        tensors = plan.finish({read.name: file_bytes(read) for read in plan.reads})
        assert list(tensors) == [e.name for e in ckpt.tensors]
        for s in plan.slices:
            seen_kinds.add(s.kind)
            want = full[s.name] if s.dim is None else torch.chunk(full[s.name], world, s.dim)[rank]
            assert same_bytes(tensors[s.name], want), (s.name, rank, world, strided)
        owned += plan.owned_nbytes
        if strided == "rows" or world == 1:
            assert plan.read_nbytes == plan.owned_nbytes  # not one byte more than the rank needs
            assert not plan.post
        else:
            assert plan.read_nbytes > plan.owned_nbytes and plan.post  # spans over-read, then cut
    assert seen_kinds == {"column", "row", "vocab", "replicated"}
    replicated = sum(e.nbytes for e in ckpt.tensors if split_kind(e.name, len(e.shape))[1] is None)
    assert owned == ckpt.nbytes + (world - 1) * replicated


def test_strided_modes_differ_only_for_row_parallel(llama):
    ckpt, _ = llama
    rows, span = rank_plan(ckpt, 1, 4, "rows"), rank_plan(ckpt, 1, 4, "span")
    for a, b, s in zip(rows.reads, span.reads, rows.slices):
        if s.kind == "row":
            assert len(a.runs) == s.shape[0] and len(b.runs) == 1  # one run per row vs one span
            assert b.nbytes == ((s.shape[0] - 1) * s.shape[1] + s.shape[1] // 4) * s.itemsize
        else:
            assert a == b and len(a.runs) == 1  # dim-0 slices are contiguous either way
    assert set(span.post) == {s.name for s in span.slices if s.kind == "row"}


def test_vocab_replicated_policy(llama):
    ckpt, full = llama
    plan = rank_plan(ckpt, 3, 4, "rows", vocab="replicate")
    reads = {r.name: r for r in plan.reads}
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert same_bytes(file_bytes(reads[name]), full[name])


def test_loaded_through_gdslab_load(llama):
    ckpt, full = llama
    for strided in STRIDED_MODES:
        plan = rank_plan(ckpt, 2, 4, strided)
        result = gdslab.loader.load(ckpt, "host-direct", "cpu", threads=2, io_size="64KiB", reads=list(plan.reads))
        tensors = plan.finish(result.tensors)
        for s in plan.slices:
            want = full[s.name] if s.dim is None else torch.chunk(full[s.name], 4, s.dim)[2]
            assert same_bytes(tensors[s.name], want), (s.name, strided)
    assert rank_reads(ckpt, 2, 4, "rows") == list(rank_plan(ckpt, 2, 4, "rows").reads)


def test_generic_shapes_dtypes_and_biases(tmp_path):
    g = torch.Generator().manual_seed(1)
    tensors = {
        "blk.self_attn.o_proj.weight": torch.randn(6, 12, generator=g),  # fp32 row-parallel
        "blk.self_attn.o_proj.bias": torch.randn(6, generator=g),
        "blk.self_attn.q_proj.weight": torch.randn(8, 3, generator=g).to(torch.float16),
        "blk.self_attn.q_proj.bias": torch.randn(8, generator=g).to(torch.float16),
        "blk.mlp.down_proj.weight": torch.randn(2, 4, 6, generator=g).to(torch.bfloat16),  # 3-D: dim 1 strided
        "scale": torch.tensor(0.5),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    for world in (1, 2):
        for strided in STRIDED_MODES:
            for rank in range(world):
                plan = rank_plan(path, rank, world, strided)
                got = plan.finish({r.name: file_bytes(r) for r in plan.reads})
                for s in plan.slices:
                    full = tensors[s.name]
                    want = full if s.dim is None else torch.chunk(full, world, s.dim)[rank]
                    assert same_bytes(got[s.name], want), (s.name, world, rank, strided)


def test_non_dividing_world_is_a_clear_error(llama, tmp_path):
    ckpt, _ = llama
    with pytest.raises(PlanError) as info:
        rank_plan(ckpt, 0, 3)
    message = str(info.value)
    assert isinstance(info.value, GdslabError)
    assert "not divisible by 3" in message and "model.embed_tokens.weight" in message
    assert str(ckpt["model.embed_tokens.weight"].file) in message
    assert str(list(ckpt["model.embed_tokens.weight"].shape)) in message

    save_file({"l.self_attn.o_proj.weight": torch.ones(4, 6)}, str(tmp_path / "m.safetensors"))
    with pytest.raises(PlanError, match=r"'l.self_attn.o_proj.weight' of shape \[4, 6\].*split 4 ways on dim 1"):
        rank_plan(tmp_path / "m.safetensors", 0, 4)


def test_bad_arguments(llama):
    ckpt, _ = llama
    with pytest.raises(ValueError, match="rank must be in 0..1"):
        rank_plan(ckpt, 2, 2)
    with pytest.raises(ValueError, match="positive integer"):
        rank_plan(ckpt, 0, 0)
    with pytest.raises(ValueError, match="strided must be one of"):
        rank_plan(ckpt, 0, 2, strided="columns")
    with pytest.raises(ValueError, match="rank must be"):
        tensor_slice(ckpt.tensors[0], -1, 2)
    assert DEFAULT_STRIDED in STRIDED_MODES


@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
def test_share_partition_covers_every_tensor_once_in_order(llama, world):
    ckpt, _ = llama
    groups = share_partition(ckpt, world)
    assert len(groups) == world
    assert [e for g in groups for e in g] == list(ckpt.tensors)  # contiguous, in file order
    biggest = max(e.nbytes for e in ckpt.tensors)
    for g in groups:
        assert sum(e.nbytes for e in g) <= math.ceil(ckpt.nbytes / world) + biggest


def test_sub_byte_dtype_whole_or_clear_error(tmp_path):
    """F4 (two weights a byte) reads whole at world 1 and replicated; a split is refused by name."""
    import json
    import struct

    header = {"l.self_attn.q_proj.weight": {"dtype": "F4", "shape": [4, 8], "data_offsets": [0, 16]},
              "l.input_layernorm.weight": {"dtype": "F4", "shape": [8], "data_offsets": [16, 20]}}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path = tmp_path / "f4.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(range(20)))
    whole = rank_plan(path, 0, 1)
    assert [r.runs for r in whole.reads] == [((8 + len(raw), 16),), ((8 + len(raw) + 16, 4),)]
    assert whole.owned_nbytes == 20
    with pytest.raises(PlanError, match=r"'l.self_attn.q_proj.weight' has 4-bit elements \(F4\)"):
        rank_plan(path, 0, 2)


# Every rank of every shape, 1-D to 4-D, column- and row-parallel, against torch.chunk (both strided modes).
SHAPED = {
    "model.layers.0.self_attn.q_proj.bias": (16,),                 # column, 1-D
    "model.layers.0.self_attn.q_proj.weight": (16, 24),            # column, 2-D
    "model.layers.0.mlp.gate_proj.weight": (8, 6, 5),              # column, 3-D
    "model.layers.0.mlp.up_proj.weight": (8, 3, 4, 2),             # column, 4-D
    "model.layers.0.self_attn.o_proj.weight": (24, 16),            # row, 2-D
    "model.layers.0.mlp.down_proj.weight": (5, 8, 3),              # row, 3-D
    "model.layers.1.self_attn.o_proj.weight": (3, 8, 2, 5),        # row, 4-D
    "model.layers.0.self_attn.o_proj.bias": (7,),                  # row, 1-D: replicated
    "model.layers.0.mlp.down_proj.weight_scale": (5, 1),           # a row-parallel weight's scale: replicated
    "model.layers.0.mlp.gate_proj.weight_scale": (8, 1),           # a column-parallel weight's scale: split
}


@pytest.fixture(scope="module")
def shaped(tmp_path_factory):
    g = torch.Generator().manual_seed(9)
    tensors = {name: torch.randn(shape, generator=g).to(torch.bfloat16) for name, shape in SHAPED.items()}
    path = tmp_path_factory.mktemp("shaped") / "model.safetensors"
    save_file(tensors, str(path))
    return Checkpoint.open(path), tensors


@pytest.mark.parametrize("world", [1, 2, 4, 8])
@pytest.mark.parametrize("strided", STRIDED_MODES)
def test_every_shape_every_rank_equals_torch_chunk(shaped, world, strided):
    ckpt, full = shaped
    for rank in range(world):
        plan = rank_plan(ckpt, rank, world, strided)
        got = plan.finish({r.name: file_bytes(r) for r in plan.reads})
        for name, tensor in full.items():
            kind, dim = split_kind(name, tensor.dim())
            want = tensor if dim is None else torch.chunk(tensor, world, dim)[rank]
            assert same_bytes(got[name], want), (name, list(tensor.shape), world, rank, strided)
            assert (kind, dim) != ("row", 1) or tensor.dim() >= 2


def test_scales_follow_their_weights():
    assert split_kind("model.layers.3.mlp.gate_proj.weight_scale", 2) == ("column", 0)
    assert split_kind("model.layers.3.mlp.down_proj.weight_scale", 2) == ("replicated", None)
    assert split_kind("model.layers.3.self_attn.o_proj.weight_scale", 2) == ("replicated", None)
