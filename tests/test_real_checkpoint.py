"""A real Hugging Face checkpoint, written by `huggingface_hub`, through the CLI, sweeps and the notebooks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import save_torch_state_dict

import gdslab
from gdslab.lab import CHECKPOINT_VAR, describe_checkpoint, lab_checkpoint
from gdslab.synthetic import PRESETS, scaled_shape, tensor_content

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory) -> Path:
    """A small Llama-shaped model saved the way `transformers` saves one: HF shards and an index."""
    shape = scaled_shape(PRESETS["llama-3.1-8b"], 6 << 20, 2)
    state = {name: tensor_content(name, dims, torch.bfloat16, 11) for name, dims in shape.tensors()}
    folder = tmp_path_factory.mktemp("hf") / "tiny-llama"
    folder.mkdir()
    save_torch_state_dict(state, folder, max_shard_size="2MB")
    (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    return folder


def test_huggingface_hub_wrote_a_sharded_checkpoint_gdslab_reads(hf_model):
    ckpt = gdslab.Checkpoint.open(hf_model)
    assert ckpt.index is not None and len(ckpt.files) >= 3
    result = gdslab.load(hf_model, "host-direct", "cpu")
    from safetensors.torch import load_file

    for f in ckpt.files:
        for name, want in load_file(str(f.path)).items():
            assert torch.equal(result.tensors[name].view(torch.uint8), want.view(torch.uint8)), name


def test_the_lab_follows_gdslab_checkpoint(hf_model, monkeypatch):
    monkeypatch.setenv(CHECKPOINT_VAR, str(hf_model))
    assert lab_checkpoint(shards=4) == hf_model
    words = describe_checkpoint(hf_model)
    assert "tiny-llama" in words and "BF16" in words and "your checkpoint" in words
    monkeypatch.setenv(CHECKPOINT_VAR, str(hf_model / "missing"))
    with pytest.raises(gdslab.CheckpointError, match="missing"):
        lab_checkpoint()


def test_cli_load_says_what_it_loaded_and_which_path_and_why(hf_model, capsys):
    from gdslab.cli import main

    assert main(["load", str(hf_model), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "tiny-llama" in out and "BF16" in out and "by host-direct (policy)" in out
    assert "datapath host-direct: one copy, straight into the destination" in out  # the policy's reason, said


def test_sweeps_and_the_demo_take_a_real_checkpoint(hf_model, tmp_path):
    from gdslab.headline import compare_paths
    from gdslab.sweep import Grid, sweep

    grid = Grid(datapaths=["host-direct"], io_sizes=["1MiB"], threads=[2], shards=[1, 4], caches=["warm"],
                repeats=1, checkpoint=str(hf_model))
    files = len(gdslab.Checkpoint.open(hf_model).files)
    assert grid.shards == (files,) and grid.checkpoint_id == str(hf_model.resolve())
    result = sweep(tmp_path / "sweep", grid, device="cpu", progress=False)
    assert [r["checkpoint"] for r in result.ok()] == [str(hf_model.resolve())]
    headline = compare_paths(tmp_path / "demo", device="cpu", repeats=1, caches=("warm",), progress=False,
                             checkpoint=hf_model)
    assert headline.nbytes == gdslab.Checkpoint.open(hf_model).nbytes and headline.rows


def test_the_notebooks_run_on_it(hf_model, tmp_path):
    env = {**os.environ, CHECKPOINT_VAR: str(hf_model), "GDSLAB_LAB_SIZE": "32MiB",
           "GDSLAB_CHECKPOINTS": str(tmp_path / "cache")}
    notebooks = [str(ROOT / "notebooks" / n) for n in ("01_checkpoints.ipynb", "02_bounce_vs_gds.ipynb",
                                                         "03_sweeps.ipynb", "04_sharded_parallel.ipynb")]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           "--nbval-current-env", *notebooks], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-4000:]
