"""`reshard()`'s public contract, edge by edge (issue #29: mutmut survivors in gdslab/reshard).

The older tests check that a set holds the right slices; these check what they left open:
each refusal's exact type, path and text (dtype, vocab, tp, max_file_size, a destination in the
source, a non-float weight asked to be FP8) and that a refusal writes nothing; how tensors are
grouped into files at exact size boundaries (a file exactly `max_file_size`, one byte over, a
tensor bigger than the limit alone, a rank with nothing to write); which entries `force=True`
treats as a set's own (manifest, rank files, `*.safetensors.partial`), the foreign one it names,
and the manifest going first; every manifest field and each file's metadata; the progress bar
(bytes, binary units, on by default); the 5 GiB default; a failure at any step leaving nothing.

Oracles: tiny sources (a few hundred bytes) written with safetensors' save_file; tensor order read
from the safetensors header here (its data offsets); expected slices by torch.chunk; FP8 as the
convention's arithmetic done here (amax of the full row / 448, 1 for an all-zero row, round to
E4M3 by torch); sizes, hashes and file lists from os, hashlib and safetensors; groupings and byte
counts worked out by hand in the comments.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from gdslab import writer as writer_module
from gdslab.checkpoint import Checkpoint
from gdslab.reshard import ReshardError, open_set, reshard
from test_reshard_mutants import tiny_source

rs = importlib.import_module("gdslab.reshard")  # the module (gdslab.reshard the attribute is the function)

MANIFEST = "gdslab-preshard.json"
LAYOUT = "vLLM sharded_state file names: model-rank-{rank}-part-{part}.safetensors; HF tensor names"
PLAN = ("gdslab.plan: q/k/v/gate/up split on dim 0, o/down on dim 1, vocabulary {}, norms replicated; "
        "FP8 scales follow their weight's output rows")


def header_order(path) -> list[str]:
    """Tensor names of a safetensors file in the order of their data (its own header, read here)."""
    data = Path(path).read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    return sorted(header, key=lambda k: header[k]["data_offsets"][0])


source = tiny_source  # vocabulary 8, hidden 4, one layer, F32: lm_head 128 B, embed 128 B, o 64 B, q 64 B, norm 16 B (400 B)


LM, EMBED, O, Q, NORM = ("lm_head.weight", "model.embed_tokens.weight", "model.layers.0.self_attn.o_proj.weight",
                         "model.layers.0.self_attn.q_proj.weight", "model.norm.weight")


def expected_part(name, full, rank, tp, vocab="split"):
    if name.endswith("o_proj.weight"):
        return torch.chunk(full, tp, dim=1)[rank]
    if name.endswith("norm.weight") or (vocab == "replicate" and name in (LM, EMBED)):
        return full
    return torch.chunk(full, tp, dim=0)[rank]


def raw(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def listing(folder) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir())


class Bar:
    """Stands in for tqdm: records how reshard made and moved its progress bar."""

    made: list["Bar"] = []

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.updates, self.closed = args, kwargs, [], False
        Bar.made.append(self)

    def update(self, n=1):
        self.updates.append(n)

    def close(self):
        self.closed = True


@pytest.fixture
def bars(monkeypatch):
    import tqdm.auto

    Bar.made = []
    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    return Bar.made


# --- refusals: exact type and text, and nothing written ---------------------------------------------------


def test_an_unknown_dtype_is_refused_naming_the_choices(tmp_path):
    source(tmp_path / "src")
    with pytest.raises(ValueError) as caught:
        reshard(tmp_path / "src", tmp_path / "set", 2, dtype="bf16", progress=False)
    assert str(caught.value) == "dtype must be one of ('source', 'fp8_e4m3'), got 'bf16'"
    assert not (tmp_path / "set").exists()


def test_an_unknown_vocab_policy_is_refused_naming_the_choices(tmp_path):
    source(tmp_path / "src")
    with pytest.raises(ValueError) as caught:
        reshard(tmp_path / "src", tmp_path / "set", 2, vocab="shard", progress=False)
    assert str(caught.value) == "vocab must be one of ('split', 'replicate'), got 'shard'"
    assert not (tmp_path / "set").exists()


@pytest.mark.parametrize("tp", [0, -1, True, False, 2.0, "2", None])
def test_tp_must_be_a_positive_integer_and_not_a_bool(tmp_path, tp):
    source(tmp_path / "src")
    with pytest.raises(ValueError) as caught:
        reshard(tmp_path / "src", tmp_path / "set", tp, progress=False)
    assert str(caught.value) == f"tp (the tensor-parallel degree) must be a positive integer, got {tp!r}"
    assert not (tmp_path / "set").exists()


def test_tp_1_is_allowed_and_writes_every_tensor_whole(tmp_path):
    full = source(tmp_path / "src")
    pset = reshard(tmp_path / "src", tmp_path / "set", 1, progress=False)
    assert pset.tp == 1 and listing(tmp_path / "set") == [MANIFEST, "model-rank-0-part-0.safetensors"]
    got = load_file(str(tmp_path / "set" / "model-rank-0-part-0.safetensors"))
    assert set(got) == set(full) and all(torch.equal(got[n], full[n]) for n in full)


@pytest.mark.parametrize("size", [0, "0", "0B"])
def test_max_file_size_below_one_byte_is_refused(tmp_path, size):
    source(tmp_path / "src")
    with pytest.raises(ValueError) as caught:
        reshard(tmp_path / "src", tmp_path / "set", 2, max_file_size=size, progress=False)
    assert str(caught.value) == "max_file_size must be at least 1 byte"
    assert not (tmp_path / "set").exists()


@pytest.mark.parametrize("where", [".", "set", "a/b/set"])
def test_a_destination_in_the_source_is_refused(tmp_path, where):
    source(tmp_path / "src")
    dst = tmp_path / "src" / where
    with pytest.raises(ReshardError) as caught:
        reshard(tmp_path / "src", dst, 2, progress=False)
    assert (caught.value.path, caught.value.reason) == (dst, "the destination is inside the source checkpoint")
    assert listing(tmp_path / "src") == ["model.safetensors"]  # nothing made there


def test_a_link_to_the_source_is_the_source(tmp_path):
    source(tmp_path / "src")
    (tmp_path / "link").symlink_to(tmp_path / "src")
    with pytest.raises(ReshardError) as caught:
        reshard(tmp_path / "src", tmp_path / "link", 2, progress=False)
    assert caught.value.reason == "the destination is inside the source checkpoint"


def test_a_sibling_whose_name_starts_like_the_source_is_not_inside_it(tmp_path):
    source(tmp_path / "src")
    assert reshard(tmp_path / "src", tmp_path / "src-set", 2, progress=False).root == tmp_path / "src-set"


def fp8_source(folder, gate_dtype=torch.float32):
    """Three layers of MLP weights (gate/up 6x4, down 4x6): FP8 takes layer 1's only (not the first, not the last)."""
    g = torch.Generator().manual_seed(5)
    tensors = {}
    for layer in range(3):
        for name, shape in (("gate_proj", (6, 4)), ("up_proj", (6, 4)), ("down_proj", (4, 6))):
            t = torch.randn(*shape, generator=g) * torch.arange(1, shape[0] + 1).reshape(-1, 1)  # rows of distinct amax
            tensors[f"model.layers.{layer}.mlp.{name}.weight"] = t
    tensors["model.layers.1.mlp.up_proj.weight"][4] = 0  # an all-zero row: scale 1
    tensors["model.layers.1.mlp.gate_proj.weight"] = tensors["model.layers.1.mlp.gate_proj.weight"].to(gate_dtype)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "model.safetensors"))
    return tensors


