"""Property-based tests of the strict reader: whatever the bytes, a valid table or CheckpointError.

Three kinds of input: headers built at random (JSON objects with random dtypes, shapes and
offsets, consistent or perturbed), header *text* mutated token by token (to reach JSON
corners where Python's parser and the safetensors library's serde_json differ), and
byte-level mutations of real files written by the safetensors library (bit flips,
truncation, splices, insertions, deletions). The oracle is the safetensors library itself:
whenever gdslab accepts a file, `safetensors.deserialize`, `safe_open` and (for dtypes torch
knows) `load_file` must accept it too, with the same names, dtypes, shapes and bytes.

GDSLAB_SOAK=1 raises the example counts (and draws new random examples each run); see
docs/results/soak.md for the last soak run.
"""

from __future__ import annotations

import ast
import json
import math
import os
import pickle
import signal
import struct
from contextlib import contextmanager
from pathlib import Path

import pytest
import safetensors
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save

from gdslab import Checkpoint, CheckpointError
from gdslab import checkpoint as checkpoint_module
from gdslab.checkpoint import _DTYPE_BITS, DTYPES, INDEX_NAME, MAX_HEADER_BYTES, MAX_RANK

SOAK = os.environ.get("GDSLAB_SOAK", "") not in ("", "0")
EXAMPLES = 4000 if SOAK else 200
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=1000,  # milliseconds: one case never takes a second
    derandomize=not SOAK,  # `make test` sees the same examples every run; a soak explores
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
HANG_SECONDS = 10  # a case that runs this long is a hang (the deadline reports slow ones)


# --- real files written by the safetensors library ---------------------------------------


def _real_files() -> dict[str, bytes]:
    g = torch.Generator().manual_seed(8)
    mixed = {
        "w": (torch.randn(3, 5, generator=g) * 9).to(torch.bfloat16),
        "b": torch.randn(7, generator=g),
        "i": torch.randint(-9, 9, (2, 2), generator=g, dtype=torch.int64),
        "s": torch.tensor(2.5, dtype=torch.float16),
        "e": torch.zeros(0, 3, dtype=torch.uint8),
    }
    small = {
        "x": torch.randn(11, generator=g).to(torch.float8_e4m3fn),
        "y": torch.tensor([True, False, True, True, False]),
        "z": torch.randint(-100, 100, (3, 3), generator=g, dtype=torch.int8),
    }
    return {
        "mixed": save(mixed, metadata={"format": "pt", "note": "gdslab fuzz"}),
        "small": save(small),
        "single": save({"only": torch.arange(4, dtype=torch.float64) / 3}),
        "many": save({f"layer.{k}.weight": torch.full((k + 1,), k, dtype=torch.int16) for k in range(9)}),
    }


REAL = _real_files()


# --- the oracle ----------------------------------------------------------------------------


