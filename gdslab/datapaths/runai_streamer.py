"""runai-streamer: the Run:ai Model Streamer (`runai-model-streamer`), as a peer.

Its `SafetensorsStreamer` reads every file of the load with a pool of its own (C++)
readers and yields tensors as they complete. Our knobs become its settings, read from
the environment when a streamer starts: `threads` -> RUNAI_STREAMER_CONCURRENCY,
`io_size` -> RUNAI_STREAMER_FS_CHUNK_BYTESIZE (the bytes of one file-system read). Its
own defaults are 16 and 8 MiB; a benchmark that wants the peer "as shipped" passes those.
Tensors are streamed with `owned=True` (each its own allocation); any that is not is
cloned by `accept`, so every path hands back the same kind of tensor.
"""

from __future__ import annotations

import contextlib
import os
import threading

import torch

from ..errors import LoadError
from .base import Datapath, LoadJob
from .peers import accept, package_status, whole_tensor_reads

_ENV_LOCK = threading.Lock()  # the settings live in the process environment: one streamer start at a time


@contextlib.contextmanager
def _settings(values: dict[str, str]):
    """Set environment variables for the duration, then restore exactly what was there."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class RunaiStreamer(Datapath):
    name = "runai-streamer"
    description = "Run:ai Model Streamer's SafetensorsStreamer (peer): its C++ readers, threads -> concurrency"

    def availability(self, device: torch.device) -> tuple[bool, str]:
        ok, why = package_status("runai_model_streamer", "runai-model-streamer")
        return (True, "") if ok else (False, why)

    def run(self, job: LoadJob) -> str:
        self.check(job)
        from runai_model_streamer import SafetensorsStreamer

        index = whole_tensor_reads(job, "runai-model-streamer")
        files = [str(f) for f in job.files]
        names = None if _all_tensors(job) else list(index)
        settings = {
            "RUNAI_STREAMER_CONCURRENCY": str(job.threads),
            "RUNAI_STREAMER_FS_CHUNK_BYTESIZE": str(job.io_size),
        }
        seen = 0
        job.host_memory.cannot_count("runai-model-streamer stages in C++ buffers of its own, which it does not expose")
        with _ENV_LOCK, _settings(settings):
            try:
                with SafetensorsStreamer() as streamer:
                    began = job.log.now()
                    streamer.stream_files(files, device=str(job.device), tensor_names=names, owned=True)
                    for name, tensor in streamer.get_tensors():
                        job.check_cancel()
                        i = index.get(name)
                        if i is None:
                            continue
                        read = job.reads[i]
                        job.destinations[i] = accept(job, read, tensor, "runai-model-streamer")
                        seen += 1
                        job.log.add("read", began, read.nbytes, read.file, job.device, landed=True)
                        began = job.log.now()
            except (ValueError, RuntimeError, OSError) as e:
                raise LoadError(files[0] if files else "", f"runai-model-streamer failed: {e}") from None
        if seen != len(index):
            missing = [r.name for i, r in enumerate(job.reads) if job.destinations[i] is None][:3]
            raise LoadError(job.reads[0].file, f"runai-model-streamer did not return {missing} ...")
        _, version = package_status("runai_model_streamer", "runai-model-streamer")
        return (f"runai-model-streamer {version} SafetensorsStreamer (concurrency {job.threads}, "
                f"fs chunk {job.io_size} B, owned tensors) → {job.device}")


def _all_tensors(job: LoadJob) -> bool:
    """Whether the reads are every tensor of their files: then no name filter is needed."""
    from ..checkpoint import read_header

    wanted = {(r.file, r.name) for r in job.reads}
    in_files = {(path, entry.name) for path in job.files for entry in read_header(path)[1]}
    return wanted == in_files
