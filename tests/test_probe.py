"""The machine probe: on this machine (no GPU, KvikIO installed but no libcuda) and with parts removed."""

from __future__ import annotations

import ctypes
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gdslab.cli import main
from gdslab.probe import ProbeReport, filesystem_of, gpu_available, kvikio_status, probe

# `gdslab.probe` the attribute is the re-exported function; the module is reached by name.
probe_mod = importlib.import_module("gdslab.probe")
from gdslab import filesystem as fs_mod, pcie  # noqa: E402
from gdslab.sysroot import SysRoot  # noqa: E402


def _libcuda_loadable() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def _torch_has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


needs_no_gpu = pytest.mark.skipif(_torch_has_gpu(), reason="this machine has a CUDA GPU")
needs_no_libcuda = pytest.mark.skipif(_libcuda_loadable(), reason="libcuda.so.1 loads on this machine")


@pytest.fixture
def fresh():
    """Probe from scratch, and leave no answer computed under a patched environment behind."""
    probe_mod._forget()
    yield
    probe_mod._forget()


def test_report_has_every_section_and_ends_with_the_verdict(tmp_path):
    report = probe(tmp_path)
    assert isinstance(report, ProbeReport)
    text = report.as_text()
    for section in ("== Machine", "== GPUs", "== CUDA", "== KvikIO / cuFile", "== nvidia-fs",
                    "== File system", "== Page cache"):
        assert section in text
    assert text.splitlines()[-1] == report.verdict
    assert report.cpu_count >= 1 and report.ram_total > report.ram_available > 0


def test_verdict_names_what_this_machine_lacks(tmp_path):
    # Checked against the machine itself, not against the report's own fields.
    report = probe(tmp_path)
    assert "\n" not in report.verdict
    if not _torch_has_gpu():
        assert report.verdict.startswith("GDS: not possible here because ") and "no usable NVIDIA GPU" in report.verdict
    if not Path("/proc/driver/nvidia-fs").exists() and report.filesystem.fstype not in ("ext4", "xfs"):
        assert "nvidia-fs" in report.verdict
    if not _libcuda_loadable():
        assert "libcuda.so.1" in report.verdict


def test_probe_is_computed_once_per_directory(tmp_path):
    assert probe(tmp_path) is probe(tmp_path)
    assert probe(tmp_path) is probe(str(tmp_path) + "/")


@needs_no_gpu
def test_reports_no_gpu_here(tmp_path):
    report = probe(tmp_path)
    assert report.gpus == ()
    assert not gpu_available()
    assert not report.cuda.gpu_available and report.cuda.gpu_reason
    assert "none usable" in report.as_text()
    assert not report.gds_ready
    assert any("no usable NVIDIA GPU" in r for r in report.reasons)


@needs_no_libcuda
def test_kvikio_imports_but_is_unusable_for_want_of_libcuda(tmp_path):
    kvikio = pytest.importorskip("kvikio", reason="KvikIO is not installed (the test extras install kvikio-cu12)")
    report = probe(tmp_path)
    info = report.kvikio
    assert info.installed and info.version == kvikio.__version__
    assert not report.cuda.libcuda_loadable and "libcuda.so.1" in report.cuda.libcuda_reason
    # The read was really tried, and really failed for want of libcuda.so.1.
    assert info.read_check.startswith("failed") and "libcuda.so.1" in info.read_check
    usable, reason = kvikio_status()
    assert usable is False
    assert "every read fails for want of libcuda.so.1" in reason
    assert "libcuda.so.1" in report.verdict


def test_kvikio_fields_are_what_kvikio_says(tmp_path):
    pytest.importorskip("kvikio", reason="KvikIO is not installed")
    import kvikio.cufile_driver
    import kvikio.defaults

    info = probe(tmp_path).kvikio
    assert info.compat_mode_preferred is kvikio.defaults.is_compat_mode_preferred()
    assert info.compat_mode_setting == kvikio.defaults.get("compat_mode").name
    assert info.driver_properties["is_gds_available"] == kvikio.cufile_driver.get("is_gds_available")
    assert ("compatibility mode" in info.resolved_mode) == info.compat_mode_preferred


@pytest.mark.skipif(shutil.which("findmnt") is None, reason="findmnt (util-linux) is not installed")
def test_file_system_type_of_tmp_matches_findmnt(tmp_path):
    fs = probe(tmp_path).filesystem
    expected = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,TARGET", "-T", str(tmp_path)],
                              capture_output=True, text=True, check=True).stdout.split()
    assert [fs.fstype, fs.mount_point] == expected
    assert fs.reason
    assert Path(fs.directory) == tmp_path.resolve()


def test_file_system_of_a_missing_folder_is_its_nearest_parent(tmp_path):
    fs = filesystem_of(tmp_path / "not" / "yet")
    assert fs.directory == str(tmp_path.resolve())


