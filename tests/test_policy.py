"""The `auto` policy on recorded machines: each knob, and its reason, from the probe and the residency.

Machines are recorded: a /proc + /sys tree (the P5en fixture, with Lustre's layout and a
cgroup added) or a probe report's fields as `gdslab env --json` writes them. The expected
knobs are the issue's rules stated plainly (one thread per usable core for page-cache
copies, O_DIRECT where cold and allowed), not recomputed by the policy's own helpers.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from gdslab import policy
from gdslab.policy import LoadFacts, Machine, cgroup_cpu_quota, choose, machine_facts
from gdslab.sysroot import SysRoot

FIXTURE = Path(__file__).parent / "fixtures" / "p5en"
MiB = 1 << 20


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """No test reads or writes the real user cache folder (where tune profiles live)."""
    monkeypatch.setenv("GDSLAB_CACHE_DIR", str(tmp_path / "cache"))


def report(cpus=2, affinity=None, fstype="ext4", mount="/", source="/dev/vda", devices=("vda",), gpus=0,
           gds_state="not possible", kernel="6.8.0"):
    """A probe report's fields as `ProbeReport.as_dict()` writes them (the parts the policy reads)."""
    return {"cpu_model": "AMD EPYC", "cpu_count": cpus, "cpu_affinity": affinity or cpus, "kernel": kernel,
            "cuda": {"gpu_available": gpus > 0, "gpus": [{"index": k} for k in range(gpus)]},
            "filesystem": {"directory": mount, "mount_point": mount, "fstype": fstype, "source": source,
                           "block_devices": list(devices)},
            "gds_state": gds_state}


def tree(tmp_path, files: dict[str, str]) -> SysRoot:
    for name, text in files.items():
        path = tmp_path / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return SysRoot(tmp_path)


def test_two_cores_warm_copies_with_one_thread_per_core(tmp_path):
    machine = machine_facts(report(cpus=2), tree(tmp_path, {"/proc/self/cgroup": "0::/\n"}))
    assert machine.usable_cpus == 2 and machine.cpu_quota is None
    warm = choose(machine, LoadFacts("cpu", resident=1.0))
    assert (warm.datapath, warm.threads, warm.options["direct"]) == ("host-direct", 2, False)
    assert "threads 2: 2 usable cores" in warm.why["threads"] and "CPU-bound copies" in warm.why["threads"]
    assert "page-cache reads" in warm.why["direct"]


def test_two_cores_cold_reads_with_o_direct_and_a_queue(tmp_path):
    machine = machine_facts(report(cpus=2), tree(tmp_path, {"/proc/self/cgroup": "0::/\n"}))
    cold = choose(machine, LoadFacts("cpu", resident=0.0))
    assert cold.datapath == "host-direct" and cold.options["direct"] is True
    assert cold.why["direct"].startswith("O_DIRECT: 0% of the checkpoint resident")
    assert cold.threads > 2, "cold reads wait on the device: more in flight than cores"
    assert cold.io_size >= 4 * MiB
    assert set(cold.why) >= {"datapath", "threads", "io_size", "direct"}


def test_cgroup_v2_quota_of_one_and_a_half_cpus_caps_the_copies(tmp_path):
    root = tree(tmp_path, {"/proc/self/cgroup": "0::/job/step\n",
                           "/sys/fs/cgroup/job/step/cpu.max": "max 100000\n",
                           "/sys/fs/cgroup/job/cpu.max": "150000 100000\n"})
    assert cgroup_cpu_quota(root) == (1.5, "/sys/fs/cgroup/job/cpu.max")
    machine = machine_facts(report(cpus=16, affinity=8), root)
    assert machine.usable_cpus == 2  # 1.5 CPUs of time: two threads can use it, a third only waits
    warm = choose(machine, LoadFacts("cpu", resident=1.0))
    assert warm.threads == 2 and "cgroup quota 1.5 CPUs" in warm.why["threads"]


def test_cgroup_v1_quota(tmp_path):
    root = tree(tmp_path, {"/proc/self/cgroup": "4:cpu,cpuacct:/docker/abc\n",
                           "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n",
                           "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"})
    quota, _ = cgroup_cpu_quota(root)
    assert quota == 0.5
    assert machine_facts(report(cpus=4), root).usable_cpus == 1


