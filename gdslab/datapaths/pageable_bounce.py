"""pageable-bounce: what a plain script does — read into ordinary host memory, then copy.

Each file's bytes are read (by `threads` readers, so reading is not what differs) into
one pageable host buffer; only then is every tensor copied to its destination. Two
copies, no overlap between reading and copying. `direct=True` reads with O_DIRECT (as
fastsafetensors does without GDS): the staging buffer holds the whole blocks around the bytes.
"""

from __future__ import annotations

from .base import Datapath, LoadJob, copy_bytes, host_staging, round_down, round_up, run_tasks
from .direct_io import DirectFiles


class PageableBounce(Datapath):
    name = "pageable-bounce"
    description = "read each file into pageable host memory, then copy every tensor to the device: no overlap"
    options = {"direct": False}

    def run(self, job: LoadJob) -> str:
        self.check(job)
        piece = round_up(job.io_size)
        with DirectFiles(job.files, job.options["direct"], job.host_memory) as files:
            for path in job.files:
                mine = [i for i, r in enumerate(job.reads) if r.file == path]
                runs = [run for i in mine for run in job.reads[i].runs if run[1]]
                if not runs:
                    continue
                low = round_down(min(offset for offset, _ in runs))  # whole blocks, for O_DIRECT
                high = max(offset + n for offset, n in runs)
                tasks = [(s, min(piece, high - low - s)) for s in range(0, high - low, piece)]
                # Counted while held; freed (closure included) before the next file's buffer exists.
                with host_staging(job.host_memory, round_up(high) - low) as staging:

                    def read(task, staging=staging, path=path, low=low) -> None:
                        start, n = task
                        began = job.log.now()
                        files.read_superset(staging[start:start + round_up(n)].numpy(), low + start, n, path)
                        job.log.add("read", began, n, path, "host")

                    run_tasks(job, tasks, read, "gdslab-pageable")
                    for i in mine:
                        job.check_cancel()
                        began = job.log.now()
                        dest, at = job.destination_bytes(i), 0
                        for offset, n in job.reads[i].runs:
                            copy_bytes(dest[at:at + n], staging[offset - low:offset - low + n])
                            at += n
                        job.log.add("copy", began, job.reads[i].nbytes, path, job.device, landed=True)
                    del staging, read
        how = f"; {files.describe()}" if job.options["direct"] else ""
        if job.options["direct"]:
            job.details.update(files.record())
        if job.device.type == "cuda":
            return f"pageable-bounce (read to pageable host memory, then synchronous H2D copies{how})"
        return f"pageable-bounce analogue (read to a host buffer, then memcpy: two copies{how})"
