"""Many GPUs refused rather than faked: more ranks than GPUs is an error unless simulation is asked for,
simulated ranks are recorded so, "cuda" is the current device, and torchrun's local ranks are checked
against the visible GPUs before NCCL starts."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from gdslab.errors import DatapathUnavailable
from gdslab.sharded import SIMULATED, load_sharded
from gdslab.synthetic import write_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("many") / "c", "2MiB", 2)


def test_more_ranks_than_gpus_is_refused_unless_simulation_is_asked(ckpt):
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    world = gpus + 1
    with pytest.raises(DatapathUnavailable, match=rf"{world} ranks on GPUs need {world} GPUs, but this machine "
                                                  rf"has {gpus}: .*simulate=True"):
        load_sharded(ckpt, world, device="cuda", threads=1)
    if world % 2:  # a world the checkpoint's shapes divide by
        world += 1
    result = load_sharded(ckpt, world, device="cuda", simulate=True, threads=1)
    assert result.simulated and all(r["simulated"] and r["note"] == SIMULATED for r in result.records())
    assert result.record()["simulated"] is True
    # simulated, but still each rank's own slice: compare with plain slices of safetensors' tensors
    full = {}
    for f in sorted(ckpt.glob("*.safetensors")):
        full.update(load_file(f))
    name = next(n for n in full if n.endswith("embed_tokens.weight"))
    rows = full[name].shape[0] // world
    for rank, rr in enumerate(result.ranks):
        assert torch.equal(rr.tensors[name], full[name][rank * rows:(rank + 1) * rows])


def test_cpu_ranks_asked_for_are_simulated_and_said(ckpt):
    result = load_sharded(ckpt, 2, device="cpu", threads=1)
    assert result.simulated and SIMULATED in str(result)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
@pytest.mark.gpu
def test_cuda_means_the_current_device():
    from gdslab.devices import resolve_device

    assert resolve_device("cuda") == torch.device("cuda", torch.cuda.current_device())


def test_local_ranks_beyond_the_visible_gpus_are_refused_before_nccl():
    from gdslab.dist import check_local_ranks

    check_local_ranks(2, 2)
    check_local_ranks(None, 1)  # not under torchrun: nothing to check
    with pytest.raises(DatapathUnavailable, match=r"LOCAL_WORLD_SIZE=8 .* 1 GPU\(s\) visible.*--nproc-per-node 1"):
        check_local_ranks(8, 1)
