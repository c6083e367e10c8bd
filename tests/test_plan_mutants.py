"""gdslab.plan at the edges mutmut found unchecked (issue #29), each against a hand computation or torch.

What tests/test_plan.py does not pin: `RankPlan.summary` (every figure, worked out by hand from a
five-tensor plan), the plan's own fields and cuts, world 3 (whose middle rank's slice starts and
ends symmetrically), row-parallel tensors of two rows and of one-byte runs, empty and one-element
tensors, 1-D scales and vocabulary biases, `share_partition` at exact group boundaries and on empty
tensors, argument checks on bools and floats, and the path/reason of a `PlanError`. Bytes are
compared with `torch.chunk` of the tensor that `safetensors` wrote; runs and sizes are literals.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_plan import file_bytes

from gdslab.checkpoint import Checkpoint, TensorEntry
from gdslab.plan import (
    PlanError, Slice, Unspan, rank_plan, rank_reads, share_partition, slice_runs, split_kind, tensor_slice,
)

EMBED = "model.embed_tokens.weight"
NORM = "model.layers.0.input_layernorm.weight"
Q = "model.layers.0.self_attn.q_proj.weight"
O = "model.layers.0.self_attn.o_proj.weight"
DOWN = "model.layers.0.mlp.down_proj.weight"


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.contiguous(), b.contiguous())


def save(tmp_path: Path, tensors: dict[str, torch.Tensor], name: str = "model.safetensors") -> Path:
    path = tmp_path / name
    save_file(tensors, str(path))
    return path


@pytest.fixture
def small(tmp_path):
    """Five fp32 tensors, one of each kind and two row-parallel ones (one of only two rows)."""
    g = torch.Generator().manual_seed(29)
    tensors = {
        EMBED: torch.randn(4, 2, generator=g),   # vocab, 32 bytes
        NORM: torch.randn(4, generator=g),       # replicated, 16 bytes
        Q: torch.randn(4, 3, generator=g),       # column, 48 bytes
        O: torch.randn(3, 4, generator=g),       # row, 48 bytes
        DOWN: torch.randn(2, 6, generator=g),    # row, 48 bytes, two rows
    }
    path = save(tmp_path, tensors)
    return Checkpoint.open(path), tensors


# --- RankPlan.summary and the plan's fields ------------------------------------------------------

def test_summary_of_a_span_plan_by_hand(small):
    ckpt, _ = small
    plan = rank_plan(ckpt, 1, 2, "span", "split")
    assert (plan.rank, plan.world, plan.strided, plan.vocab) == (1, 2, "span", "split")
    summary = plan.summary()
    # owned: embed rows 2:4 = 16, norm 16, q rows 2:4 = 24, o cols 2:4 = 3*2*4 = 24, down cols 3:6 = 2*3*4 = 24
    # read: o spans (3-1)*16 + 8 = 40 bytes, down (2-1)*24 + 12 = 36; one run each; o and down are cut
    assert summary == {"rank": 1, "world": 2, "strided": "span", "vocab": "split", "tensors": 5,
                       "column_tensors": 1, "replicated_tensors": 1, "row_tensors": 2, "vocab_tensors": 1,
                       "owned_nbytes": 104, "read_nbytes": 132, "runs": 5, "cuts": 2}
    assert list(summary) == ["rank", "world", "strided", "vocab", "tensors", "column_tensors",
                             "replicated_tensors", "row_tensors", "vocab_tensors", "owned_nbytes",
                             "read_nbytes", "runs", "cuts"]


def test_summary_of_a_rows_plan_with_replicated_vocab_by_hand(small):
    ckpt, _ = small
    plan = rank_plan(ckpt, 0, 2, "rows", "replicate")
    assert (plan.rank, plan.world, plan.strided, plan.vocab) == (0, 2, "rows", "replicate")
    # embed whole 32, norm 16, q 24 (1 run each); o 3 runs of 8 = 24, down 2 runs of 12 = 24; nothing to cut
    assert plan.summary() == {"rank": 0, "world": 2, "strided": "rows", "vocab": "replicate", "tensors": 5,
                              "column_tensors": 1, "replicated_tensors": 2, "row_tensors": 2,
                              "owned_nbytes": 120, "read_nbytes": 120, "runs": 8, "cuts": 0}


def test_two_row_tensor_is_read_as_one_span_and_cut(small):
    ckpt, full = small
    plan = rank_plan(ckpt, 1, 2, "span")
    reads = {r.name: r for r in plan.reads}
    down = ckpt[DOWN]
    # (2, 6) fp32, cols 3:6: two blocks of 12 bytes, 24 apart, from byte 12 of the tensor
    assert reads[DOWN].runs == ((down.offset + 12, 36),)
    assert reads[DOWN].shape == (9,)
    assert plan.post[DOWN] == Unspan(DOWN, (2, 3), 2, 6, 3)
    assert plan.post[O] == Unspan(O, (3, 2), 3, 4, 2)
    assert same(plan.finish({r.name: file_bytes(r) for r in plan.reads})[DOWN], torch.chunk(full[DOWN], 2, 1)[1])


def test_rank_reads_passes_the_vocab_policy_on(small):
    ckpt, full = small
    split = {r.name: r for r in rank_reads(ckpt, 1, 2, "rows")}
    whole = {r.name: r for r in rank_reads(ckpt, 1, 2, "rows", vocab="replicate")}
    embed = ckpt[EMBED]
    assert split[EMBED].runs == ((embed.offset + 16, 16),)
    assert whole[EMBED].runs == ((embed.offset, 32),)
    assert same(file_bytes(whole[EMBED]), full[EMBED])


# --- world 3, whose middle rank's start + stop equals the dimension ------------------------------

@pytest.mark.parametrize("strided", ["rows", "span"])
def test_world_three_every_rank_equals_torch_chunk(tmp_path, strided):
    g = torch.Generator().manual_seed(3)
    tensors = {Q: torch.randn(6, 2, generator=g), O: torch.randn(2, 6, generator=g)}
    ckpt = Checkpoint.open(save(tmp_path, tensors))
    for rank in range(3):
        plan = rank_plan(ckpt, rank, 3, strided)
        got = plan.finish({r.name: file_bytes(r) for r in plan.reads})
        assert same(got[Q], torch.chunk(tensors[Q], 3, 0)[rank]), (rank, strided)
        assert same(got[O], torch.chunk(tensors[O], 3, 1)[rank]), (rank, strided)
    middle = {r.name: r.runs for r in rank_plan(ckpt, 1, 3, strided).reads}
    q, o = ckpt[Q].offset, ckpt[O].offset
    assert middle[Q] == ((q + 16, 16),)  # rows 2:4 of (6, 2) fp32
    # cols 2:4 of (2, 6) fp32: 8 bytes from byte 8 of each 24-byte row
    assert middle[O] == (((o + 8, 8), (o + 32, 8)) if strided == "rows" else ((o + 8, 32),))


# --- one-byte runs, empty and one-element tensors ------------------------------------------------

def test_row_slice_of_one_byte_per_row(tmp_path):
    full = torch.arange(6, dtype=torch.uint8).reshape(3, 2) + 7
    ckpt = Checkpoint.open(save(tmp_path, {O: full}))
    o = ckpt[O].offset
    span = rank_plan(ckpt, 1, 2, "span")
    assert span.reads[0].runs == ((o + 1, 5),)  # (3-1)*2 + 1 bytes
    assert span.post == {O: Unspan(O, (3, 1), 3, 2, 1)}
    rows = rank_plan(ckpt, 1, 2, "rows")
    assert rows.reads[0].runs == ((o + 1, 1), (o + 3, 1), (o + 5, 1))
    for plan in (span, rows):
        got = plan.finish({r.name: file_bytes(r) for r in plan.reads})
        assert same(got[O], torch.chunk(full, 2, 1)[1])


def test_empty_tensors_read_one_zero_byte_run(tmp_path):
    tensors = {O: torch.zeros(0, 4), NORM: torch.zeros(0)}
    ckpt = Checkpoint.open(save(tmp_path, tensors))
    for world, rank in ((1, 0), (2, 0), (2, 1)):
        for strided in ("rows", "span"):
            plan = rank_plan(ckpt, rank, world, strided)
            reads = {r.name: r for r in plan.reads}
            assert reads[O].runs == ((ckpt[O].offset, 0),), (world, rank, strided)
            assert reads[O].shape == (0, 4 // world)
            assert reads[NORM].runs == ((ckpt[NORM].offset, 0),)
            assert plan.read_nbytes == 0 and not plan.post


def test_one_element_tensors_know_their_itemsize(tmp_path):
    path = save(tmp_path, {"l.self_attn.q_proj.bias": torch.ones(1), "scale": torch.tensor(0.5)})
    ckpt = Checkpoint.open(path)
    for entry in ckpt.tensors:
        assert tensor_slice(entry, 0, 1).itemsize == 4, entry.name


def test_slice_runs_at_file_offset_zero(tmp_path):
    """A tensor stored raw at byte 0 (no header): two 2-byte runs per rank, 4 apart, never merged."""
    full = torch.arange(8, dtype=torch.uint8).reshape(2, 4) + 1
    path = tmp_path / "raw.bin"
    path.write_bytes(full.numpy().tobytes())
    entry = TensorEntry("l.self_attn.o_proj.weight", path, 0, 8, "U8", (2, 4))
    for rank, want in ((0, [(0, 2), (4, 2)]), (1, [(2, 2), (6, 2)])):
        s = tensor_slice(entry, rank, 2)
        runs = slice_runs(entry, s, 1)
        assert runs == want
        data = b"".join(path.read_bytes()[a:a + n] for a, n in runs)
        assert data == torch.chunk(full, 2, 1)[rank].contiguous().numpy().tobytes()


# --- tensor_slice's record, split_kind at ndim 1 ---------------------------------------------------

def test_tensor_slice_records(small):
    ckpt, _ = small
    q, norm, embed = ckpt[Q], ckpt[NORM], ckpt[EMBED]
    assert tensor_slice(q, 0, 1) == Slice(Q, q.file, "column", (4, 3), 0, 0, 4, 4, 48)
    assert tensor_slice(q, 1, 2) == Slice(Q, q.file, "column", (4, 3), 0, 2, 4, 4, 48)
    s = tensor_slice(norm, 1, 2)
    assert (s.name, s.file, s.kind, s.shape, s.dim, s.start, s.itemsize, s.nbytes) == \
        (NORM, norm.file, "replicated", (4,), None, 0, 4, 16)
    # the default vocab policy is "split"
    assert tensor_slice(embed, 1, 2) == Slice(EMBED, embed.file, "vocab", (4, 2), 0, 2, 4, 4, 32)


def test_split_kind_of_one_dimensional_scales_and_vocab_biases():
    assert split_kind("model.layers.0.self_attn.q_proj.weight_scale", 1) == ("column", 0)
    assert split_kind("model.layers.0.self_attn.q_proj.weight_scale", 0) == ("replicated", None)
    assert split_kind("model.layers.0.self_attn.o_proj.weight_scale", 1) == ("replicated", None)
    assert split_kind("lm_head.bias", 1) == ("vocab", 0)
    assert split_kind("model.embed_tokens.weight", 1) == ("vocab", 0)
    assert split_kind("model.embed_tokens.weight", 0) == ("replicated", None)
    assert split_kind("lm_head.bias", 1, vocab="replicate") == ("replicated", None)


# --- argument checks and errors -----------------------------------------------------------------

def test_world_and_rank_must_be_true_ints(small):
    ckpt, _ = small
    for world in (True, 2.0, "2"):
        with pytest.raises(ValueError, match="world .* must be a positive integer"):
            rank_plan(ckpt, 0, world)
        with pytest.raises(ValueError, match="positive integer"):
            share_partition(ckpt, world)
    for rank in (True, 1.0, "1"):
        with pytest.raises(ValueError, match="rank must be in 0..1 for world 2"):
            tensor_slice(ckpt[Q], rank, 2)
        with pytest.raises(ValueError, match="rank must be in 0..1"):
            rank_plan(ckpt, rank, 2)


def test_plan_error_names_its_file_and_reason(tmp_path):
    header = {"l.self_attn.q_proj.weight": {"dtype": "F4", "shape": [4, 8], "data_offsets": [0, 16]}}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path = tmp_path / "f4.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(range(16)))
    with pytest.raises(PlanError) as info:
        rank_plan(path, 0, 2)
    err = info.value
    assert err.path == path
    assert err.reason.startswith("tensor 'l.self_attn.q_proj.weight' has 4-bit elements (F4)")
    assert "not byte-addressable" in err.reason
    assert str(err) == f"{path}: {err.reason}"

    bare = PlanError(None, "no file to name")
    assert bare.path is None and bare.reason == "no file to name" and str(bare) == "no file to name"


# --- share_partition at exact boundaries -----------------------------------------------------------

def u8(*sizes: int) -> dict[str, torch.Tensor]:
    """Tensors a, b, c, ... of these byte sizes (U8), in that file order."""
    return {chr(ord("a") + i): torch.full((n,), i + 1, dtype=torch.uint8) for i, n in enumerate(sizes)}


def names(groups) -> list[list[str]]:
    return [[e.name for e in g] for g in groups]


def test_share_partition_midpoint_below_a_boundary_stays(tmp_path):
    # total 8, world 2: boundary at byte 4; midpoints 1, 3, 6 -> b (3) stays in group 0
    path = save(tmp_path, u8(2, 2, 4))
    assert [e.name for e in Checkpoint.open(path).tensors] == ["a", "b", "c"]
    assert names(share_partition(str(path), 2)) == [["a", "b"], ["c"]]
    assert names(share_partition(path, 2)) == [["a", "b"], ["c"]]


def test_share_partition_midpoint_on_a_boundary_goes_up(tmp_path):
    # total 8, world 2: midpoints 1.5, 4, 6.5 -> b's midpoint is the boundary, [4, 8) is group 1
    path = save(tmp_path, u8(3, 2, 3))
    assert names(share_partition(Checkpoint.open(path), 2)) == [["a"], ["b", "c"]]
    # total 8, world 4: boundaries 2, 4, 6; midpoints 1.5, 4, 6.5 -> groups 0, 2, 3
    assert names(share_partition(path, 4)) == [["a"], [], ["b"], ["c"]]


def test_share_partition_empty_last_tensor_goes_to_the_last_group(tmp_path):
    # a, b, then an empty z at byte 4 = total: its midpoint is the end, kept in group world-1
    path = save(tmp_path, {"a": torch.ones(2, dtype=torch.uint8), "b": torch.ones(2, dtype=torch.uint8),
                           "z": torch.zeros(0, dtype=torch.uint8)})
    assert [e.name for e in Checkpoint.open(path).tensors] == ["a", "b", "z"]
    assert names(share_partition(path, 2)) == [["a"], ["b", "z"]]


def test_share_partition_of_zero_bytes_puts_all_in_group_zero(tmp_path):
    path = save(tmp_path, {"a": torch.zeros(0, dtype=torch.uint8), "b": torch.zeros(0, 4, dtype=torch.uint8)})
    ckpt = Checkpoint.open(path)
    assert ckpt.nbytes == 0
    assert sorted(sum(names(share_partition(ckpt, 2)), [])) == ["a", "b"]
    assert [len(g) for g in share_partition(ckpt, 2)] == [2, 0]
    assert [len(g) for g in share_partition(ckpt, 1)] == [2]