@contextmanager
def no_hang(seconds: int = HANG_SECONDS):
    """Turn a hang into a test failure (hypothesis' deadline only judges cases that finish)."""

    def alarm(signum, frame):
        raise TimeoutError(f"case still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def gdslab_outcome(path: Path) -> Checkpoint | None:
    """The table, or None for a CheckpointError; any other exception fails the test."""
    with no_hang():
        try:
            return Checkpoint.open(path)
        except CheckpointError as e:
            assert str(e.path) and e.reason, "a CheckpointError names the file and the reason"
            return None


def assert_safetensors_agrees(ckpt: Checkpoint) -> None:
    """gdslab accepted: the safetensors library must load every file, to the same bytes."""
    for shard in ckpt.files:
        raw = shard.path.read_bytes()
        try:
            reference = {name: info for name, info in safetensors.deserialize(raw)}
            with safe_open(str(shard.path), framework="pt") as f:
                keys = set(f.keys())
        except Exception as e:  # noqa: BLE001 - the point: which error, if any
            pytest.fail(f"gdslab accepted {shard.path.name} but safetensors rejects it: {e}")
        mine = [t for t in ckpt.tensors if t.file == shard.path]
        assert {t.name for t in mine} == set(reference) == keys
        for entry in mine:
            info = reference[entry.name]
            assert (entry.dtype_name, list(entry.shape)) == (info["dtype"], list(info["shape"]))
            assert raw[entry.offset:entry.offset + entry.nbytes] == bytes(info["data"]), entry.name
        if all(t.dtype is not None for t in mine):
            loaded = load_file(str(shard.path))
            for entry in mine:
                tensor = loaded[entry.name]
                assert tensor.dtype == entry.dtype and tuple(tensor.shape) == entry.shape
                flat = tensor.reshape(-1).view(torch.uint8) if tensor.dim() else tensor.reshape(1).view(torch.uint8)
                assert flat.numpy().tobytes() == raw[entry.offset:entry.offset + entry.nbytes]


def check_file(path: Path, raw: bytes) -> Checkpoint | None:
    path.write_bytes(raw)
    ckpt = gdslab_outcome(path)
    if ckpt is not None:
        assert_safetensors_agrees(ckpt)
    return ckpt


def frame(header: bytes, data: bytes = b"", length: int | None = None) -> bytes:
    return struct.pack("<Q", len(header) if length is None else length) + header + data


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# --- random headers --------------------------------------------------------------------------

NAMES = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["", "__metadata__", "a", "a.b", "\u00e9", "\U0001f600", "x" * 40]),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2),
)
DTYPE_NAMES = st.one_of(st.sampled_from(sorted(_DTYPE_BITS)), st.sampled_from(["f32", "F128", "", "BF16 "]))
ODD_NUMBERS = st.one_of(
    st.integers(-3, -1), st.integers(2**62, 2**66), st.floats(allow_nan=True), st.booleans(), st.none(),
    st.just("3"), st.just([1]),
)
PERTURBATIONS = [
    "none", "none", "none", "offset", "end", "swap-offsets", "dtype", "shape", "drop-key", "extra-key",
    "odd-number", "more-data", "less-data", "length+", "length-", "metadata", "padding", "not-object",
    "huge-dim-zero",
]
NEEDS_VICTIM = {"offset", "end", "swap-offsets", "dtype", "shape", "drop-key", "extra-key", "odd-number"}


