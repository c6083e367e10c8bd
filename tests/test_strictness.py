"""Every strictness rule of the safetensors reader, one crafted file each, beside what the safetensors library says.

The reader must be at least as strict as the library: each file here is refused with a
`CheckpointError` naming the file and the rule; where the library refuses it too, that is
checked, so a rule removed from the reader (or a faster parser that forgets one) fails
here, by name.
"""

from __future__ import annotations

import json
import struct

import pytest
from safetensors import safe_open

from gdslab import checkpoint as ck
from gdslab.checkpoint import Checkpoint, CheckpointError


def blob(header, data: bytes = b"", raw_header: bytes | None = None) -> bytes:
    text = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + data


def good(**over) -> dict:
    entry = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    return {"a": {**entry, **over}, "b": {"dtype": "U8", "shape": [4], "data_offsets": [8, 12]}}


DATA = bytes(range(12))

CASES = {
    "shorter than 8 bytes": (b"\x01\x02", "shorter than the 8-byte"),
    "absurd header length": (struct.pack("<Q", ck.MAX_HEADER_BYTES + 1) + b"{}", "absurd"),
    "header past the end": (struct.pack("<Q", 1000) + b"{}", "past the end"),
    "not starting with a brace": (blob(None, raw_header=b"[1]    "), "does not start with '{'"),
    "invalid UTF-8": (blob(None, raw_header=b'{"\xff":1}'), "not valid UTF-8"),
    "invalid JSON": (blob(None, raw_header=b'{"a":'), "not valid JSON"),
    "nested shape": (blob({"a": {"dtype": "F32", "shape": [[2]], "data_offsets": [0, 8]}}, DATA[:8]),
                     "non-negative integers"),
    "nested too deeply": (blob(None, raw_header=b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
                          "nested too deeply"),
    "duplicate tensor name": (blob(None, DATA, b'{"a":{"dtype":"U8","shape":[12],"data_offsets":[0,12]},'
                                               b'"a":{"dtype":"U8","shape":[12],"data_offsets":[0,12]}}'),
                              "duplicate name"),
    "duplicate key inside an entry": (blob(None, DATA, b'{"a":{"dtype":"U8","dtype":"U8","shape":[12],'
                                                       b'"data_offsets":[0,12]}}'), "duplicate name"),
    "duplicate metadata key": (blob(None, DATA, b'{"__metadata__":{"k":"1","k":"2"},'
                                                b'"a":{"dtype":"U8","shape":[12],"data_offsets":[0,12]}}'), "duplicate name"),
    "duplicate key behind an escape": (blob(None, DATA, b'{"a\\u0020":{"dtype":"U8","shape":[12],"data_offsets":[0,12]},'
                                                        b'"a ":{"dtype":"U8","shape":[12],"data_offsets":[0,12]}}'),
                                       "duplicate name"),
    "lone surrogate": (blob(None, DATA, b'{"\\ud800":{"dtype":"U8","shape":[12],"data_offsets":[0,12]}}'),
                       "lone surrogate"),
    "metadata not strings": (blob({"__metadata__": {"format": 1}, **good()}, DATA), "__metadata__"),
    "extra key in an entry": (blob({"a": {"dtype": "U8", "shape": [12], "data_offsets": [0, 12], "x": 1}}, DATA),
                              "expected exactly dtype, shape and data_offsets"),
    "unknown dtype": (blob(good(dtype="F12"), DATA), "unknown dtype"),
    "negative dimension": (blob(good(shape=[-2]), DATA), "non-negative integers"),
    "boolean dimension": (blob(good(shape=[True, 2]), DATA), "non-negative integers"),
    "rank over the limit": (blob(good(shape=[1] * (ck.MAX_RANK + 1)), DATA), "rank"),
    "shape past 2**63": (blob(good(shape=[2**40, 2**40]), DATA), "largest tensor size"),
    "offsets not two integers": (blob(good(data_offsets=[0, 8, 9]), DATA), "data_offsets must be two integers"),
    "offsets not an interval": (blob(good(data_offsets=[8, 0]), DATA), "not an interval"),
    "offsets past the data": (blob(good(data_offsets=[0, 800]), DATA), "outside the data region"),
    "bytes disagree with the shape": (blob(good(shape=[3]), DATA), "needs 12"),
    "overlapping tensors": (blob({**good(), "b": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}},
                                 DATA[:8]), "overlaps"),
    "gap between tensors": (blob({**good(), "b": {"dtype": "U8", "shape": [4], "data_offsets": [9, 13]}},
                                 DATA + b"\0"), "gap of 1 bytes"),
    "trailing bytes": (blob(good(), DATA + b"\0\0\0"), "truncated or padded"),
    "data cut short": (blob(good(), DATA[:10]), "outside the data region"),
}

# Files the reader refuses and the library (0.8) accepts: the reader may be stricter, never looser.
# A repeated tensor name keeps the last entry there, and an unknown key in an entry is ignored:
# either would let two readers see different tensors in one file.
LIBRARY_ACCEPTS: set[str] = {"duplicate tensor name", "duplicate key behind an escape", "extra key in an entry",
                              "duplicate metadata key"}


def library_refuses(path) -> bool:
    try:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                f.get_tensor(name)
    except Exception:  # noqa: BLE001 - any refusal counts
        return True
    return False


@pytest.mark.parametrize("rule", sorted(CASES))
def test_each_rule_refuses_its_file(tmp_path, rule):
    data, fragment = CASES[rule]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        Checkpoint.open(path)
    assert info.value.path == path and fragment in info.value.reason, info.value.reason
    if rule not in LIBRARY_ACCEPTS:
        assert library_refuses(path), f"the safetensors library accepts the {rule!r} file"


def test_the_tensor_count_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(ck, "MAX_TENSORS", 1)
    path = tmp_path / "many.safetensors"
    path.write_bytes(blob(good(), DATA))
    with pytest.raises(CheckpointError, match="lists 2 tensors"):
        Checkpoint.open(path)


def test_a_good_file_passes(tmp_path):
    path = tmp_path / "good.safetensors"
    path.write_bytes(blob({"__metadata__": {"format": "pt"}, **good()}, DATA))
    ckpt = Checkpoint.open(path)
    assert [(e.name, e.offset, e.nbytes) for e in ckpt.tensors] == [("a", 8 + len(path.read_bytes()) - 20, 8),
                                                                   ("b", 8 + len(path.read_bytes()) - 12, 4)]
    assert not library_refuses(path)