def test_fp8_of_an_integer_weight_is_refused_naming_the_file_and_tensor(tmp_path):
    fp8_source(tmp_path / "src", torch.int32)
    with pytest.raises(ReshardError) as caught:
        reshard(tmp_path / "src", tmp_path / "set", 2, dtype="fp8_e4m3", progress=False)
    assert caught.value.path == tmp_path / "src" / "model.safetensors"
    assert caught.value.reason == ("tensor 'model.layers.1.mlp.gate_proj.weight' is I32: only bf16, fp16 or fp32 "
                                   "weights are quantized to FP8")
    assert not (tmp_path / "set").exists()
    # without FP8 the same integer tensor is only copied
    assert reshard(tmp_path / "src", tmp_path / "copy", 2, progress=False).dtype == "source"


# --- FP8: the values, the scales, the manifest and the bar -------------------------------------------------


def fp8_of(rows: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (rows.float() / scale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)


def row_scale(full: torch.Tensor) -> torch.Tensor:
    amax = full.float().abs().amax(dim=1, keepdim=True)
    return torch.where(amax > 0, amax / 448.0, torch.ones_like(amax))


def test_fp8_set_holds_each_ranks_quantized_slices_and_scales(tmp_path, bars):
    full = fp8_source(tmp_path / "src")
    pset = reshard(tmp_path / "src", tmp_path / "set", 2, dtype="fp8_e4m3")
    total = 0
    for rank in range(2):
        path = tmp_path / "set" / f"model-rank-{rank}-part-0.safetensors"
        got = load_file(str(path))
        total += sum(t.numel() * t.element_size() for t in got.values())
        with safe_open(str(path), "pt") as f:
            assert f.metadata() == {"format": "pt", "gdslab.preshard": f"rank {rank} of TP 2",
                                    "gdslab.dtype": "fp8_e4m3"}
        scales = {n for n in got if n.endswith("weight_scale")}
        assert scales == {f"model.layers.1.mlp.{p}.weight_scale" for p in ("gate_proj", "up_proj", "down_proj")}
        for name, t in full.items():
            layer, proj = int(name.split(".")[2]), name.split(".")[4]
            dim = 1 if proj == "down_proj" else 0
            part = torch.chunk(t, 2, dim=dim)[rank]
            if layer != 1:
                assert got[name].dtype == torch.float32 and torch.equal(got[name], part), name
                continue
            scale = row_scale(t)  # per output row of the whole weight
            if dim == 0:
                scale = torch.chunk(scale, 2, dim=0)[rank]  # the rank's own rows
            assert got[name].dtype == torch.float8_e4m3fn and raw(got[name]) == raw(fp8_of(part, scale)), name
            assert torch.equal(got[name[:-len("weight")] + "weight_scale"], scale), name
    assert torch.equal(load_file(str(tmp_path / "set" / "model-rank-1-part-0.safetensors"))[
        "model.layers.1.mlp.up_proj.weight_scale"][1], torch.ones(1))  # row 4 of 6 is rank 1's row 1: all zero
    manifest = pset.manifest
    assert manifest["dtype"] == "fp8_e4m3" and pset.dtype == "fp8_e4m3"
    order = header_order(tmp_path / "src" / "model.safetensors")
    assert manifest["quantization"] == {
        "quant_method": "fbgemm_fp8",
        "source": "Meta Llama 3.1 FP8 release convention (MLP weights of every layer but the first and last)",
        "weight": "float8_e4m3fn",
        "scale": "float32 per output channel, <module>.weight_scale of shape [out, 1]",
        "modules_to_not_convert": [n[:-len(".weight")] for n in order if ".layers.1." not in n] + ["lm_head"],
    }
    (bar,) = bars
    assert bar.kwargs["desc"] == "reshard TP 2 FP8" and bar.kwargs["disable"] is False  # progress on by default
    assert bar.kwargs["total"] == total == sum(bar.updates) and bar.closed


# --- files of at most max_file_size bytes --------------------------------------------------------------


# TP 1 writes whole tensors in the source's order: lm_head 128, embed 128, o 64, q 64, norm 16 bytes.
@pytest.mark.parametrize("limit, parts", [
    (400, [[LM, EMBED, O, Q, NORM]]),              # exactly the total: one file
    (399, [[LM, EMBED, O, Q], [NORM]]),            # one byte less: the last tensor moves on
    (256, [[LM, EMBED], [O, Q, NORM]]),            # a first file exactly full
    (255, [[LM], [EMBED, O], [Q, NORM]]),          # one byte short of it
    (192, [[LM], [EMBED, O], [Q, NORM]]),          # a second file exactly full (128 + 64)
    (100, [[LM], [EMBED], [O], [Q, NORM]]),        # tensors bigger than the limit go alone
    (1, [[LM], [EMBED], [O], [Q], [NORM]]),        # the smallest limit: one tensor a file
    ("1", [[LM], [EMBED], [O], [Q], [NORM]]),
])
def test_tensors_are_grouped_into_files_of_at_most_max_file_size(tmp_path, limit, parts):
    full = source(tmp_path / "src")
    assert header_order(tmp_path / "src" / "model.safetensors") == [LM, EMBED, O, Q, NORM]
    pset = reshard(tmp_path / "src", tmp_path / "set", 1, max_file_size=limit, progress=False)
    names = [f"model-rank-0-part-{i}.safetensors" for i in range(len(parts))]
    assert listing(tmp_path / "set") == sorted([MANIFEST, *names])
    assert [header_order(tmp_path / "set" / n) for n in names] == parts
    for name in names:
        assert all(torch.equal(t, full[k]) for k, t in load_file(str(tmp_path / "set" / name)).items())
    (rank,) = pset.manifest["ranks"]
    assert rank["nbytes"] == 400 and pset.nbytes == 400
    assert [f["name"] for f in rank["files"]] == names and [f["tensors"] for f in rank["files"]] == [len(p) for p in parts]
    assert pset.manifest["max_file_size"] == int(limit)


def test_a_rank_with_nothing_to_write_gets_one_empty_file(tmp_path):
    (tmp_path / "src").mkdir()
    save_file({}, str(tmp_path / "src" / "model.safetensors"))
    pset = reshard(tmp_path / "src", tmp_path / "set", 1, progress=False)
    path = tmp_path / "set" / "model-rank-0-part-0.safetensors"
    assert listing(tmp_path / "set") == [MANIFEST, path.name]
    assert load_file(str(path)) == {}
    assert pset.manifest["ranks"] == [{"rank": 0, "nbytes": 0, "files": [
        {"name": path.name, "size": os.path.getsize(path), "header_sha256": sha_of_header(path), "tensors": 0}]}]


def sha_of_header(path) -> str:
    data = Path(path).read_bytes()
    return hashlib.sha256(data[:8 + int.from_bytes(data[:8], "little")]).hexdigest()


# --- the manifest, the files' metadata, the progress bar, the defaults ----------------------------------


@pytest.mark.parametrize("vocab", ["split", "replicate"])
def test_manifest_fields_and_rank_files_in_parts(tmp_path, bars, vocab):
    full = source(tmp_path / "src")
    before = datetime.now(timezone.utc).replace(microsecond=0)
    pset = reshard(tmp_path / "src", tmp_path / "set", 2, vocab=vocab, max_file_size=100, progress=False)
    after = datetime.now(timezone.utc)
    text = (tmp_path / "set" / MANIFEST).read_text()
    manifest = json.loads(text)
    assert text == json.dumps(manifest, indent=1)  # one-space indented, for people to read
    assert pset.root == tmp_path / "set" and pset.manifest == manifest
    src_file = tmp_path / "src" / "model.safetensors"
    ranks, rank_bytes = [], []
    for rank in range(2):
        files, nbytes, names = [], 0, []
        part = 0
        while (path := tmp_path / "set" / f"model-rank-{rank}-part-{part}.safetensors").exists():
            got = load_file(str(path))
            with safe_open(str(path), "pt") as f:
                assert f.metadata() == {"format": "pt", "gdslab.preshard": f"rank {rank} of TP 2",
                                        "gdslab.dtype": "source"}
            for name, t in got.items():
                assert torch.equal(t, expected_part(name, full[name], rank, 2, vocab)), (rank, name)
                nbytes += t.numel() * t.element_size()
            names += header_order(path)
            files.append({"name": path.name, "size": os.path.getsize(path), "header_sha256": sha_of_header(path),
                          "tensors": len(got)})
            part += 1
        assert names == [LM, EMBED, O, Q, NORM]  # every tensor once, in reading order
        assert part > 1  # split by max_file_size
        ranks.append({"rank": rank, "nbytes": nbytes, "files": files})
        rank_bytes.append(nbytes)
    # by hand: split 64 + 64 + 32 + 32 + 16 = 208 a rank; replicate 128 + 128 + 32 + 32 + 16 = 336
    assert rank_bytes == ([208, 208] if vocab == "split" else [336, 336])
    assert sorted(listing(tmp_path / "set")) == sorted([MANIFEST] + [f["name"] for r in ranks for f in r["files"]])
    created = manifest.pop("created")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", created)  # UTC, whole seconds
    assert before <= datetime.fromisoformat(created) <= after
    assert manifest == {
        "format": "gdslab-preshard", "version": 1, "tp": 2, "vocab": vocab, "dtype": "source",
        "layout": LAYOUT, "plan": PLAN.format(vocab), "max_file_size": 100, "quantization": None,
        "source": {"root": str(tmp_path / "src"),
                   "files": [{"name": "model.safetensors", "size": os.path.getsize(src_file)}],
                   "headers_sha256": hashlib.sha256(sha_of_header(src_file).encode()).hexdigest(),
                   "nbytes": 400},
        "ranks": ranks,
    }
    (bar,) = bars
    assert bar.kwargs == {"total": sum(rank_bytes), "unit": "B", "unit_scale": True, "unit_divisor": 1024,
                          "disable": True, "desc": "reshard TP 2"}
    assert sum(bar.updates) == sum(rank_bytes) and bar.closed


def test_defaults_5_gib_files_split_vocabulary_progress_on_no_force(tmp_path, bars):
    full = source(tmp_path / "src")
    pset = reshard(tmp_path / "src", tmp_path / "set", 2)
    assert pset.manifest["max_file_size"] == 5 * 1024**3 and pset.manifest["vocab"] == "split"
    got = load_file(str(tmp_path / "set" / "model-rank-1-part-0.safetensors"))
    assert torch.equal(got[EMBED], full[EMBED][4:])  # the vocabulary split: rank 1 holds rows 4..7
    (bar,) = bars
    assert bar.kwargs["disable"] is False and bar.kwargs["total"] == 416 == sum(bar.updates)
    with pytest.raises(ReshardError, match="not empty"):
        reshard(tmp_path / "src", tmp_path / "set", 2)


def test_a_checkpoint_object_is_resharded_as_given(tmp_path):
    full = source(tmp_path / "src")
    ckpt = Checkpoint.open(tmp_path / "src")
    pset = reshard(ckpt, tmp_path / "set", 2, progress=False)
    assert pset.manifest["source"]["root"] == str(tmp_path / "src")
    got = load_file(str(tmp_path / "set" / "model-rank-0-part-0.safetensors"))
    assert torch.equal(got[Q], full[Q][:2])


# --- the destination: empty, or a set that force replaces -------------------------------------------------


def test_an_empty_existing_folder_needs_no_force(tmp_path):
    source(tmp_path / "src")
    (tmp_path / "set").mkdir()
    assert reshard(tmp_path / "src", tmp_path / "set", 2, progress=False).tp == 2


def test_a_non_empty_destination_is_refused_naming_the_first_entry(tmp_path):
    source(tmp_path / "src")
    (tmp_path / "set").mkdir()
    for name in ("b.txt", "a.txt", "c.txt"):
        (tmp_path / "set" / name).write_text(name)
    with pytest.raises(ReshardError) as caught:
        reshard(tmp_path / "src", tmp_path / "set", 2, progress=False)
    assert (caught.value.path, caught.value.reason) == (
        tmp_path / "set",
        "not empty (3 entries, e.g. a.txt): pass force=True (--force) to replace a pre-sharded set there")
    assert listing(tmp_path / "set") == ["a.txt", "b.txt", "c.txt"]


def old_set(tmp_path):
    source(tmp_path / "src")
    reshard(tmp_path / "src", tmp_path / "set", 2, progress=False)
    return tmp_path / "set"


def test_force_replaces_a_set_with_its_leftovers(tmp_path, monkeypatch):
    dst = old_set(tmp_path)
    for leftover in ("model-rank-5-part-3.safetensors", "model-rank-0-part-1.safetensors.partial",
                     "a.safetensors.partial"):  # a stale rank file, partial files of an interrupted run
        (dst / leftover).write_bytes(b"x")
    unlinked = []
    real_unlink = Path.unlink

    def recording_unlink(self, missing_ok=False):
        unlinked.append(self.name)
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", recording_unlink)
    pset = reshard(tmp_path / "src", dst, 1, force=True, progress=False)
    assert unlinked[0] == MANIFEST  # the old set stops looking complete before any of its files goes
    assert {"model-rank-5-part-3.safetensors", "model-rank-0-part-1.safetensors.partial", "a.safetensors.partial",
            "model-rank-1-part-0.safetensors"} <= set(unlinked)
    assert pset.tp == 1 and listing(dst) == [MANIFEST, "model-rank-0-part-0.safetensors"]


def test_force_replaces_rank_files_left_without_a_manifest(tmp_path):
    dst = old_set(tmp_path)
    (dst / MANIFEST).unlink()  # as an interrupted reshard leaves them
    assert reshard(tmp_path / "src", dst, 2, force=True, progress=False).tp == 2
    assert listing(dst) == [MANIFEST, "model-rank-0-part-0.safetensors", "model-rank-1-part-0.safetensors"]


@pytest.mark.parametrize("foreign, extra", [
    ("notes.txt", ()),
    ("B.SAFETENSORS.PARTIAL", ("a.safetensors.partial",)),   # only the lower-case suffix is ours
    ("model-rank-0-part-0.safetensors.bak", ()),
    ("model-rank-x-part-0.safetensors", ()),
    ("a-folder", ()),
])
def test_force_refuses_a_destination_holding_anything_else_deleting_nothing(tmp_path, foreign, extra):
    dst = old_set(tmp_path)
    if foreign == "a-folder":
        (dst / foreign).mkdir()
    else:
        (dst / foreign).write_text("mine")
    for name in extra:
        (dst / name).write_bytes(b"x")
    before, manifest = listing(dst), (dst / MANIFEST).read_text()
    with pytest.raises(ReshardError) as caught:
        reshard(tmp_path / "src", dst, 1, force=True, progress=False)
    assert (caught.value.path, caught.value.reason) == (
        dst / foreign, "not part of a pre-sharded set: --force replaces a set, it deletes nothing else "
                       "(choose an empty destination)")
    assert listing(dst) == before and (dst / MANIFEST).read_text() == manifest  # the old set intact
    assert open_set(dst, ranks=[0, 1]).tp == 2


# --- a failure at any step leaves nothing that looks complete, and its own error ------------------------


def test_a_failed_write_removes_the_files_already_written(tmp_path, monkeypatch):
    source(tmp_path / "src")
    calls = []
    real = writer_module.SafetensorsWriter.write

    def failing(self, name, tensor):
        calls.append(name)
        if len(calls) == 3:  # one tensor a file: two files closed, the third open
            raise RuntimeError("disk full")
        return real(self, name, tensor)

    monkeypatch.setattr(writer_module.SafetensorsWriter, "write", failing)
    with pytest.raises(RuntimeError, match="^disk full$"):
        reshard(tmp_path / "src", tmp_path / "set", 1, max_file_size=1, progress=False)
    assert listing(tmp_path / "set") == []


def test_a_failure_before_any_file_leaves_nothing(tmp_path, monkeypatch):
    fp8_source(tmp_path / "src")

    def failing(entry):
        raise RuntimeError("no scales")

    monkeypatch.setattr(rs, "_row_scales", failing)
    with pytest.raises(RuntimeError, match="^no scales$"):
        reshard(tmp_path / "src", tmp_path / "set", 2, dtype="fp8_e4m3", progress=False)
    assert listing(tmp_path / "set") == []


def test_a_failure_to_publish_the_manifest_removes_everything(tmp_path, monkeypatch):
    source(tmp_path / "src")
    real = os.replace

    def failing(a, b):
        if Path(b).name == MANIFEST:
            raise OSError("no space for the manifest")
        return real(a, b)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="^no space for the manifest$"):
        reshard(tmp_path / "src", tmp_path / "set", 2, progress=False)
    assert listing(tmp_path / "set") == []


def test_cleanup_tolerates_a_written_file_already_gone(tmp_path, monkeypatch):
    source(tmp_path / "src")
    real = rs.header_hash
    seen = []

    def vanishing(path):
        seen.append(Path(path))
        if len(seen) == 2:  # the second file is closed: the first one disappears, then this step fails
            seen[0].unlink()
            raise RuntimeError("gone")
        return real(path)

    monkeypatch.setattr(rs, "header_hash", vanishing)
    with pytest.raises(RuntimeError, match="^gone$"):
        reshard(tmp_path / "src", tmp_path / "set", 1, max_file_size=1, progress=False)
    assert listing(tmp_path / "set") == []


def test_force_replaces_a_set_killed_while_publishing_its_manifest(tmp_path):
    dst = old_set(tmp_path)
    (dst / MANIFEST).rename(dst / (MANIFEST + ".partial"))  # SIGKILL between writing it and renaming it
    assert reshard(tmp_path / "src", dst, 2, force=True, progress=False).tp == 2
    assert listing(dst) == [MANIFEST, "model-rank-0-part-0.safetensors", "model-rank-1-part-0.safetensors"]
