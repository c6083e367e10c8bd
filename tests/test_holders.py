"""Who keeps a checkpoint in memory, named: a real process or a real Jupyter kernel maps a shard,
eviction leaves its pages resident, and the sweep's cold path explains it instead of failing.

The oracles are outside gdslab.holders: the holder's pid comes from the process we started,
the notebook name from the JPY_SESSION_NAME we gave the kernel (as the Jupyter server does),
and the residency from util-linux fincore where installed (tests/test_cache.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import require_eviction
from safetensors.torch import save_file

from gdslab import holders
from gdslab.cache import evict, resident_fraction, warm
from gdslab.sweep import Grid, prepare_cache, sweep

if not Path("/proc/self/maps").exists():
    pytest.skip("needs Linux /proc", allow_module_level=True)

# Maps the file, touches every page, says "ready", then waits to be stopped.
HOLD = textwrap.dedent("""
    import mmap, sys, time
    with open(sys.argv[1], "rb") as f:
        view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    touched = sum(view[i] for i in range(0, len(view), 4096))
    print("ready", flush=True)
    time.sleep(600)
""")


def _shard(folder: Path, name: str = "model.safetensors") -> Path:
    """A real safetensors file (4 MiB of non-zero bf16), written by the safetensors library."""
    gen = torch.Generator().manual_seed(7)
    tensors = {f"layer.{k}.weight": torch.randn(1024, 1024 + k, generator=gen).to(torch.bfloat16) for k in range(2)}
    path = folder / name
    save_file(tensors, str(path))
    return path


def _hold(path: Path, script_dir: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    script = script_dir / "hold_shard.py"
    script.write_text(HOLD)
    child = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, **(env or {})})
    assert child.stdout.readline().strip() == "ready"
    return child


def _stop(child: subprocess.Popen) -> None:
    child.kill()
    child.wait(timeout=10)


@pytest.fixture
def evictable(tmp_path) -> Path:
    require_eviction(tmp_path)
    return tmp_path


def test_a_process_mapping_a_shard_keeps_its_pages_and_is_named(evictable, tmp_path_factory):
    shard = _shard(evictable)
    child = _hold(shard, tmp_path_factory.mktemp("holder"))
    try:
        evict(shard)
        assert resident_fraction(shard) > 0.9  # mapped pages survive DONTNEED: why the holder matters
        found, _ = holders.holders([shard])
        assert [(h.pid, h.mapped, h.is_self) for h in found] == [(child.pid, (shard.name,), False)]
        assert "hold_shard.py" in found[0].name and found[0].notebook is None
        why = holders.explain([shard])
        assert f"pid {child.pid}" in why and "hold_shard.py" in why and f"stop pid {child.pid}" in why
        assert holders.held_elsewhere([shard]) == why
    finally:
        _stop(child)
    evict(shard)
    assert resident_fraction(shard) < 0.05  # the holder gone, eviction works again
    assert holders.holders([shard])[0] == []
    assert holders.held_elsewhere([shard]) == ""
    assert holders.explain([shard]).startswith("no process maps these files")


def test_this_process_is_named_as_itself_and_is_not_someone_else(tmp_path):
    import mmap

    shard = _shard(tmp_path)
    with open(shard, "rb") as f:
        view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        found, _ = holders.holders([shard])
        assert [(h.pid, h.is_self, h.name) for h in found] == [(os.getpid(), True, "this process")]
        assert "release them in this kernel" in holders.explain([shard])
        assert holders.held_elsewhere([shard]) == ""  # our own mapping is our bug, not a room's
    finally:
        view.close()
    assert holders.holders([shard])[0] == []


def test_a_file_only_held_open_is_listed_apart_from_mappings(tmp_path):
    shard = _shard(tmp_path)
    with open(shard, "rb"):
        found, _ = holders.holders([shard])
        assert [(h.is_self, h.mapped, h.opened) for h in found] == [(True, (), (shard.name,))]
        assert holders.explain([shard]).startswith("no process maps these files")  # open files keep no pages
        assert "has model.safetensors open" in holders.explain([shard], skip_opened=False)


def test_an_ipykernel_command_line_gives_its_connection_file():
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "/run/jupyter/kernel-1234-abcd.json"]
    assert holders._connection_file(argv) == "/run/jupyter/kernel-1234-abcd.json"
    assert holders._connection_file([sys.executable, "-f", "x.json"]) is None  # not a kernel


@pytest.fixture
def kernel_of_01():
    """A real IPython kernel started as the Jupyter server starts one for notebooks/01_checkpoints.ipynb."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3",
                                       env={**os.environ, "JPY_SESSION_NAME": "notebooks/01_checkpoints.ipynb"})
    try:
        yield manager, client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def _run(client, code: str) -> None:
    reply = client.execute_interactive(code, timeout=60, output_hook=lambda msg: None)
    assert reply["content"]["status"] == "ok", reply["content"]


