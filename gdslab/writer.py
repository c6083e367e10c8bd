"""Write a safetensors file one tensor at a time, never holding the file's tensors in memory.

`safetensors.torch.save_file` wants every tensor at once; a pre-sharded set of a 405B model
is hundreds of GB. The header is known before any data (names, dtypes, shapes), so it is
written first and each tensor's bytes follow in order. The header is padded with spaces
(as the safetensors library pads it) so that the data region starts on a 4 KiB boundary:
an O_DIRECT reader can then read whole files aligned. The file is written under a
temporary name and renamed only when complete; files it writes load with the safetensors
library (tests check it).
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import torch

from .checkpoint import SAFETENSORS_NAME

DATA_ALIGN = 4096


class SafetensorsWriter:
    """`write` each planned tensor in order, then `close`; `abort` leaves nothing behind."""

    def __init__(self, path: str | os.PathLike, tensors: list[tuple[str, torch.dtype, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        header: dict = {"__metadata__": dict(metadata or {})}
        offset = 0
        self.plan: list[tuple[str, int]] = []
        for name, dtype, shape in tensors:
            nbytes = math.prod(shape) * dtype.itemsize
            header[name] = {"dtype": SAFETENSORS_NAME[dtype], "shape": list(shape),
                            "data_offsets": [offset, offset + nbytes]}
            self.plan.append((name, nbytes))
            offset += nbytes
        self.nbytes = offset
        text = json.dumps(header, separators=(",", ":")).encode()
        pad = (-(8 + len(text))) % DATA_ALIGN
        self.header = text + b" " * pad
        self.size = 8 + len(self.header) + self.nbytes
        self._next = 0
        self._file = open(self.partial, "wb")
        self._file.write(struct.pack("<Q", len(self.header)))
        self._file.write(self.header)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """The next planned tensor's bytes (CPU, contiguous; its dtype and size as planned)."""
        want, nbytes = self.plan[self._next]
        if name != want:
            raise ValueError(f"{self.path}: wrote {name!r} where {want!r} comes next")
        data = tensor.detach().contiguous().reshape(-1).view(torch.uint8) if tensor.numel() else torch.empty(0, dtype=torch.uint8)
        if data.numel() != nbytes:
            raise ValueError(f"{self.path}: tensor {name!r} has {data.numel()} bytes, planned {nbytes}")
        if nbytes:
            self._file.write(memoryview(data.numpy()))
        self._next += 1

    def close(self) -> Path:
        """Finish the file (every tensor written), flush it to disk and give it its name."""
        if self._next != len(self.plan):
            raise ValueError(f"{self.path}: {len(self.plan) - self._next} planned tensor(s) never written")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the unfinished file."""
        if not self._file.closed:
            self._file.close()
        self.partial.unlink(missing_ok=True)


__all__ = ["SafetensorsWriter", "DATA_ALIGN"]
