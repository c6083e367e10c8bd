"""host-direct: pread straight into the destination tensors — one copy.

The CPU-only analogue of the direct path: storage (or page cache) → destination memory,
with no staging buffer in between. On a GPU machine the direct path is `gds`. Small
tensors lying back to back share one allocation and one read (`coalesce_below`). With
`direct=True` the reads bypass the page cache (O_DIRECT, see `direct_io`), as GDS does.
"""

from __future__ import annotations

import torch

from .base import Chunk, Datapath, LoadJob, require_host, run_tasks
from .direct_io import DirectFiles


class HostDirect(Datapath):
    name = "host-direct"
    description = "pread straight into destination host tensors: one copy (the CPU analogue of GDS)"
    coalesce_below = 1 << 20
    options = {"direct": False}

    def availability(self, device: torch.device) -> tuple[bool, str]:
        return require_host(device)

    def run(self, job: LoadJob) -> str:
        self.check(job)
        job.allocate_all()
        with DirectFiles(job.files, job.options["direct"], job.host_memory) as files:

            def read(chunk: Chunk) -> None:
                dest = job.chunk_view(chunk)
                start = job.log.now()
                files.read(dest.numpy(), chunk.file_offset, chunk.file)
                job.log.add("read", start, chunk.nbytes, chunk.file, job.device, landed=True)

            run_tasks(job, job.chunks(), read, "gdslab-direct")
        if job.options["direct"]:
            job.details.update(files.record())
            return f"host-direct ({files.describe()} into the destination, {job.threads} threads): analogue of GDS"
        return f"host-direct (pread into destination, {job.threads} threads): host memcpy analogue of GDS"
