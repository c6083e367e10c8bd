"""gds: KvikIO `CuFile.pread` straight into the device tensors — storage → GPU by DMA.

With nvidia-fs loaded and a GDS-capable file system, cuFile moves the bytes by DMA into
GPU memory (unaligned head and tail bytes go through cuFile's own small bounce buffers).
Otherwise KvikIO falls back to its compatibility mode: POSIX reads into host bounce
buffers, then copies — the run reports which of the two really happened.
"""

from __future__ import annotations

import torch

from ..errors import LoadError
from .base import Datapath, LoadJob


def effective_mode(cufile=None) -> str:
    """Which transport KvikIO used: GDS proper, cuFile's compat mode, or KvikIO's POSIX mode."""
    import kvikio.cufile_driver
    import kvikio.defaults

    if kvikio.defaults.is_compat_mode_preferred():
        return "KvikIO POSIX compat mode (host bounce buffers, no cuFile)"
    try:
        gds = bool(kvikio.cufile_driver.get("is_gds_available"))
    except Exception:  # noqa: BLE001 - any failure here means we cannot claim GDS
        gds = False
    direct = cufile is not None and bool(getattr(cufile, "is_direct_io_supported", lambda: False)())
    if gds and direct:
        return "GDS (cuFile, nvidia-fs DMA)"
    return "cuFile compatibility mode (no nvidia-fs DMA)"


class Gds(Datapath):
    name = "gds"
    description = "KvikIO CuFile.pread into device tensors (GPUDirect Storage when nvidia-fs allows)"

    def availability(self, device: torch.device) -> tuple[bool, str]:
        if device.type != "cuda":
            return False, "needs a CUDA device (the destination is host memory here)"
        from ..kvikio_info import kvikio_status

        return kvikio_status()

    def run(self, job: LoadJob) -> str:
        self.check(job)
        import kvikio
        import kvikio.defaults

        modes = set()
        with kvikio.defaults.set({"num_threads": job.threads, "task_size": job.io_size}):
            for path in job.files:
                mine = [i for i, r in enumerate(job.reads) if r.file == path]
                try:
                    handle = kvikio.CuFile(path, "r")
                except Exception as e:  # noqa: BLE001 - cuFile raises RuntimeError subclasses
                    raise LoadError(path, f"KvikIO cannot open it: {e}") from None
                pending = []
                try:
                    modes.add(effective_mode(handle))
                    for i in mine:
                        job.check_cancel()
                        dest, at = job.destination_bytes(i), 0
                        for offset, n in job.reads[i].runs:
                            if n:
                                pending.append((job.log.now(), n, handle.pread(dest[at:at + n], n, offset)))
                            at += n
                    while pending:
                        start, n, future = pending.pop(0)
                        got = future.get()
                        if got != n:
                            raise LoadError(path, f"short read: {got} of {n} bytes (truncated file?)")
                        job.log.add("read", start, n, path, job.device, landed=True)
                except LoadError:
                    raise
                except Exception as e:  # noqa: BLE001
                    raise LoadError(path, f"KvikIO read failed: {e}") from None
                finally:
                    for _, _, future in pending:  # drain reads in flight before their memory goes
                        try:
                            future.get()
                        except Exception:  # noqa: BLE001 - already failing
                            pass
                    handle.close()
        return "gds: " + " / ".join(sorted(modes))