@st.composite
def random_headers(draw) -> tuple[bytes, bool]:
    """(file bytes, consistent): a header that is right by construction unless perturbed."""
    count = draw(st.integers(0, 5))
    names = draw(st.lists(NAMES, min_size=count, max_size=count, unique=True))
    entries, sizes = {}, []
    for name in names:
        dtype = draw(st.sampled_from(sorted(_DTYPE_BITS)))
        shape = draw(st.lists(st.integers(0, 5), max_size=4))
        numel, bits = math.prod(shape), _DTYPE_BITS[dtype]
        if numel * bits % 8:  # sub-byte dtypes: pad the element count to whole bytes
            shape = shape + [8] if shape else [8]
            numel = math.prod(shape)
        entries[name] = {"dtype": dtype, "shape": shape}
        sizes.append(numel * bits // 8)
    order = draw(st.permutations(list(range(count))))
    cursor, spans = 0, [None] * count
    for k in order:
        spans[k] = [cursor, cursor + sizes[k]]
        cursor += sizes[k]
    for name, span in zip(names, spans):
        entries[name]["data_offsets"] = span
    header: object = dict(entries)
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3))
    data = draw(st.binary(min_size=cursor, max_size=cursor))
    length_delta, pad = 0, b""
    how = draw(st.sampled_from(PERTURBATIONS))
    victim = entries[draw(st.sampled_from(names))] if names else None
    if how == "offset" and victim:
        delta = draw(st.integers(-3, 3).filter(bool))
        victim["data_offsets"] = [victim["data_offsets"][0] + delta, victim["data_offsets"][1] + delta]
    elif how == "end" and victim:
        victim["data_offsets"] = [victim["data_offsets"][0], victim["data_offsets"][1] + draw(st.integers(-3, 3))]
    elif how == "swap-offsets" and victim:
        victim["data_offsets"] = victim["data_offsets"][::-1]
    elif how == "dtype" and victim:
        victim["dtype"] = draw(DTYPE_NAMES)
    elif how == "shape" and victim:
        victim["shape"] = draw(st.lists(st.integers(0, 9), max_size=MAX_RANK + 2))
    elif how == "drop-key" and victim:
        victim.pop(draw(st.sampled_from(sorted(victim))))
    elif how == "extra-key" and victim:
        victim[draw(st.sampled_from(["extra", "dtype2", "offsets"]))] = 0
    elif how == "odd-number" and victim:
        field = draw(st.sampled_from(["shape", "data_offsets"]))
        values = list(victim[field]) or [0]
        values[draw(st.integers(0, len(values) - 1))] = draw(ODD_NUMBERS)
        victim[field] = values
    elif how == "huge-dim-zero":  # zero elements, but a dimension no real tensor has
        shape = [draw(st.sampled_from([2**63, 2**64, 2**70, 2**40])), 0] + [2**40] * draw(st.integers(0, 2))
        header["\u2205huge"] = {"dtype": "U8", "shape": draw(st.permutations(shape)), "data_offsets": [cursor, cursor]}
    elif how == "more-data":
        data += draw(st.binary(min_size=1, max_size=9))
    elif how == "less-data" and data:
        data = data[: -draw(st.integers(1, len(data)))]
    elif how == "length+":
        length_delta = draw(st.integers(1, 9))
    elif how == "length-":
        length_delta = -draw(st.integers(1, 9))
    elif how == "metadata":
        header["__metadata__"] = draw(st.one_of(ODD_NUMBERS, st.dictionaries(st.text(max_size=3), ODD_NUMBERS, max_size=2)))
    elif how == "padding":  # trailing spaces are how the safetensors library aligns headers: valid
        pad = b" " * draw(st.integers(1, 8))
    elif how == "not-object":
        header = draw(st.sampled_from([[header], "x", 0, None]))
    text = json.dumps(header, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass") + pad
    consistent = how in ("none", "padding") or (how in NEEDS_VICTIM and victim is None)
    if any("__metadata__" == n or any(0xD800 <= ord(c) <= 0xDFFF for c in n) for n in names):
        consistent = False  # a tensor called __metadata__, a lone surrogate (not UTF-8): both refused
    return frame(text, data, max(0, len(text) + length_delta)), consistent


@FUZZ
@given(case=random_headers())
def test_random_headers(workdir, case):
    raw, consistent = case
    ckpt = check_file(workdir / "random.safetensors", raw)
    if consistent:
        assert ckpt is not None, "a header consistent by construction must be accepted"


@FUZZ
@given(raw=st.binary(max_size=300), length=st.one_of(st.none(), st.integers(0, 2**64 - 1)))
def test_random_bytes(workdir, raw, length):
    check_file(workdir / "bytes.safetensors", frame(raw, b"", length) if length is not None else raw)


@FUZZ
@given(raw=st.binary(max_size=200))
def test_random_bytes_after_brace(workdir, raw):
    """Past the first gate ('{'): the JSON parser and validation see arbitrary bytes."""
    header = b"{" + raw
    check_file(workdir / "brace.safetensors", frame(header))


JSON_TOKENS = [
    " ", "\t", "\n", "\r", ",", ":", "{", "}", "[", "]", '"', "-0", "0", "1e2", "1.0", "-1", "null", "true",
    "NaN", "Infinity", "\\u0000", "\\ud800", "\\", "\x00", "\x7f", "\u00ff", "9" * 30, "9" * 5000, '"__metadata__"',
    '"dtype"', '"shape"', '"data_offsets"', '"F32"',
]


@FUZZ
@given(
    name=st.sampled_from(sorted(REAL)),
    edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 3), st.sampled_from(JSON_TOKENS)), min_size=1, max_size=4),
)
def test_header_text_mutations(workdir, name, edits):
    """Token-level edits of a real header, its length field kept right: JSON parser corners."""
    raw = REAL[name]
    (length,) = struct.unpack("<Q", raw[:8])
    text, data = raw[8:8 + length].decode(), raw[8 + length:]
    for where, cut, token in edits:
        at = int(where * len(text))
        text = text[:at] + token + text[at + cut:]
    header = text.encode("utf-8", "surrogatepass")
    check_file(workdir / "text.safetensors", frame(header, data))