MOUNTINFO = "\n".join([
    r"22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw,data=ordered",
    r"30 22 0:40 / /mnt/data rw,relatime shared:5 - xfs /dev/vdb rw",
    r"31 22 0:41 / /mnt/data2 rw - tmpfs tmpfs rw,size=1g",
    r"32 22 0:42 / /fsx rw,relatime - lustre 172.31.0.1@tcp:/abc rw,flock",
    r"33 22 0:43 / /mnt/nfs rw shared:7 master:2 - nfs4 srv:/export rw,vers=4.1,proto=rdma,port=20049",
    r"34 22 0:44 / /mnt/nfs-tcp rw - nfs srv:/export rw,vers=3,proto=tcp",
    r"35 22 0:45 / /mnt/my\040disk rw - overlay overlay rw,lowerdir=/a",
    r"36 22 0:46 / /mnt/fuse rw - fuse.s3fs s3fs rw",
    r"37 22 8:1 / /mnt/journal rw - ext4 /dev/sda1 rw,data=journal",
    r"38 30 0:47 / /mnt/data rw - tmpfs tmpfs rw",  # stacked over /mnt/data: the later one is visible
])


@pytest.mark.parametrize("path, fstype, capable, why", [
    ("/home/u", "ext4", None, None),
    ("/mnt/data/x", "tmpfs", False, "cannot do GDS"),
    ("/mnt/data2/x", "tmpfs", False, "cannot do GDS"),
    ("/fsx/model", "lustre", True, "Lustre over RDMA"),
    ("/mnt/nfs/a", "nfs4", True, "RDMA"),
    ("/mnt/nfs-tcp/a", "nfs", False, "not RDMA"),
    ("/mnt/my disk/a", "overlay", False, "cannot do GDS"),
    ("/mnt/fuse/a", "fuse.s3fs", False, "FUSE"),
    ("/mnt/journal/a", "ext4", False, "ordered mode"),
])
def test_mountinfo_longest_prefix_and_gds_kinds(path, fstype, capable, why):
    mount = fs_mod.mount_of(Path(path), fs_mod.mounts(MOUNTINFO))
    assert mount is not None and mount.fstype == fstype
    if capable is not None:
        ok, reason = fs_mod.gds_capable(mount, (), lnet=(("o2ib",), "test"))
        assert ok is capable and why in reason


def test_local_file_systems_need_nvme():
    mount = fs_mod.mount_of(Path("/home"), fs_mod.mounts(MOUNTINFO))
    assert fs_mod.gds_capable(mount, ("nvme0n1p1",))[0] is True
    ok, reason = fs_mod.gds_capable(mount, ("nvme0n1", "sda"))
    assert not ok and "sda" in reason and "NVMe" in reason
    assert not fs_mod.gds_capable(mount, ())[0]


def test_without_kvikio(tmp_path, monkeypatch, fresh):
    monkeypatch.setitem(sys.modules, "kvikio", None)  # `import kvikio` now raises ImportError
    report = probe(tmp_path)
    assert not report.kvikio.installed and report.kvikio.import_error
    assert kvikio_status() == (False, report.kvikio.reason)
    assert "not importable" in report.kvikio.reason
    assert any("KvikIO is not importable" in r for r in report.reasons)
    assert "KvikIO not importable" in report.as_text()
    json.dumps(report.as_dict())


def test_an_error_inside_kvikio_becomes_a_reason(tmp_path, monkeypatch, fresh):
    kvikio = pytest.importorskip("kvikio", reason="KvikIO is not installed")
    import kvikio.cufile_driver

    def broken(name):
        raise RuntimeError(f"cuFile exploded on {name}")

    monkeypatch.setattr(kvikio.cufile_driver, "get", broken)
    info = probe(tmp_path).kvikio
    assert info.installed and info.driver_properties == {}
    assert "cufile_driver.get('is_gds_available'): RuntimeError: cuFile exploded" in info.driver_messages
    report = probe(tmp_path)
    assert not report.gds_ready
    assert any("could not say whether GDS is available" in r for r in report.reasons)


def test_without_nvml(tmp_path, monkeypatch, fresh):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    report = probe(tmp_path)
    assert not report.cuda.nvml_available and "pynvml" in report.cuda.nvml_reason
    assert "NVML: no" in report.as_text()


def test_as_dict_is_json_and_carries_the_verdict(tmp_path):
    report = probe(tmp_path)
    d = json.loads(json.dumps(report.as_dict()))
    assert d["verdict"] == report.verdict
    assert d["filesystem"]["fstype"] == d["fs_type"] == report.filesystem.fstype
    assert d["kvikio"]["usable"] == report.kvikio.usable


def test_cli_env(tmp_path, capsys):
    assert main(["env", "--dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    report, rest = text.split("\n== Auto knobs", 1)
    assert report.strip().splitlines()[-1] == probe(tmp_path).verdict  # the verdict ends the probe's own report
    assert "cpu/cold: host-direct" in rest and "== Tune profile (gdslab tune)" in rest
    assert main(["env", "--dir", str(tmp_path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["filesystem"]["directory"] == str(tmp_path.resolve())


def test_pcie_link_from_sysfs(tmp_path):
    node = tmp_path / "0000:18:00.0"
    node.mkdir()
    for name, value in {"current_link_speed": "16.0 GT/s PCIe", "max_link_speed": "32.0 GT/s PCIe",
                        "current_link_width": "16", "max_link_width": "16"}.items():
        (node / name).write_text(value + "\n")
    devices = tmp_path / "sys" / "bus" / "pci" / "devices"
    devices.mkdir(parents=True)
    node.rename(devices / node.name)
    root = SysRoot(tmp_path)
    link = pcie.link("00000000:18:00.0", root)  # NVML's spelling of the bus id
    assert link == {"pcie_gen": 4, "pcie_max_gen": 5, "pcie_width": 16, "pcie_max_width": 16}
    assert pcie.link("0000:19:00.0", root) == {}
