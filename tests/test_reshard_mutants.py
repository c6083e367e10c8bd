"""Reshard's edges the older tests left open (issue #29): FP8 row scales block by block, a zero-row
weight, `rank_plan_of`'s plan of a pre-sharded rank, `rank_checkpoint`'s rank bound and message,
and `PreshardedSet.summary()`'s exact text.

Oracles: a tiny source (a few hundred bytes) written with safetensors' save_file; scales computed
here from the safetensors-loaded tensor (amax of |row| / 448, E4M3's largest finite value, 1 for an
all-zero row); each rank file's tensors compared with torch.chunk of the source tensors; sizes and
manifest fields as literals (every size here is under 1 KiB, so it prints as "<n> B").
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from gdslab.checkpoint import Checkpoint
from gdslab.errors import LoadError
from gdslab.plan import Slice
from gdslab.reshard import PreshardedSet, ReshardError, is_preshard, open_set, rank_plan_of, reshard

rs = importlib.import_module("gdslab.reshard")  # the module (gdslab.reshard the attribute is the function)

# --- _row_scales: per output row, read a bounded block of rows at a time -----------------------------


def expected_scales(t: torch.Tensor) -> torch.Tensor:
    amax = t.float().reshape(t.shape[0], -1).abs().amax(dim=1, keepdim=True)
    return torch.where(amax > 0, amax / 448.0, torch.ones_like(amax))


def weight_entry(tmp_path, tensor):
    path = tmp_path / "w.safetensors"
    # a tensor before the weight, so the weight's offset is not the data start
    save_file({"a": torch.arange(6, dtype=torch.float32), "w": tensor}, str(path))
    return Checkpoint.open(path)["w"], load_file(str(path))["w"]


@pytest.mark.parametrize("block_rows", [1, 2, 3, 5, 100])
def test_row_scales_every_block_size_with_bounded_reads(tmp_path, monkeypatch, block_rows):
    g = torch.Generator().manual_seed(7)
    w = torch.randn(5, 4, generator=g) * torch.arange(1, 6).reshape(5, 1)  # rows of distinct amax
    w[2] = 0  # an all-zero row: scale 1
    entry, ref = weight_entry(tmp_path, w)
    row_bytes = 4 * 4
    monkeypatch.setattr(rs, "_BLOCK", block_rows * row_bytes)
    sizes = []
    real_read = rs._read

    def recording_read(read):
        sizes.append(read.nbytes)
        return real_read(read)

    monkeypatch.setattr(rs, "_read", recording_read)
    scales = rs._row_scales(entry)
    assert scales.shape == (5, 1) and scales.dtype == torch.float32
    assert torch.equal(scales, expected_scales(ref))
    assert scales[2].item() == 1.0
    assert max(sizes) <= block_rows * row_bytes  # a block is at most _BLOCK bytes
    assert sum(sizes) == 5 * row_bytes  # every row read once, nothing past the tensor


def test_row_scales_of_a_zero_row_weight_is_an_empty_column(tmp_path):
    entry, _ = weight_entry(tmp_path, torch.zeros(0, 4, dtype=torch.bfloat16))
    scales = rs._row_scales(entry)
    assert scales.shape == (0, 1) and scales.dtype == torch.float32


# --- a tiny pre-sharded set -----------------------------------------------------------------------


def tiny_source(folder):
    """A Llama-shaped source of 400 bytes: vocabulary 8, hidden 4, one layer (F32)."""
    g = torch.Generator().manual_seed(3)
    tensors = {
        "model.embed_tokens.weight": torch.randn(8, 4, generator=g),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(4, 4, generator=g),
        "model.layers.0.self_attn.o_proj.weight": torch.randn(4, 4, generator=g),
        "model.norm.weight": torch.randn(4, generator=g),
        "lm_head.weight": torch.randn(8, 4, generator=g),
    }
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "model.safetensors"))
    return tensors


def expected_part(name, full, rank, tp, vocab):
    if name.endswith("o_proj.weight"):
        return torch.chunk(full, tp, dim=1)[rank]
    if name.endswith("norm.weight") or (vocab == "replicate" and "embed" in name or
                                         vocab == "replicate" and "lm_head" in name):
        return full
    return torch.chunk(full, tp, dim=0)[rank]


@pytest.fixture(params=["split", "replicate"])
def tiny_set(request, tmp_path):
    full = tiny_source(tmp_path / "src")
    pset = reshard(tmp_path / "src", tmp_path / "set", 2, vocab=request.param, progress=False)
    return pset, full, request.param, tmp_path


def test_rank_plan_of_reads_each_rank_file_whole(tiny_set):
    pset, full, vocab, tmp_path = tiny_set
    for rank in (0, 1):
        ckpt, plan = rank_plan_of(pset, rank)
        path = tmp_path / "set" / f"model-rank-{rank}-part-0.safetensors"
        on_disk = load_file(str(path))
        assert set(on_disk) == set(full)
        for name, t in on_disk.items():
            assert torch.equal(t, expected_part(name, full[name], rank, 2, vocab)), (rank, name)
        assert (plan.rank, plan.world, plan.strided, plan.vocab) == (rank, 2, "presharded", vocab)
        assert [s.name for s in plan.slices] == [e.name for e in ckpt.tensors]
        for s in plan.slices:
            t = on_disk[s.name]
            assert s == Slice(s.name, path, "presharded", tuple(t.shape), None, 0, 0, 0, t.numel() * 4)
        assert [(r.name, r.file, r.runs) for r in plan.reads] == \
            [(e.name, path, ((e.offset, e.nbytes),)) for e in ckpt.tensors]
        assert plan.post == {}


def test_rank_plan_of_a_manifest_without_vocab_defaults_to_split(tiny_set):
    pset, _, _, _ = tiny_set
    bare = PreshardedSet(pset.root, {k: v for k, v in pset.manifest.items() if k != "vocab"})
    assert rank_plan_of(bare, 1)[1].vocab == "split"


@pytest.mark.parametrize("rank", [-1, 2, 3])
def test_rank_checkpoint_refuses_a_rank_outside_the_set(tiny_set, rank):
    pset, _, _, _ = tiny_set
    with pytest.raises(ValueError, match=re.escape(f"rank must be in 0..1 for this set of TP 2, got {rank}")):
        pset.rank_checkpoint(rank)
    assert len(pset.rank_checkpoint(1).tensors) == 5  # the last rank is in range


def test_summary_exact_text(tiny_set):
    pset, _, vocab, tmp_path = tiny_set
    # rank bytes: split: embed 64 + q 32 + o 32 + norm 16 + lm_head 64 = 208; replicate: 128 + 32 + 32 + 16 + 128 = 336
    per_rank = 208 if vocab == "split" else 336
    tail = (f", {2 * per_rank} B in 2 file(s); source 400 B at {tmp_path / 'src'}\n"
            f"  rank 0: {per_rank} B in 1 file(s)\n  rank 1: {per_rank} B in 1 file(s)")
    assert pset.summary() == f"{pset.root}: pre-sharded for TP 2" + tail
    fp8_set = PreshardedSet(pset.root, {**pset.manifest, "dtype": "fp8_e4m3"})
    assert fp8_set.summary() == f"{pset.root}: pre-sharded for TP 2 (FP8 E4M3, per-channel scales)" + tail


# --- open_set: a manifest that cannot be this set's is refused, naming it and why ------------------------


def rewrite_manifest(root, change):
    path = root / "gdslab-preshard.json"
    manifest = json.loads(path.read_text())
    path.write_text(change(manifest) if callable(change) else change)
    return path


@pytest.mark.parametrize("text", ["{not json", ""])
def test_open_set_refuses_an_unreadable_manifest(tiny_set, text):
    pset, _, _, _ = tiny_set
    path = rewrite_manifest(pset.root, text)
    with pytest.raises(ReshardError) as caught:
        open_set(pset.root)
    assert caught.value.path == path
    assert caught.value.reason.startswith("unreadable manifest: ")


@pytest.mark.parametrize("change", [
    lambda m: json.dumps({**m, "format": "other"}),             # right version, wrong format
    lambda m: json.dumps({**m, "version": 2}),                  # right format, wrong version
    lambda m: json.dumps([m]),                                  # not an object at all
])
def test_open_set_refuses_a_manifest_of_another_format_or_version(tiny_set, change):
    pset, _, _, _ = tiny_set
    path = rewrite_manifest(pset.root, change)
    with pytest.raises(ReshardError) as caught:
        open_set(pset.root)
    assert (caught.value.path, caught.value.reason) == (path, "not a gdslab-preshard v1 manifest")


@pytest.mark.parametrize("change", [
    lambda m: json.dumps({**m, "tp": 3}),                                  # two ranks listed for TP 3
    lambda m: json.dumps({**m, "ranks": m["ranks"][::-1]}),                # both ranks, out of order
    lambda m: json.dumps({**m, "ranks": {"0": m["ranks"][0]}}),            # not a list
])
def test_open_set_refuses_ranks_that_do_not_match_the_tp_degree(tiny_set, change):
    pset, _, _, _ = tiny_set
    path = rewrite_manifest(pset.root, change)
    with pytest.raises(ReshardError) as caught:
        open_set(pset.root)
    assert (caught.value.path, caught.value.reason) == (path, "the manifest's ranks do not match its TP degree")


def test_is_preshard_only_for_a_folder_with_a_manifest_or_rank_files(tiny_set, tmp_path):
    pset, _, _, _ = tiny_set
    assert is_preshard(pset.root)
    rank_file = pset.root / "model-rank-0-part-0.safetensors"
    assert not is_preshard(rank_file)              # a rank file itself is not a set
    assert not is_preshard(tmp_path / "missing")   # nor is a path that does not exist
    (tmp_path / "empty").mkdir()
    assert not is_preshard(tmp_path / "empty")


def test_the_manifest_records_each_source_file_with_its_size_on_disk(tiny_set):
    pset, _, _, tmp_path = tiny_set
    source = tmp_path / "src" / "model.safetensors"
    recorded = json.loads((pset.root / "gdslab-preshard.json").read_text())["source"]
    assert recorded["files"] == [{"name": "model.safetensors", "size": os.path.getsize(source)}]


# --- where a set may be written -------------------------------------------------------------------------


def test_reshard_makes_missing_parent_folders_and_refuses_a_file_as_destination(tmp_path):
    tiny_source(tmp_path / "src")
    deep = tmp_path / "a" / "b" / "set"
    assert reshard(tmp_path / "src", deep, 2, progress=False).root == deep
    assert (deep / "gdslab-preshard.json").is_file()
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ReshardError) as caught:
        reshard(tmp_path / "src", tmp_path / "file", 2, progress=False)
    assert (caught.value.path, caught.value.reason) == (tmp_path / "file", "exists and is not a folder")
    assert (tmp_path / "file").read_text() == "not a folder"  # nothing lost


# --- header_hash: sha256 of the 8-byte length word and the header it announces ----------------------------


def test_header_hash_covers_the_length_word_and_the_header_only(tiny_set):
    pset, _, _, _ = tiny_set
    path = pset.root / "model-rank-0-part-0.safetensors"
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    assert len(data) > 8 + n  # tensor data follows: it must not be hashed
    assert rs.header_hash(path) == hashlib.sha256(data[:8 + n]).hexdigest()


def test_header_hash_of_a_file_shorter_than_its_length_word(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"abc")
    assert rs.header_hash(path) == hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize("announced", [100_000_001, 2**64 - 1])  # one over the limit; the largest unsigned word
def test_header_hash_reads_at_most_100_mb_of_header(tmp_path, announced):
    # safetensors refuses headers over 100,000,000 bytes; a length word announcing more is read that far only
    path = tmp_path / "huge-header"
    limit = 100_000_000
    with open(path, "wb") as f:
        f.write(announced.to_bytes(8, "little") + b"{")
        f.truncate(8 + limit + 2)  # sparse: zeros on read, no disk used
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(8 + limit))
    assert rs.header_hash(path) == digest.hexdigest()


# --- open_set: each refusal's exact reason, rank files it does not list, and checking only some ranks ----


def test_a_rank_file_cut_short_or_from_another_set_is_named_with_the_exact_reason(tmp_path):
    tiny_source(tmp_path / "src")
    pset = reshard(tmp_path / "src", tmp_path / "set", 2, progress=False)
    victim = pset.root / "model-rank-1-part-0.safetensors"
    data = victim.read_bytes()
    victim.write_bytes(data[:-4])
    with pytest.raises(ReshardError) as caught:
        open_set(pset.root)
    assert (caught.value.path, caught.value.reason) == (
        victim, f"{len(data) - 4} bytes, the manifest says {len(data)}: changed or cut short since the reshard")
    other = reshard(tmp_path / "src", tmp_path / "other", 2, vocab="replicate", progress=False)
    foreign = (other.root / "model-rank-1-part-0.safetensors").read_bytes()
    victim.write_bytes(foreign[:len(data)].ljust(len(data), b"\0"))  # the right size, another set's header
    with pytest.raises(ReshardError) as caught:
        open_set(pset.root)
    assert (caught.value.path, caught.value.reason) == (
        victim, "its header differs from the one the manifest recorded: not this set's file")


def test_rank_files_the_manifest_does_not_list_are_refused_naming_the_first(tiny_set):
    pset, _, _, _ = tiny_set
    source = (pset.root / "model-rank-0-part-0.safetensors").read_bytes()
    for stray in ("model-rank-7-part-0.safetensors", "model-rank-3-part-0.safetensors"):
        (pset.root / stray).write_bytes(source)
    with pytest.raises(ReshardError) as caught:
        open_set(pset.root)
    assert (caught.value.path, caught.value.reason) == (
        pset.root / "model-rank-3-part-0.safetensors", "a rank file the manifest does not list (from another reshard?)")
    assert open_set(pset.root, ranks=[0]).manifest["tp"] == 2  # a rank's own check ignores other files


def test_open_set_with_ranks_checks_only_those_ranks_files(tiny_set):
    pset, _, _, _ = tiny_set
    victim = pset.root / "model-rank-1-part-0.safetensors"
    victim.write_bytes(victim.read_bytes()[:-4])
    assert open_set(pset.root, ranks=[0]).root == pset.root        # rank 1's file is never touched
    for ranks in ([1], [0, 1], None):
        with pytest.raises(ReshardError, match="cut short"):
            open_set(pset.root, ranks=ranks)


# --- _read: a zero-element tensor keeps its dtype and shape; a short source read names the file -----------


def test_a_zero_element_tensor_keeps_its_dtype_and_shape_on_every_rank(tmp_path):
    (tmp_path / "src").mkdir()
    tensors = {"model.norm.weight": torch.ones(4, dtype=torch.bfloat16), "model.empty": torch.ones(0, dtype=torch.bfloat16)}
    save_file(tensors, str(tmp_path / "src" / "model.safetensors"))
    reshard(tmp_path / "src", tmp_path / "set", 2, progress=False)
    for rank in (0, 1):
        empty = load_file(str(tmp_path / "set" / f"model-rank-{rank}-part-0.safetensors"))["model.empty"]
        assert (empty.dtype, tuple(empty.shape)) == (torch.bfloat16, (0,))


def test_a_source_cut_short_after_its_header_was_read_is_named(tmp_path):
    tiny_source(tmp_path / "src")
    source = tmp_path / "src" / "model.safetensors"
    ckpt = Checkpoint.open(source)  # the header is read now; the data is cut short after
    os.truncate(source, os.path.getsize(source) - 8)
    with pytest.raises(LoadError) as caught:
        reshard(ckpt, tmp_path / "set", 2, progress=False)
    assert caught.value.path == source and caught.value.reason.startswith("truncated: ")
