"""The probe's decisions on a recorded P5en-shaped /proc + /sys (tests/fixtures/p5en), one change at a time.

The GPUs and KvikIO of those machines are given as records (what NVML and KvikIO would
say there); everything else is read from the tree: mounts, NVMe models, LNet networks,
nvidia-fs, the PCIe tree and the IOMMU groups.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gdslab import pcie
from gdslab.filesystem import filesystem_of
from gdslab.gpus import CudaInfo, GpuInfo, visible_indices
from gdslab.kvikio_info import KvikioInfo
from gdslab.probe import CANNOT_TELL, NOT_POSSIBLE, READY, report_for
from gdslab.sysroot import SysRoot

FIXTURE = Path(__file__).parent / "fixtures" / "p5en"
FSX, INSTANCE_STORE, EBS = "/fsx/llama-3.1-405b", "/opt/dlami/nvme/models", "/home/ubuntu/models"

H200 = 141 * 10**9
GPUS = (GpuInfo(0, "NVIDIA H200", H200, "00000000:19:00.0", uuid="GPU-aaaa", cuda_index=0),
        GpuInfo(1, "NVIDIA H200", H200, "00000000:9A:00.0", uuid="GPU-bbbb", cuda_index=1))
CUDA = CudaInfo(libcuda_loadable=True, libcuda_reason="found", driver_version="570.124.06",
                cuda_driver_version="12.8", torch_version="2.7.0", torch_cuda_version="12.8",
                gpu_available=True, gpu_reason="2 CUDA device(s)", nvml_available=True, nvml_reason="2 device(s)",
                gpus=GPUS)


def kvikio(gds: bool = True, cufile: str = "1.13") -> KvikioInfo:
    return KvikioInfo(installed=True, version="26.10.00", import_error=None, compat_mode_setting="AUTO",
                      compat_mode_preferred=False, resolved_mode="cuFile", libcufile_version=cufile,
                      driver_properties={"is_gds_available": gds}, read_check="ok", usable=True, reason="reads")


@pytest.fixture
def machine(tmp_path) -> Path:
    """A private copy of the recorded tree, to change one thing in."""
    root = tmp_path / "p5en"
    shutil.copytree(FIXTURE, root, symlinks=True)
    return root


def report(root: Path, directory: str, kv: KvikioInfo | None = None):
    return report_for(directory, CUDA, kv or kvikio(), SysRoot(root), page_cache=(True, "recorded machine"))


def test_fsx_over_efa_with_nvidia_fs_is_ready(machine):
    r = report(machine, FSX)
    assert r.filesystem.fstype == "lustre" and r.filesystem.lnet_networks == ("tcp", "efa")
    assert r.gds_state == READY and r.gds_ready and r.verdict.startswith("GDS: ready (lustre at /fsx")
    assert not r.warnings
    # every GPU's nearest RDMA NIC sits behind its own PCIe switch
    assert [(p.gpu, p.device, p.relation) for p in r.topology] == [(0, "efa_0", pcie.SWITCH), (1, "efa_1", pcie.SWITCH)]


def test_fsx_over_tcp_is_not_gds(machine):
    text = (machine / "cmd" / "lnetctl_net_show.txt").read_text()
    (machine / "cmd" / "lnetctl_net_show.txt").write_text(text.split("    - net type: efa")[0])
    r = report(machine, FSX)
    assert r.filesystem.gds_capable is False and r.gds_state == NOT_POSSIBLE
    assert "Lustre over tcp only" in r.verdict and "RDMA" in r.verdict


def test_lustre_without_readable_lnet_cannot_tell(machine):
    (machine / "cmd" / "lnetctl_net_show.txt").unlink()
    r = report(machine, FSX)
    assert r.filesystem.gds_capable is None
    assert r.gds_state == CANNOT_TELL and r.verdict.startswith("GDS: cannot tell here: ")
    assert "LNet's networks could not be read" in r.verdict


def test_lnet_nid_list_is_read_where_lnetctl_is_missing(machine):
    (machine / "cmd" / "lnetctl_net_show.txt").unlink()
    nis = machine / "sys" / "kernel" / "debug" / "lnet" / "nis"
    nis.parent.mkdir(parents=True)
    nis.write_text("nid                      status alive refs peer  rtr   max    tx   min\n"
                   "0@lo                         up     0    2    0    0     0     0     0\n"
                   "172.31.40.20@tcp             up     0    1    8    0   256   256   256\n"
                   "10.1.0.3@o2ib1               up     0    1    8    0   256   256   256\n")
    fs = filesystem_of(FSX, SysRoot(machine))
    assert fs.gds_capable is True and fs.lnet_networks == ("tcp", "o2ib")


def test_instance_store_nvme_is_ready(machine):
    r = report(machine, INSTANCE_STORE)
    assert r.filesystem.fstype == "xfs" and r.filesystem.block_devices == ("nvme1n1", "nvme2n1")
    assert set(r.filesystem.device_models) == {"Amazon EC2 NVMe Instance Storage"}
    assert r.gds_state == READY
    assert [(p.device, p.relation) for p in r.topology] == [("nvme1n1", pcie.SWITCH), ("nvme2n1", pcie.SWITCH)]


def test_an_ebs_volume_is_nvme_but_not_local(machine):
    r = report(machine, EBS)
    assert r.filesystem.block_devices == ("nvme0n1p1",)
    assert r.filesystem.gds_capable is False and "EBS volume" in r.filesystem.reason
    assert r.gds_state == NOT_POSSIBLE and "Amazon Elastic Block Store" in r.verdict


def test_local_nvme_without_nvidia_fs_cannot_tell_on_recent_cufile(machine):
    shutil.rmtree(machine / "proc" / "driver" / "nvidia-fs")
    r = report(machine, INSTANCE_STORE, kvikio(gds=False, cufile="1.13"))
    assert not r.nvidia_fs_loaded
    assert r.gds_state == CANNOT_TELL and "P2PDMA" in r.verdict
    assert not any("nvidia-fs" in reason for reason in r.reasons)


def test_local_nvme_without_nvidia_fs_on_old_cufile_is_not_gds(machine):
    shutil.rmtree(machine / "proc" / "driver" / "nvidia-fs")
    r = report(machine, INSTANCE_STORE, kvikio(gds=False, cufile="1.9"))
    assert r.gds_state == NOT_POSSIBLE and "nvidia-fs kernel module is not loaded" in r.verdict


def test_lustre_without_nvidia_fs_is_not_gds(machine):
    shutil.rmtree(machine / "proc" / "driver" / "nvidia-fs")
    r = report(machine, FSX, kvikio(gds=False))
    assert r.gds_state == NOT_POSSIBLE and "which lustre needs for DMA" in r.verdict


def test_cufile_saying_gds_without_nvidia_fs_is_believed_with_a_note(machine):
    shutil.rmtree(machine / "proc" / "driver" / "nvidia-fs")
    r = report(machine, INSTANCE_STORE, kvikio(gds=True))
    assert r.gds_state == READY and any("P2PDMA" in w for w in r.warnings)


def test_translating_iommu_is_a_warning(machine):
    group = machine / "sys" / "kernel" / "iommu_groups" / "0" / "type"  # GPU 0's group
    group.write_text("DMA-FQ\n")
    r = report(machine, FSX)
    assert r.gds_state == READY
    assert any("GPU 0" in w and "translated (DMA-FQ)" in w and "passthrough" in w for w in r.warnings)
    assert "; but the IOMMU translates GPU 0's DMA addresses" in r.verdict


def test_storage_on_the_other_socket_is_a_warning(machine):
    # GPU 1's own NVMe drive leaves the RAID: its nearest drive is now across the CPU interconnect.
    (machine / "sys" / "devices" / "virtual" / "block" / "md0" / "slaves" / "nvme2n1").unlink()
    r = report(machine, INSTANCE_STORE)
    far = [p for p in r.topology if p.gpu == 1]
    assert far[0].device == "nvme1n1" and far[0].relation == pcie.CROSS_SOCKET
    assert any("GPU 1" in w and "different PCIe root complexes" in w for w in r.warnings)


def test_cuda_visible_devices_maps_cuda_to_nvml_indices():
    uuids = ["GPU-aaaa", "GPU-bbbb", "GPU-cccc", "GPU-dddd"]
    assert visible_indices(None, uuids) is None
    assert visible_indices("2,3", uuids) == [2, 3]
    assert visible_indices("GPU-ccc,0", uuids) == [2, 0]
    assert visible_indices("1,9,2", uuids) == [1]  # CUDA stops at the first entry that names no GPU
    assert visible_indices("", uuids) == []


def _ec2(machine: Path, instance: str) -> None:
    dmi = machine / "sys" / "class" / "dmi" / "id"
    dmi.mkdir(parents=True)
    (dmi / "sys_vendor").write_text("Amazon EC2\n")
    (dmi / "product_name").write_text(instance + "\n")


def test_fsx_gds_on_an_instance_type_fsx_does_not_list_is_not_possible(machine):
    # FSx Lustre Guide, "Working with EFA-enabled file systems": GDS needs a P5, P5e, P5en or P6-B200 client
    _ec2(machine, "p4d.24xlarge")
    r = report(machine, FSX)
    assert r.filesystem.gds_capable is False and r.gds_state == NOT_POSSIBLE
    assert "p4d.24xlarge" in r.verdict and "FSx for Lustre supports GDS only on" in r.verdict


def test_fsx_gds_on_p5en_names_what_the_client_cannot_check(machine):
    _ec2(machine, "p5en.48xlarge")
    r = report(machine, FSX)
    assert r.gds_state == READY
    assert "p5en.48xlarge is an FSx GDS client type" in r.filesystem.reason
    assert "cannot be checked from the client" in r.filesystem.reason