MUTATIONS = ["flip", "flip-header", "truncate", "splice", "insert", "delete", "length"]


@FUZZ
@given(
    name=st.sampled_from(sorted(REAL)),
    other=st.sampled_from(sorted(REAL)),
    steps=st.lists(
        st.tuples(st.sampled_from(MUTATIONS), st.floats(0, 1), st.floats(0, 1), st.integers(0, 255)),
        min_size=1, max_size=3,
    ),
)
def test_mutated_real_files(workdir, name, other, steps):
    raw = bytearray(REAL[name])
    donor = REAL[other]
    for how, a, b, value in steps:
        if not raw:
            break
        at = int(a * (len(raw) - 1))
        (length,) = struct.unpack("<Q", bytes(raw[:8]).ljust(8, b"\0"))
        if how == "flip":
            raw[at] ^= 1 << (value % 8)
        elif how == "flip-header":  # most interesting bytes: the JSON
            at = 8 + int(a * max(0, min(length, len(raw) - 8) - 1))
            if at < len(raw):
                raw[at] ^= 1 << (value % 8)
        elif how == "truncate":
            del raw[at:]
        elif how == "splice":
            start = int(b * (len(donor) - 1))
            raw[at:at + value % 40] = donor[start:start + value % 40 + int(b * 7)]
        elif how == "insert":
            raw[at:at] = bytes([value]) * (1 + int(b * 4))
        elif how == "delete":
            del raw[at:at + 1 + int(b * 4)]
        elif how == "length":
            raw[:8] = struct.pack("<Q", max(0, length + value - 128))
    check_file(workdir / "mutated.safetensors", bytes(raw))


def test_unmutated_real_files_are_accepted(workdir):
    """The oracle's other half: every real file is accepted, bytes equal (else the fuzz proves little)."""
    for name, raw in REAL.items():
        assert check_file(workdir / f"{name}.safetensors", raw) is not None, name


# --- an HF index with random shard names ----------------------------------------------------

SHARD_NAMES = [
    "a.safetensors", "b.safetensors", "../a.safetensors", "/etc/passwd", "sub/a.safetensors", "..", ".", "",
    "outside-link.safetensors", "inside-link.safetensors", "dir.safetensors", "fifo.safetensors",
    "missing.safetensors", INDEX_NAME, "a.safetensors\x00", "./a.safetensors", "A.SAFETENSORS", "sub\\a.safetensors",
]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory) -> Path:
    """A checkpoint folder with good shards and every kind of bad neighbour an index may name."""
    root = tmp_path_factory.mktemp("index")
    outside = tmp_path_factory.mktemp("outside") / "secret.safetensors"
    outside.write_bytes(REAL["single"])
    (root / "a.safetensors").write_bytes(REAL["mixed"])
    (root / "b.safetensors").write_bytes(REAL["small"])
    (root / "outside-link.safetensors").symlink_to(outside)
    (root / "inside-link.safetensors").symlink_to(root / "b.safetensors")
    (root / "dir.safetensors").mkdir()
    os.mkfifo(root / "fifo.safetensors")
    (root / "sub").mkdir()
    (root / "sub" / "a.safetensors").write_bytes(REAL["mixed"])
    return root


TENSOR_NAMES = sorted({n for key in ("mixed", "small") for n, _ in safetensors.deserialize(REAL[key])}) + ["ghost"]