def test_no_quota_is_no_limit(tmp_path):
    root = tree(tmp_path, {"/proc/self/cgroup": "1:cpu:/\n", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
                           "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_quota(root)[0] is None


def test_tmpfs_refuses_o_direct_and_says_so(tmp_path):
    machine = machine_facts(report(fstype="tmpfs", mount="/dev/shm", source="tmpfs", devices=()),
                            tree(tmp_path, {"/proc/self/cgroup": "0::/\n"}))
    cold = choose(machine, LoadFacts("cpu", resident=0.0))
    assert cold.options["direct"] is False and "tmpfs" in cold.why["direct"] and "O_DIRECT" in cold.why["direct"]


def test_a_load_on_tmpfs_falls_back_and_records_why(tmp_path):
    """The real load on /dev/shm (tmpfs): the policy does not ask for O_DIRECT, and the record says why."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm here")
    import torch
    from safetensors.torch import save_file

    import gdslab

    folder = Path(shutil.os.path.join(shm, f"gdslab-policy-{shutil.os.getpid()}"))
    folder.mkdir()
    try:
        tensors = {"w": torch.arange(5000, dtype=torch.int32).reshape(50, 100) * 7 + 3}
        save_file(tensors, folder / "model.safetensors")
        policy.forget()
        result = gdslab.load(folder / "model.safetensors", device="cpu")
        rec = result.record()
        assert torch.equal(result.tensors["w"], tensors["w"])
        assert rec["fs_type"] == "tmpfs"
        assert rec["auto"] == "datapath,threads,io_size" and rec["chosen_by"] == "policy"
        assert "tmpfs" in rec["why"] and "O_DIRECT" not in rec["effective"]
        assert result.options.get("direct") is False
    finally:
        shutil.rmtree(folder)
        policy.forget()


@pytest.fixture
def p5en(tmp_path) -> Path:
    """The recorded P5en tree with a Lustre client's layout (32 stripes of 64 OSTs) and no CPU quota."""
    root = tmp_path / "p5en"
    shutil.copytree(FIXTURE, root, symlinks=True)
    for name, text in {"sys/fs/lustre/lov/fsxmount-clilov-ffff9a/stripecount": "32\n",
                       "sys/fs/lustre/lov/fsxmount-clilov-ffff9a/numobd": "64\n",
                       "proc/self/cgroup": "0::/\n"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _p5en_machine(root: Path, gds: bool = True) -> Machine:
    from test_probe_fixtures import CUDA, kvikio

    from gdslab.gpus import GpuInfo
    from gdslab.probe import report_for

    gpus = tuple(GpuInfo(k, "NVIDIA H200", 141 * 10**9, "", uuid=f"GPU-{k}", cuda_index=k) for k in range(8))
    cuda = dataclasses.replace(CUDA, gpus=gpus)
    probed = report_for("/fsx/llama-3.1-405b", cuda, kvikio(gds), SysRoot(root), page_cache=(True, "recorded"))
    probed = dataclasses.replace(probed, cpu_count=192, cpu_affinity=192, cpu_model="AMD EPYC 9R14 96-Core")
    return machine_facts(probed, SysRoot(root))


def test_p5en_on_lustre_reads_by_gds_with_a_pool_per_gpu_for_the_stripes(p5en):
    machine = _p5en_machine(p5en)
    assert (machine.usable_cpus, machine.gpus, machine.fstype) == (192, 8, "lustre")
    assert (machine.lustre_stripes, machine.lustre_osts) == (32, 64) and machine.gds_ready
    one = choose(machine, LoadFacts("cuda", resident=0.0, gds_available=True))
    assert one.datapath == "gds" and "GDS is ready" in one.why["datapath"]
    assert one.threads == 4 * 32 and "32 OSTs" in one.why["threads"] and "KvikIO" in one.why["threads"]
    eight = choose(machine, LoadFacts("cuda", resident=0.0, gds_available=True, ranks=8))
    assert eight.threads == 4 * 32 // 8, "the stripes' reads shared by the 8 GPUs of one process"
    assert eight.io_size >= 4 * MiB and "task size" in eight.why["io_size"]


def test_p5en_warm_copies_from_the_page_cache_through_the_pinned_ring(p5en):
    machine = _p5en_machine(p5en)
    warm = choose(machine, LoadFacts("cuda", resident=1.0, gds_available=True, ranks=8))
    assert warm.datapath == "pinned-bounce" and warm.threads == 192 // 8
    ring = warm.options["buffers_per_thread"] * warm.threads * warm.io_size
    assert ring <= 1 << 30 and "pinned" in warm.why["buffers_per_thread"]


def test_a_gpu_where_gds_is_not_ready_bounces(p5en):
    machine = _p5en_machine(p5en, gds=False)
    assert not machine.gds_ready
    cold = choose(machine, LoadFacts("cuda", resident=0.0, gds_available=True))
    assert cold.datapath == "pinned-bounce" and "not ready" in cold.why["datapath"]


def test_explicit_datapath_keeps_its_own_options():
    machine = Machine(logical_cpus=2, affinity_cpus=2, fstype="ext4", block_devices=("vda",))
    pick = choose(machine, LoadFacts("cpu", resident=0.0), datapath="pinned-bounce")
    assert pick.datapath == "pinned-bounce" and "direct" not in pick.options and "asked for" in pick.why["datapath"]


def test_resolve_lets_every_explicit_value_win(tmp_path):
    import torch

    r = policy.resolve(tmp_path, [], torch.device("cpu"), "pinned-bounce", 3, "4MiB", {})
    assert (r.datapath, r.threads, r.io_size, r.options, r.details) == ("pinned-bounce", 3, "4MiB", {}, {})
    r = policy.resolve(tmp_path, [], torch.device("cpu"), "auto", 3, "auto", {"direct": False})
    assert r.datapath == "host-direct" and r.threads == 3 and r.options == {"direct": False}
    assert "threads 3: asked for" in r.details["why"] and "direct=False: asked for" in r.details["why"]
    assert r.details["auto"] == "datapath,io_size"
