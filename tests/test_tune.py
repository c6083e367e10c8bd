"""`gdslab tune` and its profile: measured winners kept, used by `auto` loads, and every way a profile is wrong.

Every test keeps profiles in its own folder ($GDSLAB_CACHE_DIR), never the user's cache.
The oracles are the profile file itself (read with `json`) and safetensors' own tensors.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import gdslab
from gdslab import policy, tuned
from gdslab.cache import warm
from gdslab.cli import main

MiB = 1 << 20


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("GDSLAB_CACHE_DIR", str(folder))
    tuned._warned.clear()
    return folder


@pytest.fixture
def ckpt(tmp_path) -> Path:
    """Two shards, odd sizes, not zeros."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    g = torch.Generator().manual_seed(7)
    save_file({"a": torch.randn(1000, 517, generator=g).to(torch.bfloat16),
               "b": torch.randint(-9, 9, (33,), generator=g, dtype=torch.int32)}, folder / "one.safetensors")
    save_file({"c": torch.randn(777, 301, generator=g)}, folder / "two.safetensors")
    return folder


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def _expected(folder: Path) -> dict:
    out = {}
    for f in _files(folder):
        out.update(load_file(f))
    return out


def _machine(folder: Path) -> policy.Machine:
    return policy.this_machine(folder)


def _save_profile(folder: Path, threads=3, io_size=4 * MiB, **doc_changes) -> Path:
    machine = _machine(folder)
    winners = {"cpu/warm": {"datapath": "host-direct", "threads": threads, "io_size": io_size,
                            "options": {"direct": False}, "gbps": 1.23, "runs": 2}}
    path = tuned.save(machine, winners, [], str(folder), 5.0)
    if doc_changes:
        doc = json.loads(path.read_text())
        for key, value in doc_changes.items():
            doc[key] = value
        path.write_text(json.dumps(doc))
    return path


def _warm_load(folder: Path, **kwargs):
    warm(_files(folder))
    result = gdslab.load(folder, device="cpu", **kwargs)
    expected = _expected(folder)
    assert set(result.tensors) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(result.tensors[name].view(torch.uint8), tensor.view(torch.uint8)), name
    return result


def test_a_profile_round_trip_is_used_by_auto_loads_and_said(ckpt, private_cache):
    path = _save_profile(ckpt)
    assert path.parent == private_cache and json.loads(path.read_text())["winners"]["cpu/warm"]["threads"] == 3
    result = _warm_load(ckpt)
    rec = result.record()
    assert (result.datapath, result.threads, result.io_size) == ("host-direct", 3, 4 * MiB)
    assert rec["chosen_by"] == f"tune profile {path}" and "measured best by gdslab tune" in rec["why"]


def test_explicit_arguments_win_over_auto_and_over_the_profile(ckpt):
    _save_profile(ckpt)
    result = _warm_load(ckpt, threads=5, io_size="2MiB")
    assert (result.threads, result.io_size) == (5, 2 * MiB)
    assert "threads 5: asked for" in result.record()["why"]
    result = _warm_load(ckpt, datapath="pinned-bounce", threads=1, io_size="1MiB")
    assert (result.datapath, result.threads, result.io_size) == ("pinned-bounce", 1, MiB)
    assert result.record().get("chosen") is None, "nothing was auto: no policy record"


def _one_warning(ckpt: Path, path: Path, words: str):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = _warm_load(ckpt)
        second = _warm_load(ckpt)
    ignored = [w for w in caught if issubclass(w.category, tuned.ProfileIgnored)]
    assert len(ignored) == 1, [str(w.message) for w in caught]
    assert str(path) in str(ignored[0].message) and words in str(ignored[0].message)
    for result in (first, second):
        assert result.record()["chosen_by"] == "policy"
        assert result.threads == _machine(ckpt).usable_cpus  # the policy's warm rule: one thread per core


def test_a_profile_from_another_machine_is_ignored_with_one_warning(ckpt):
    other = {**_machine(ckpt).key(), "cpu_model": "Some Other CPU", "usable_cpus": 96}
    path = _save_profile(ckpt, machine=other)
    _one_warning(ckpt, path, "another machine")


def test_a_profile_from_another_kernel_is_stale(ckpt):
    path = _save_profile(ckpt, kernel="2.6.32-old")
    _one_warning(ckpt, path, "stale: measured under kernel 2.6.32-old")


def test_a_profile_for_another_mount_is_stale(ckpt):
    fs = {"mount_point": _machine(ckpt).mount_point, "fstype": _machine(ckpt).fstype, "source": "/dev/sdz9"}
    path = _save_profile(ckpt, filesystem=fs)
    _one_warning(ckpt, path, "from /dev/sdz9")


def test_a_truncated_profile_is_ignored(ckpt):
    path = _save_profile(ckpt)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    _one_warning(ckpt, path, "not valid JSON")


def test_an_unreadable_profile_is_ignored(ckpt):
    path = _save_profile(ckpt)
    path.unlink()
    path.mkdir()  # a folder where the file should be: reading it fails with an OSError, as for any unreadable file
    _one_warning(ckpt, path, "unreadable")


def test_malformed_winners_are_ignored(ckpt):
    path = _save_profile(ckpt, winners={"cpu/warm": {"datapath": "host-direct", "threads": "many"}})
    _one_warning(ckpt, path, "malformed")


def test_tune_measures_around_the_policy_and_keeps_the_winners(ckpt, private_cache):
    from gdslab.tune import tune

    result = tune(ckpt, device="cpu", budget_s=4.0, caches=("warm",), progress=False)
    assert result.profile is not None and result.profile.parent == private_cache
    doc = json.loads(result.profile.read_text())
    best = doc["winners"]["cpu/warm"]
    measured = [t for t in result.trials if t.gbps]
    assert any(t.policy for t in measured), "the policy's own choice is always measured"
    top = max(measured, key=lambda t: t.median)
    assert (best["threads"], best["io_size"], best["gbps"]) == (top.threads, top.io_size, top.median)
    table = result.table()
    assert "[policy" in table and "WINNER" in table and str(result.profile) in table
    assert _warm_load(ckpt).record()["chosen_by"] == f"tune profile {result.profile}"


def test_the_cli_tunes_shows_and_forgets(ckpt, capsys):
    assert main(["tune", str(ckpt), "--budget", "2", "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    path = tuned.profile_path(_machine(ckpt))
    assert path.exists() and str(path) in out
    assert main(["env", "--dir", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "== Tune profile" in out and str(path) in out and "cpu/warm" in out
    assert main(["tune", str(ckpt), "--forget"]) == 0
    assert not path.exists() and f"removed {path}" in capsys.readouterr().out
    assert main(["tune", str(ckpt), "--forget"]) == 0
    assert "no tune profile" in capsys.readouterr().out


def test_the_sweep_marks_the_auto_choice(ckpt, tmp_path):
    from gdslab.sweep import Grid, sweep

    cores = _machine(ckpt).usable_cpus
    grid = Grid(datapaths=("host-direct",), io_sizes=("16MiB",), threads=(cores, cores + 1), caches=("warm",),
                repeats=1, checkpoint=str(ckpt))
    done = sweep(tmp_path / "sweep", grid, device="cpu", progress=False)
    marks = {r["threads"]: r["policy_choice"] for r in done.ok()}
    assert marks == {cores: True, cores + 1: False}