@FUZZ
@given(
    weight_map=st.dictionaries(st.sampled_from(TENSOR_NAMES), st.sampled_from(SHARD_NAMES), max_size=len(TENSOR_NAMES)),
    wrap=st.sampled_from(["ok", "no-weight-map", "list", "extra-metadata"]),
)
def test_random_index(index_dir, weight_map, wrap):
    doc: object = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    if wrap == "no-weight-map":
        doc = {"weights": weight_map}
    elif wrap == "list":
        doc = [weight_map]
    elif wrap == "extra-metadata":
        doc["metadata"] = {"nested": {"deep": [1, [2, [3]]]}}
    index = index_dir / INDEX_NAME
    index.write_text(json.dumps(doc))
    with no_hang():
        try:
            ckpt = Checkpoint.open(index_dir)
        except CheckpointError:
            return
    root = index_dir.resolve()
    for shard in ckpt.files:
        assert shard.path.resolve().parent == root and shard.path.resolve().is_file(), shard.path
    assert {t.name: t.file.name for t in ckpt.tensors} == weight_map
    assert_safetensors_agrees(ckpt)


def test_folder_with_fifo_and_symlink_out_is_refused(tmp_path):
    """A folder glob must not block on a FIFO nor follow a symlink out of the folder."""
    (tmp_path / "a.safetensors").write_bytes(REAL["mixed"])
    os.mkfifo(tmp_path / "b.safetensors")
    with no_hang(5), pytest.raises(CheckpointError, match="not a regular file"):
        Checkpoint.open(tmp_path)
    (tmp_path / "b.safetensors").unlink()
    (tmp_path / "b.safetensors").symlink_to(tmp_path.parent)
    with pytest.raises(CheckpointError, match="symlink leading out"):
        Checkpoint.open(tmp_path)
    with no_hang(5), pytest.raises(CheckpointError):
        os.mkfifo(tmp_path / "f.safetensors")
        Checkpoint.open(tmp_path / "f.safetensors")


# --- limits ------------------------------------------------------------------------------------


def tensor_header(count: int = 1, shape=(2,), dtype: str = "U8") -> dict:
    n = math.prod(shape) * _DTYPE_BITS[dtype] // 8
    return {f"t{k}": {"dtype": dtype, "shape": list(shape), "data_offsets": [k * n, (k + 1) * n]} for k in range(count)}


def write(path: Path, header: dict | bytes, data: bytes = b"") -> Path:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(frame(text, data))
    return path


def test_header_length_limit_is_checked_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "h.safetensors"
    path.write_bytes(frame(b"{}", b"", MAX_HEADER_BYTES + 1) + b" " * 64)
    with pytest.raises(CheckpointError, match="absurd"):
        Checkpoint.open(path)
    monkeypatch.setattr(checkpoint_module, "MAX_HEADER_BYTES", 64)
    padded = json.dumps(tensor_header()).encode()
    write(path, padded.ljust(64), b"ab")
    assert len(Checkpoint.open(path)) == 1  # at the limit
    write(path, padded.ljust(65), b"ab")
    with pytest.raises(CheckpointError, match="absurd"):
        Checkpoint.open(path)


@pytest.mark.parametrize("depth", [4, 50, 400, 600, 990, 5000, 200_000])
def test_json_nesting_depth(tmp_path, depth):
    """Deep nesting is refused, never a RecursionError (600 deep used to overflow the depth walk)."""
    nested = "[" * depth + "]" * depth
    header = ('{"t": {"dtype": "U8", "shape": [], "data_offsets": [0, 1]}, "x": ' + nested + "}").encode()
    path = write(tmp_path / "deep.safetensors", header, b"z")
    with pytest.raises(CheckpointError, match="nest"):
        Checkpoint.open(path)
    safetensors_rejects(path)


def safetensors_rejects(path: Path) -> None:
    with pytest.raises(Exception):
        safetensors.deserialize(path.read_bytes())


def test_tensor_count_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_module, "MAX_TENSORS", 10)
    assert len(Checkpoint.open(write(tmp_path / "ten.safetensors", tensor_header(10), b"x" * 20))) == 10
    with pytest.raises(CheckpointError, match="limit 10"):
        Checkpoint.open(write(tmp_path / "eleven.safetensors", tensor_header(11), b"x" * 22))


