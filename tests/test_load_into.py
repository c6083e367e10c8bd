"""gdslab.load_into: a checkpoint straight into a transformers Llama, checked against safetensors and from_pretrained."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import gdslab.into_model as into_model
from gdslab import PRESETS, Checkpoint, reshard, write_checkpoint
from gdslab.into_model import CheckpointMismatch, load_into, parameters_on_meta
from gdslab.synthetic import scaled_shape
from gdslab.ttft import build_model, prompt_ids

transformers = pytest.importorskip("transformers")
HAS_CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine (torch.cuda.is_available() is False)")

HOST_PATHS = [("host-direct", {}), ("host-direct", {"direct": True}), ("pageable-bounce", {}),
              ("pageable-bounce", {"direct": True}), ("pinned-bounce", {}), ("pinned-bounce", {"direct": True})]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("into") / "ckpt", size="4MiB", shards=3)


@pytest.fixture(scope="module")
def expected(folder):
    """The oracle: every tensor as safetensors reads it."""
    out = {}
    for f in Checkpoint.open(folder).files:
        out.update(load_file(f.path))
    return out


def reference(folder, device="cpu"):
    transformers.utils.logging.disable_progress_bar()
    kwargs = {"device_map": device} if device != "cpu" else {}
    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype="auto", **kwargs).eval()


def logits(model, device="cpu"):
    with torch.inference_mode():
        return model(prompt_ids(model.config.vocab_size).to(device)).logits.cpu()


@pytest.fixture(scope="module")
def reference_logits(folder):
    return logits(reference(folder))


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.detach().cpu().contiguous().view(torch.uint8), b.detach().cpu().contiguous().view(torch.uint8))


def test_lab_checkpoints_carry_a_config_transformers_builds(folder, expected):
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["torch_dtype"] == "bfloat16"
    model = reference(folder)
    assert set(model.state_dict()) == set(expected)
    for preset in PRESETS:  # rotary embeddings rotate pairs: every scaled head dimension is even
        for size in (8 << 20, 32 << 20, 128 << 20, 512 << 20):
            assert scaled_shape(preset, size, 2).head_dim % 2 == 0


@pytest.mark.parametrize("datapath,options", HOST_PATHS, ids=[f"{p}{'-direct' if o else ''}" for p, o in HOST_PATHS])
def test_meta_model_by_every_host_path_matches_from_pretrained(folder, expected, reference_logits, datapath, options):
    model = build_model(folder)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    result = load_into(model, folder, datapath, "cpu", threads=3, io_size="256KiB", **options)
    state = model.state_dict()
    assert set(state) == set(expected)
    for name, tensor in expected.items():
        assert same_bytes(state[name], tensor), name
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert torch.equal(logits(model), reference_logits)
    assert result.details["materialized"] == len(expected) and result.details["in_place"] == 0
    assert result.nbytes == sum(t.nbytes for t in expected.values())
    assert result.datapath == datapath and result.events


@pytest.mark.parametrize("datapath", ["host-direct", "pageable-bounce", "pinned-bounce"])
def test_allocated_model_is_filled_in_place(folder, expected, reference_logits, datapath):
    config = transformers.AutoConfig.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    before = {name: t.data_ptr() for name, t in model.state_dict().items()}
    result = load_into(model, folder, datapath, threads=2)
    after = model.state_dict()
    assert {name: t.data_ptr() for name, t in after.items()} == before  # the same memory, filled
    for name, tensor in expected.items():
        assert same_bytes(after[name], tensor), name
    assert result.details["in_place"] == len(expected) and result.details["materialized"] == 0
    assert torch.equal(logits(model), reference_logits)


def test_every_mismatch_is_named_before_a_byte_is_read(folder, expected, monkeypatch):
    target = {name: torch.full_like(t, 3.0) for name, t in expected.items()}
    del target["model.norm.weight"]  # in the checkpoint, not in the model
    target["model.extra.weight"] = torch.zeros(4)  # in the model, not in the checkpoint
    q = "model.layers.0.self_attn.q_proj.weight"
    target[q] = torch.zeros(target[q].shape[0] + 1, target[q].shape[1], dtype=torch.bfloat16)
    k = "model.layers.1.self_attn.k_proj.weight"
    target[k] = target[k].float()
    snapshot = {name: t.clone() for name, t in target.items()}

    def no_read(*args, **kwargs):
        raise AssertionError("a mismatched checkpoint must not be read")

    monkeypatch.setattr(into_model, "load", no_read)
    with pytest.raises(CheckpointMismatch) as info:
        load_into(target, folder, "host-direct")
    message = str(info.value)
    for name in ("model.norm.weight", "model.extra.weight", q, k):
        assert name in message
    assert "4 mismatch" in message and "nothing was read" in message and str(folder) in message
    error = info.value
    assert (error.missing, error.unexpected) == (["model.extra.weight"], ["model.norm.weight"])
    assert len(error.shape) == 1 and len(error.dtype) == 1
    assert all(torch.equal(target[name], snapshot[name]) for name in target)


def test_a_model_of_another_size_is_refused_whole(folder, tmp_path):
    other = write_checkpoint(tmp_path / "other", size="16MiB", shards=1)
    model = build_model(other)
    with pytest.raises(CheckpointMismatch) as info:
        load_into(model, folder, "host-direct", "cpu")
    error = info.value
    assert error.shape and error.missing  # wider tensors and layers the smaller checkpoint lacks, all named
    layers = json.loads((other / "config.json").read_text())["num_hidden_layers"]
    assert f"model.layers.{layers - 1}.mlp.up_proj.weight" in str(error)


def test_tied_embeddings_load_once(folder, expected, tmp_path):
    tied = tmp_path / "tied"
    tied.mkdir()
    save_file({n: t for n, t in expected.items() if n != "lm_head.weight"}, str(tied / "model.safetensors"),
              metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    (tied / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    model = build_model(tied)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    result = load_into(model, tied, "host-direct")
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still one tensor, now real
    assert same_bytes(model.lm_head.weight, expected["model.embed_tokens.weight"])
    assert result.details["materialized"] == len(expected) - 1
    assert torch.equal(logits(model), logits(reference(tied)))
    both = build_model(tied)  # a checkpoint that holds both names reads the tensor once
    result = load_into(both, folder, "host-direct")
    assert "lm_head.weight" in result.details["tied_skipped"]
    assert same_bytes(both.lm_head.weight, expected["model.embed_tokens.weight"])


def test_non_persistent_buffers_on_meta_are_named(folder):
    config = transformers.AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    with pytest.raises(CheckpointMismatch, match="rotary_emb.inv_freq"):
        load_into(model, folder, "host-direct", "cpu")


def test_non_persistent_buffers_keep_what_the_model_computed(folder):
    model = build_model(folder)
    load_into(model, folder, "host-direct")
    for (name, ours), (_, theirs) in zip(model.named_buffers(), reference(folder).named_buffers()):
        assert torch.equal(ours, theirs), name


def test_strict_false_tolerates_missing_real_tensors_not_meta_ones(folder, expected):
    target = {n: torch.empty_like(t) for n, t in expected.items() if n != "model.norm.weight"}
    target["model.extra"] = torch.zeros(2)
    load_into(target, folder, "host-direct", strict=False)
    assert all(same_bytes(target[n], expected[n]) for n in target if n != "model.extra")
    with parameters_on_meta():
        holder = torch.nn.Linear(2, 2)
    meta = {**{n: torch.empty_like(t) for n, t in expected.items()}, "extra": holder.weight}
    with pytest.raises(CheckpointMismatch, match="on meta with nothing to fill them"):
        load_into(meta, folder, "host-direct", strict=False)


def test_peers_cannot_load_in_place(folder, expected):
    with pytest.raises(ValueError, match="cannot load in place"):
        load_into({n: torch.empty_like(t) for n, t in expected.items()}, folder, "safetensors")


@pytest.mark.parametrize("datapath", ["host-direct", "pinned-bounce"])
def test_tensor_parallel_rank_holds_its_slices(folder, expected, datapath):
    from gdslab.plan import split_kind

    world, rank = 2, 1

    def owned(name, t):
        _, dim = split_kind(name, t.dim())
        return t if dim is None else torch.chunk(t, world, dim)[rank]

    target = {n: torch.empty_like(owned(n, t)) for n, t in expected.items()}
    o = "model.layers.1.self_attn.o_proj.weight"  # row-parallel: strided in the file, read row by row
    target[o] = torch.nn.Parameter(torch.empty(target[o].shape, dtype=target[o].dtype, device="meta"))
    load_into(target, folder, datapath, rank=rank, world=world)
    for name, tensor in expected.items():
        assert same_bytes(target[name], owned(name, tensor)), name


def test_presharded_rank_files_load_into_the_rank(folder, expected, tmp_path):
    pset = reshard(folder, tmp_path / "tp2", tp=2, progress=False)
    for rank in range(2):
        oracle = {}
        for path in pset.files(rank):
            oracle.update(load_file(path))
        target = {n: torch.empty_like(t) for n, t in oracle.items()}
        load_into(target, pset.root, "pageable-bounce", rank=rank)
        assert all(same_bytes(target[n], oracle[n]) for n in oracle)
    with pytest.raises(ValueError, match="rank="):
        load_into(target, pset.root, "host-direct")


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("datapath", ["pinned-bounce", "pageable-bounce", "gds"])
def test_gpu_paths_match_from_pretrained_on_the_gpu(folder, expected, datapath):
    from gdslab import datapaths

    if not datapaths.get(datapath).info(torch.device("cuda:0")).available:
        pytest.skip(datapaths.get(datapath).info(torch.device("cuda:0")).reason)
    model = build_model(folder)
    load_into(model, folder, datapath, "cuda:0")
    for name, tensor in expected.items():
        assert same_bytes(model.state_dict()[name], tensor), name
    assert torch.equal(logits(model, "cuda:0"), logits(reference(folder, "cuda:0"), "cuda:0"))
