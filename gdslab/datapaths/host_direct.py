"""host-direct: pread straight into the destination tensors — one copy.

The CPU-only analogue of the direct path: storage (or page cache) → destination memory,
with no staging buffer in between. On a GPU machine the direct path is `gds`. Small
tensors lying back to back share one allocation and one read (`coalesce_below`).
"""

from __future__ import annotations

import torch

from .base import Chunk, Datapath, LoadJob, OpenFiles, as_buffer, pread_into, require_host, run_tasks


class HostDirect(Datapath):
    name = "host-direct"
    description = "pread straight into destination host tensors: one copy (the CPU analogue of GDS)"
    coalesce_below = 1 << 20

    def availability(self, device: torch.device) -> tuple[bool, str]:
        return require_host(device)

    def run(self, job: LoadJob) -> str:
        self.check(job)
        job.allocate_all()
        with OpenFiles(job.files) as files:

            def read(chunk: Chunk) -> None:
                dest = job.chunk_view(chunk)
                start = job.log.now()
                pread_into(files.fds[chunk.file], as_buffer(dest), chunk.file_offset, chunk.file)
                job.log.add("read", start, chunk.nbytes, chunk.file, job.device, landed=True)

            run_tasks(job, job.chunks(), read, "gdslab-direct")
        return f"host-direct (pread into destination, {job.threads} threads): host memcpy analogue of GDS"
