"""fastsafetensors: IBM's `fastsafetensors` loader, as a peer.

`SafeTensorsFileLoader.copy_files_to_device()` reads each whole file into one buffer of
its own on the device (by GDS where cuFile can, else `nogds`: reader threads into a
bounce buffer; on the host with O_DIRECT by default on local file systems), then hands
out tensors that are views into that buffer. We clone each one out, as the safetensors
path clones out of its memory map: every path hands back tensors that own their memory,
and the clone is part of the time. Knobs: `threads` -> `max_threads`, `io_size` ->
`bbuf_size_kb` (the bounce buffer). Its defaults are 16 threads and 16 MiB.
"""

from __future__ import annotations

import torch

from ..errors import LoadError
from .base import Datapath, LoadJob
from .peers import accept, package_status, whole_tensor_reads


class FastSafetensors(Datapath):
    name = "fastsafetensors"
    description = "fastsafetensors SafeTensorsFileLoader (peer): whole files into its buffers, tensors cloned out"

    def availability(self, device: torch.device) -> tuple[bool, str]:
        ok, why = package_status("fastsafetensors", "fastsafetensors")
        return (True, "") if ok else (False, why)

    def run(self, job: LoadJob) -> str:
        self.check(job)
        from fastsafetensors import SafeTensorsFileLoader, SingleGroup

        index = whole_tensor_reads(job, "fastsafetensors")
        files = [str(f) for f in job.files]
        nogds = job.device.type == "cpu" or not _gds_ready(job)
        loader = buffers = None
        job.host_memory.cannot_count("fastsafetensors reads into buffers of its own (whole files, bounce buffers), "
                                     "which it does not expose")
        try:
            began = job.log.now()
            loader = SafeTensorsFileLoader(
                SingleGroup(), str(job.device), bbuf_size_kb=max(4, job.io_size // 1024),
                max_threads=job.threads, nogds=nogds,
            )
            loader.add_filenames({0: files})
            if len(index) < len(loader.get_keys()):
                loader.set_tensor_filter(lambda name: name in index)
            buffers = loader.copy_files_to_device()
            job.log.add("read", began, sum(r.nbytes for r in job.reads), files[0] if files else "", job.device)
            for name, i in index.items():
                job.check_cancel()
                began = job.log.now()
                read = job.reads[i]
                job.destinations[i] = accept(job, read, buffers.get_tensor(name), "fastsafetensors")
                job.log.add("copy", began, read.nbytes, read.file, job.device, landed=True)
        except (ValueError, RuntimeError, OSError, KeyError) as e:
            raise LoadError(files[0] if files else "", f"fastsafetensors failed: {type(e).__name__}: {e}") from None
        finally:
            if buffers is not None:
                buffers.close()
            if loader is not None:
                loader.close()
        _, version = package_status("fastsafetensors", "fastsafetensors")
        how = "GDS" if not nogds else f"nogds, {_io_mode(files)}"
        return (f"fastsafetensors {version} ({how}, {job.threads} threads, bounce buffer {job.io_size} B) "
                f"→ {job.device}, tensors cloned out of its buffers")


def _gds_ready(job: LoadJob) -> bool:
    from ..probe import probe

    return bool(probe(job.files[0].parent).as_dict().get("gds_ready")) if job.files else False


def _io_mode(files: list[str]) -> str:
    """Whether fastsafetensors reads these files with O_DIRECT (its default on local file systems)."""
    try:
        from fastsafetensors.common import is_odirect_enabled

        return "O_DIRECT reads" if files and is_odirect_enabled(files[0]) else "buffered reads"
    except Exception:  # noqa: BLE001 - a private helper that may move; say so rather than guess
        return "read mode unknown"
