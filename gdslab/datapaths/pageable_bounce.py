"""pageable-bounce: what a plain script does — read into ordinary host memory, then copy.

Each file's bytes are read (by `threads` readers, so reading is not what differs) into
one pageable host buffer; only then is every tensor copied to its destination. Two
copies, no overlap between reading and copying.
"""

from __future__ import annotations

from .base import Datapath, LoadJob, OpenFiles, copy_bytes, empty_host, pread_into, run_tasks


class PageableBounce(Datapath):
    name = "pageable-bounce"
    description = "read each file into pageable host memory, then copy every tensor to the device: no overlap"

    def run(self, job: LoadJob) -> str:
        self.check(job)
        with OpenFiles(job.files) as files:
            for path in job.files:
                mine = [i for i, r in enumerate(job.reads) if r.file == path]
                runs = [run for i in mine for run in job.reads[i].runs if run[1]]
                if not runs:
                    continue
                low = min(offset for offset, _ in runs)
                high = max(offset + n for offset, n in runs)
                staging = empty_host(high - low)
                tasks = [(s, min(job.io_size, high - low - s)) for s in range(0, high - low, job.io_size)]

                def read(task, staging=staging, path=path, low=low) -> None:
                    start, n = task
                    began = job.log.now()
                    pread_into(files.fds[path], staging[start:start + n].numpy(), low + start, path)
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
                del staging
        if job.device.type == "cuda":
            return "pageable-bounce (read to pageable host memory, then synchronous H2D copies)"
        return "pageable-bounce analogue (read to a host buffer, then memcpy: two copies)"
