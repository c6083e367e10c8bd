"""safetensors: the baseline most people use — `safetensors.torch.load_file(..., device=...)`.

On the CPU `load_file` hands back tensors over a private memory map of the file, whose
pages are read only when touched; we clone each one so the bytes are really loaded into
memory the tensor owns, as every other path delivers them.
"""

from __future__ import annotations

from ..errors import LoadError
from .base import Datapath, LoadJob


class SafetensorsLibrary(Datapath):
    name = "safetensors"
    description = "safetensors.torch.load_file(device=...) per file, every tensor materialized in owned memory"
    knobs = ()  # the library reads its own way: neither threads nor io size apply

    def run(self, job: LoadJob) -> str:
        self.check(job)
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        job.host_memory.cannot_count("safetensors memory-maps each whole file inside load_file; "
                                     "the library does not say how much of it it holds")
        for i, read in enumerate(job.reads):
            if len(read.runs) != 1:
                raise LoadError(read.file, f"the safetensors library loads whole tensors, not slices ({read.name!r})")
        for path in job.files:
            job.check_cancel()
            start = job.log.now()
            try:
                loaded = load_file(str(path), device=str(job.device))
            except (SafetensorError, OSError, RuntimeError) as e:
                raise LoadError(path, f"safetensors could not load it: {e}") from None
            nbytes = 0
            for i, read in enumerate(job.reads):
                if read.file != path:
                    continue
                tensor = loaded.pop(read.name, None)
                if tensor is None:
                    raise LoadError(path, f"safetensors did not return tensor {read.name!r}")
                job.destinations[i] = tensor.clone() if job.device.type == "cpu" else tensor
                nbytes += read.nbytes
            del loaded
            job.log.add("read", start, nbytes, path, job.device, landed=True)
        return f"safetensors {_version()} load_file(device={job.device})" + (
            " + clone (materialized)" if job.device.type == "cpu" else ""
        )


def _version() -> str:
    import safetensors

    return getattr(safetensors, "__version__", "")
