"""The strict safetensors / HF index reader against files written by the safetensors library."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from gdslab import Checkpoint, CheckpointError
from gdslab.checkpoint import INDEX_NAME, MAX_HEADER_BYTES, read_header

ALL_DTYPES = [
    torch.bfloat16, torch.float16, torch.float32, torch.float64, torch.float8_e4m3fn, torch.float8_e5m2,
    torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
]


def sample_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    out = {}
    for k, dtype in enumerate(ALL_DTYPES):
        values = torch.randn(37, 11 + k, generator=g) * 50  # 37*(11+k) elements: not a 4 KiB multiple
        out[f"t.{k}.{str(dtype).split('.')[-1]}"] = values.to(dtype)
    out["scalar"] = torch.tensor(3.25, dtype=torch.float32)
    out["empty"] = torch.zeros(0, 5, dtype=torch.bfloat16)
    return out


def raw_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.dim() else \
        tensor.reshape(1).view(torch.uint8).numpy().tobytes()


def table_bytes(entry) -> bytes:
    with open(entry.file, "rb") as f:
        f.seek(entry.offset)
        return f.read(entry.nbytes)


def test_parses_every_dtype_bit_exact(tmp_path):
    tensors = sample_tensors()
    path = tmp_path / "all.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    ckpt = Checkpoint.open(path)
    reference = load_file(str(path))
    assert {t.name for t in ckpt.tensors} == set(reference)
    for entry in ckpt.tensors:
        ref = reference[entry.name]
        assert entry.dtype == ref.dtype
        assert entry.shape == tuple(ref.shape)
        assert table_bytes(entry) == raw_bytes(ref)
    assert ckpt.files[0].metadata == {"format": "pt"}
    assert ckpt.nbytes == sum(t.nbytes for t in ckpt.tensors)
    offsets = [t.offset for t in ckpt.tensors]
    assert offsets == sorted(offsets)


def write_sharded(tmp_path, shards=3):
    tensors = sample_tensors()
    names = sorted(tensors)
    weight_map = {}
    for k in range(shards):
        part = {n: tensors[n] for n in names[k::shards]}
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        save_file(part, str(tmp_path / fname))
        weight_map.update({n: fname for n in part})
    (tmp_path / INDEX_NAME).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return tensors, weight_map


def test_sharded_index(tmp_path):
    tensors, weight_map = write_sharded(tmp_path)
    ckpt = Checkpoint.open(tmp_path)
    assert ckpt.index == tmp_path / INDEX_NAME
    assert len(ckpt.files) == 3
    for entry in ckpt.tensors:
        assert entry.file.name == weight_map[entry.name]
        assert table_bytes(entry) == raw_bytes(tensors[entry.name])
    assert Checkpoint.open(tmp_path / INDEX_NAME).tensors == ckpt.tensors
    assert "3 file(s)" in ckpt.summary()


def test_directory_without_index(tmp_path):
    write_sharded(tmp_path)
    (tmp_path / INDEX_NAME).unlink()
    assert len(Checkpoint.open(tmp_path).files) == 3


# --- malformed files: one CheckpointError naming the file ---------------------------------


def good_file(tmp_path):
    path = tmp_path / "good.safetensors"
    save_file({"a": torch.arange(10, dtype=torch.float32), "b": torch.ones(3, 3, dtype=torch.bfloat16)}, str(path))
    return path


def rewrite_header(path, header: dict, data: bytes | None = None):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    body = raw[8 + n:] if data is None else data
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + body)


def header_of(path) -> dict:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n])


def expect_error(path, fragment: str, opened=None):
    """Opening `opened` (default `path`) raises one CheckpointError naming `path`."""
    with pytest.raises(CheckpointError) as info:
        Checkpoint.open(opened or path)
    assert str(path.name) in str(info.value)
    assert fragment in info.value.reason, info.value.reason
    return info.value


def test_truncated_file(tmp_path):
    path = good_file(tmp_path)
    path.write_bytes(path.read_bytes()[:-5])
    expect_error(path, "truncated")


def test_shorter_than_header_length(tmp_path):
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"\x01\x02")
    expect_error(path, "shorter than the 8-byte")


def test_header_past_eof_and_absurd(tmp_path):
    path = good_file(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw[8:])
    expect_error(path, "past the end")
    path.write_bytes(struct.pack("<Q", MAX_HEADER_BYTES + 1) + raw[8:])
    expect_error(path, "absurd")


def test_invalid_json(tmp_path):
    path = good_file(tmp_path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    path.write_bytes(raw[:8] + b"{" + b"x" * (n - 1) + raw[8 + n:])
    expect_error(path, "not valid JSON")


def test_unknown_dtype(tmp_path):
    path = good_file(tmp_path)
    header = header_of(path)
    header["a"]["dtype"] = "F12"
    rewrite_header(path, header)
    expect_error(path, "unknown dtype")


def test_wrong_byte_count(tmp_path):
    path = good_file(tmp_path)
    header = header_of(path)
    header["a"]["shape"] = [11]
    rewrite_header(path, header)
    expect_error(path, "needs 44")


def test_overlapping_offsets(tmp_path):
    path = good_file(tmp_path)
    header = header_of(path)
    begin, end = header["a"]["data_offsets"]
    b_begin, b_end = header["b"]["data_offsets"]
    header["b"]["data_offsets"] = [begin, begin + (b_end - b_begin)]
    rewrite_header(path, header)
    expect_error(path, "overlaps")


def test_out_of_range_offsets(tmp_path):
    path = good_file(tmp_path)
    header = header_of(path)
    begin, end = header["a"]["data_offsets"]
    header["a"]["data_offsets"] = [begin + 10_000, end + 10_000]
    rewrite_header(path, header)
    expect_error(path, "outside the data region")


def test_duplicate_names(tmp_path):
    path = good_file(tmp_path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    text = raw[8:8 + n].decode()
    first = text[1:text.index("}") + 1]  # '"a":{...}' or '"__metadata__":{...}'
    doubled = ("{" + first + "," + text[1:]).encode()
    path.write_bytes(struct.pack("<Q", len(doubled)) + doubled + raw[8 + n:])
    expect_error(path, "duplicate name")


def test_bad_metadata_and_shapes(tmp_path):
    path = good_file(tmp_path)
    header = header_of(path)
    header["__metadata__"] = {"format": 1}
    rewrite_header(path, header)
    expect_error(path, "__metadata__")
    header["__metadata__"] = {}
    header["a"]["shape"] = [-10]
    rewrite_header(path, header)
    expect_error(path, "non-negative")
    header["a"]["shape"] = [True] * 10
    rewrite_header(path, header)
    expect_error(path, "non-negative")


def test_missing_shard(tmp_path):
    write_sharded(tmp_path)
    (tmp_path / "model-00002-of-00003.safetensors").unlink()
    error = expect_error(tmp_path / "model-00002-of-00003.safetensors", "missing shard", tmp_path)
    assert error.path.name == "model-00002-of-00003.safetensors"


@pytest.mark.parametrize("name", ["../outside.safetensors", "/etc/passwd", "sub/x.safetensors", ".."])
def test_escaping_shard_name(tmp_path, name):
    write_sharded(tmp_path)
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = name
    (tmp_path / INDEX_NAME).write_text(json.dumps(index))
    expect_error(tmp_path / INDEX_NAME, "escapes the checkpoint folder")


def test_symlink_leading_out(tmp_path):
    inside, outside = tmp_path / "ckpt", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    write_sharded(inside, shards=1)
    real = inside / "model-00001-of-00001.safetensors"
    real.rename(outside / real.name)
    os.symlink(outside / real.name, real)
    expect_error(real, "symlink leading out", inside)


def test_tensor_in_two_shards(tmp_path):
    write_sharded(tmp_path, shards=2)
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    name, shard = next(iter(index["weight_map"].items()))
    other = next(s for s in index["weight_map"].values() if s != shard)
    extra = load_file(str(tmp_path / other))
    extra[name] = torch.zeros(1)
    save_file(extra, str(tmp_path / other))
    expect_error(tmp_path / other, "also in", tmp_path)


def test_index_lists_absent_tensor(tmp_path):
    write_sharded(tmp_path)
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    index["weight_map"]["ghost"] = "model-00001-of-00003.safetensors"
    (tmp_path / INDEX_NAME).write_text(json.dumps(index))
    expect_error(tmp_path / "model-00001-of-00003.safetensors", "'ghost'", tmp_path)


def test_empty_directory_and_missing_path(tmp_path):
    expect_error(tmp_path, "empty checkpoint folder")
    expect_error(tmp_path / "nope", "no such file")


def test_read_header_does_not_read_data(tmp_path):
    path = good_file(tmp_path)
    shard, entries = read_header(path)
    assert shard.size == path.stat().st_size
    assert [e.name for e in entries] == ["a", "b"]