def test_shape_rank_limit(tmp_path):
    ok = write(tmp_path / "r64.safetensors", tensor_header(1, (1,) * MAX_RANK), b"q")
    assert Checkpoint.open(ok).tensors[0].shape == (1,) * MAX_RANK
    assert_safetensors_agrees(Checkpoint.open(ok))
    with pytest.raises(CheckpointError, match="rank"):
        Checkpoint.open(write(tmp_path / "r65.safetensors", tensor_header(1, (1,) * (MAX_RANK + 1)), b"q"))


@pytest.mark.parametrize(
    "shape, data",
    [
        ((4,), b"abc"),  # claims more bytes than the file holds
        ((2**40, 2**40, 2**40), b"abc"),  # an absurd product: refused by arithmetic, not by allocating
        ((2**64, 0), b""),  # zero elements, but a dimension beyond any tensor's
        ((2**63, 2, 0), b""),  # the running product overflows 64 bits before the zero
    ],
)
def test_total_bytes_and_dimensions(tmp_path, shape, data):
    header = {"t": {"dtype": "U8", "shape": list(shape), "data_offsets": [0, len(data)]}}
    path = write(tmp_path / "big.safetensors", header, data)
    with no_hang(5), pytest.raises(CheckpointError):
        Checkpoint.open(path)
    safetensors_rejects(path)


def test_index_size_limit(tmp_path, monkeypatch):
    (tmp_path / "a.safetensors").write_bytes(REAL["single"])
    (tmp_path / INDEX_NAME).write_text(json.dumps({"weight_map": {"only": "a.safetensors"}}).ljust(500))
    assert len(Checkpoint.open(tmp_path)) == 1
    monkeypatch.setattr(checkpoint_module, "MAX_HEADER_BYTES", 499)
    with pytest.raises(CheckpointError, match="limit"):
        Checkpoint.open(tmp_path)


# --- nothing is ever unpickled ---------------------------------------------------------------

PACKAGE = Path(checkpoint_module.__file__).parent
UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "marshal"}


def test_no_unpickling_in_the_sources():
    """No gdslab module imports an unpickler or calls torch.load / numpy.load / allow_pickle."""
    offenders = []
    for source in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(source.read_text(), str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                offenders += [f"{source.name}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNPICKLERS]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNPICKLERS:
                offenders.append(f"{source.name}: from {node.module} import")
            elif isinstance(node, ast.Attribute) and node.attr == "load" and isinstance(node.value, ast.Name) \
                    and node.value.id in {"torch", "np", "numpy", "pickle"}:
                offenders.append(f"{source.name}:{node.lineno}: {node.value.id}.load")
            elif isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                offenders.append(f"{source.name}:{node.lineno}: allow_pickle=")
    assert not offenders, offenders


def test_no_unpickling_at_run_time(tmp_path, monkeypatch):
    """Open and load a checkpoint by every CPU path with every unpickler booby-trapped."""
    from gdslab import datapaths
    from gdslab.loader import load

    def trap(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    (tmp_path / "m.safetensors").write_bytes(REAL["mixed"])
    for module, attr in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(module, attr, trap)
    for info in datapaths.available("cpu"):
        if info.available:
            result = load(tmp_path / "m.safetensors", info.name, "cpu", threads=2, io_size=64)
            assert set(result.tensors) == {"w", "b", "i", "s", "e"}


def test_dtype_table_matches_safetensors(tmp_path):
    """Every dtype gdslab maps to torch is the dtype safetensors' load_file gives it."""
    for name, dtype in DTYPES.items():
        if dtype is None:
            continue
        nbytes = 2 * _DTYPE_BITS[name] // 8
        path = write(tmp_path / f"{name}.safetensors", {"t": {"dtype": name, "shape": [2], "data_offsets": [0, nbytes]}},
                     b"\x01" * nbytes)
        assert load_file(str(path))["t"].dtype == dtype, name