def test_the_sweeps_cold_path_names_the_notebook_whose_kernel_maps_a_shard(evictable, kernel_of_01, tmp_path_factory):
    manager, client = kernel_of_01
    ckpt = evictable / "ckpt"
    ckpt.mkdir()
    shard = _shard(ckpt)
    # What notebook 01's byte check used to do: safetensors' load_file, one tensor kept alive.
    _run(client, "from safetensors.torch import load_file\n"
                 f"ref = load_file({str(shard)!r})\n"
                 "_ = [float(t.float().sum()) for t in ref.values()]")
    kernel_pid = manager.provisioner.process.pid
    ok, resident, why = prepare_cache([shard], "cold")
    assert not ok and resident > 0.05
    assert f"the kernel of 01_checkpoints.ipynb (pid {kernel_pid}) maps {shard.name}" in why
    assert "shut down the kernel of 01_checkpoints.ipynb: Kernel → Shut Down Kernel" in why

    # A whole sweep over that checkpoint: the cold run is skipped with that reason; nothing raises.
    grid = Grid(datapaths=["host-direct"], io_sizes=["1MiB"], threads=[1], caches=["cold", "warm"], repeats=1,
                checkpoint=str(ckpt))
    result = sweep(tmp_path_factory.mktemp("sweep"), grid, device="cpu", progress=False)
    by_cache = {r["cache_asked"]: r for r in result.records}
    assert by_cache["cold"]["status"] == "skipped" and "the kernel of 01_checkpoints.ipynb" in by_cache["cold"]["reason"]
    assert by_cache["warm"]["status"] == "ok"

    # The notebook let go (`del ref`): the next cold run is made.
    _run(client, "del ref, _\nimport gc; gc.collect()")
    deadline = time.monotonic() + 10
    while holders.holders([shard])[0] and time.monotonic() < deadline:
        time.sleep(0.2)
    ok, resident, why = prepare_cache([shard], "cold")
    assert ok and resident < 0.05, why
    warm([shard])


NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def test_notebook_02_explains_a_shard_mapped_by_another_kernel_instead_of_failing(tmp_path, monkeypatch, kernel_of_01):
    """A workshop room: notebook 01's kernel (as it was) still maps a shard while 02 runs top to bottom."""
    import nbformat
    from nbclient import NotebookClient

    from gdslab.lab import lab_checkpoint

    monkeypatch.setenv("GDSLAB_CHECKPOINTS", str(tmp_path / "checkpoints"))  # this test's own lab checkpoint
    monkeypatch.setenv("GDSLAB_LAB_SIZE", "32MiB")
    monkeypatch.delenv("GDSLAB_CHECKPOINT", raising=False)
    folder = lab_checkpoint(shards=4)  # the one notebook 02 will load
    require_eviction(folder)
    shard = sorted(folder.glob("*.safetensors"))[0]
    manager, client = kernel_of_01
    _run(client, "from safetensors.torch import load_file\n"
                 f"ref = load_file({str(shard)!r})\n"
                 "_ = [float(t.float().sum()) for t in ref.values()]")
    holder = f"the kernel of 01_checkpoints.ipynb (pid {manager.provisioner.process.pid}) maps {shard.name}"

    nb = nbformat.read(NOTEBOOKS / "02_bounce_vs_gds.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    text = {cell.get("id"): "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")
            for cell in nb.cells if cell.cell_type == "code"}
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    for cell_id in ("5ad85399", "6007e8b1"):  # the cold-vs-warm table's claim, the page-cache footprint
        assert holder in text[cell_id], text[cell_id]
        assert "shut down the kernel of 01_checkpoints.ipynb: Kernel → Shut Down Kernel" in text[cell_id]
