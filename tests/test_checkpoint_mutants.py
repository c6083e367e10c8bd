"""Checkpoint's table accessors and `summary()` against hand-built safetensors files (issue #29).

The files are written by hand with json + struct (the format: an 8-byte little-endian header
length, the JSON header, the data region), so each expected value below -- offsets, counts,
the exact `gdslab inspect` text -- is computed from the bytes we wrote, not by gdslab; the
safetensors library reading the same file back confirms it is a valid file. These check what
the older tests left open: `ckpt[name]` and its KeyError, `by_file()` (empty shards included),
`dtype_counts()` values, and the summary's every line and separator, with and without an index.
"""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from safetensors.torch import load_file

from gdslab import Checkpoint
from gdslab.checkpoint import INDEX_NAME
from gdslab.errors import CheckpointError


def write_file(path, tensors: list[tuple[str, str, list[int], bytes]]) -> int:
    """Write a safetensors file of (name, dtype, shape, raw bytes) in this order; its data start."""
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return 8 + len(text)


F32_W = struct.pack("<2f", 1.5, -2.0)   # F32 [2]
F32_B = struct.pack("<f", 0.25)         # F32 [1]
BF16_H = bytes([0x80, 0x3F, 0x00, 0x40])  # BF16 [2]: 1.0, 2.0


def one_file(tmp_path):
    path = tmp_path / "a.safetensors"
    start = write_file(path, [("w", "F32", [2], F32_W), ("b", "F32", [1], F32_B), ("h", "BF16", [2], BF16_H)])
    return path, start


def test_hand_built_file_is_valid_for_safetensors(tmp_path):
    path, _ = one_file(tmp_path)
    ref = load_file(str(path))
    assert ref["w"].tolist() == [1.5, -2.0] and ref["b"].tolist() == [0.25]
    assert ref["h"].to(torch.float32).tolist() == [1.0, 2.0]


def test_getitem_finds_the_named_entry_and_raises_keyerror_with_the_name(tmp_path):
    path, start = one_file(tmp_path)
    ckpt = Checkpoint.open(path)
    b = ckpt["b"]
    assert (b.name, b.file, b.offset, b.nbytes, b.dtype_name, b.shape) == ("b", path, start + 8, 4, "F32", (1,))
    h = ckpt["h"]
    assert (h.name, h.offset, h.nbytes, h.dtype_name, h.shape) == ("h", start + 12, 4, "BF16", (2,))
    with pytest.raises(KeyError) as err:
        ckpt["nope"]
    assert err.value.args == ("nope",)


def test_dtype_counts_counts_each_dtype(tmp_path):
    path, _ = one_file(tmp_path)
    assert Checkpoint.open(path).dtype_counts() == {"F32": 2, "BF16": 1}


def write_indexed(tmp_path):
    """Two shards (w, b | h) with an HF index over them; each one's data start."""
    s1, s2 = tmp_path / "m-1.safetensors", tmp_path / "m-2.safetensors"
    start1 = write_file(s1, [("w", "F32", [2], F32_W), ("b", "F32", [1], F32_B)])
    start2 = write_file(s2, [("h", "BF16", [2], BF16_H)])
    (tmp_path / INDEX_NAME).write_text(json.dumps({"weight_map": {"w": s1.name, "b": s1.name, "h": s2.name}}))
    return s1, s2, start1, start2


def test_by_file_groups_entries_per_shard_including_an_empty_shard(tmp_path):
    s1, s2, start1, start2 = write_indexed(tmp_path)
    empty = tmp_path / "m-3.safetensors"
    empty.write_bytes(struct.pack("<Q", 2) + b"{}")  # a valid file of no tensors
    assert load_file(str(empty)) == {}
    ckpt = Checkpoint.of_files(tmp_path, [s1, s2, empty])
    grouped = ckpt.by_file()
    assert list(grouped) == [s1, s2, empty]
    assert [(e.name, e.offset) for e in grouped[s1]] == [("w", start1), ("b", start1 + 8)]
    assert [(e.name, e.offset) for e in grouped[s2]] == [("h", start2)]
    assert grouped[empty] == []


def test_summary_exact_text_single_file(tmp_path):
    path, start = one_file(tmp_path)
    assert Checkpoint.open(path).summary() == (
        f"{path}: 3 tensors, 16 B in 1 file(s)\n"
        "dtypes: BF16 x1, F32 x2\n"
        f"  a.safetensors: 3 tensors, 16 B, data at byte {start}"
    )


def test_summary_exact_text_with_index(tmp_path):
    s1, s2, start1, start2 = write_indexed(tmp_path)
    ckpt = Checkpoint.open(tmp_path)
    assert ckpt.summary() == (
        f"{tmp_path}: 3 tensors, 16 B in 2 file(s), index {INDEX_NAME}\n"
        "dtypes: BF16 x1, F32 x2\n"
        f"  m-1.safetensors: 2 tensors, 12 B, data at byte {start1}\n"
        f"  m-2.safetensors: 1 tensors, 4 B, data at byte {start2}"
    )


# --- Checkpoint.of_files: one rank's files read as one table --------------------------------------------


def test_of_files_keeps_the_root_and_every_file_in_order(tmp_path):
    write_file(tmp_path / "a.safetensors", [("w", "F32", [2], F32_W)])
    write_file(tmp_path / "b.safetensors", [("b", "F32", [1], F32_B)])
    ckpt = Checkpoint.of_files(tmp_path, [tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    assert ckpt.root == tmp_path
    assert [t.name for t in ckpt.tensors] == ["w", "b"]
    assert [t.file.name for t in ckpt.tensors] == ["a.safetensors", "b.safetensors"]


def test_of_files_refuses_a_tensor_in_two_files_naming_both(tmp_path):
    write_file(tmp_path / "a.safetensors", [("w", "F32", [2], F32_W)])
    write_file(tmp_path / "b.safetensors", [("b", "F32", [1], F32_B), ("w", "F32", [2], F32_W)])
    with pytest.raises(CheckpointError) as caught:
        Checkpoint.of_files(tmp_path, [tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    assert caught.value.path == tmp_path / "b.safetensors"
    assert caught.value.reason == "tensor 'w' is also in a.safetensors"


def test_changed_says_exactly_why_the_file_is_no_longer_the_one_planned(tmp_path):
    """ShardFile.changed(): each reason in its own words, and a change of size or of mtime alone is enough."""
    path, _ = one_file(tmp_path)
    size = path.stat().st_size
    shard = Checkpoint.open(path).files[0]
    assert shard.changed() is None
    mtime = path.stat().st_mtime_ns
    os.utime(path, ns=(mtime, mtime + 1_000_000_000))  # touched: same size, another mtime
    assert shard.changed() == f"modified since the checkpoint was opened ({size} -> {size} bytes)"
    os.truncate(path, size - 1)
    os.utime(path, ns=(mtime, mtime))  # cut by a byte, mtime put back: the size alone tells
    assert shard.changed() == f"modified since the checkpoint was opened ({size} -> {size - 1} bytes)"
    copy = tmp_path / "copy.tmp"
    copy.write_bytes(path.read_bytes())
    os.replace(copy, path)  # another file (inode) at this path
    assert shard.changed() == "replaced since the checkpoint was opened (another file at this path)"
    path.unlink()
    assert shard.changed() == "cannot stat: No such file or directory"
