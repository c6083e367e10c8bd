"""The data paths, one file each, behind one small interface; a registry of what runs here.

`available(device)` lists every path with whether it can run on that device and why not.
Peers (other loaders measured under the same protocol) register themselves the same way.
"""

from __future__ import annotations

import torch

from ..devices import resolve_device
from ..errors import DatapathUnavailable
from .base import Chunk, Datapath, DatapathInfo, LoadJob, TensorRead
from .gds import Gds
from .host_direct import HostDirect
from .pageable_bounce import PageableBounce
from .pinned_bounce import PinnedBounce
from .safetensors_lib import SafetensorsLibrary
from .runai_streamer import RunaiStreamer
from .fastsafetensors_peer import FastSafetensors

REGISTRY: dict[str, Datapath] = {}


def register(path: Datapath) -> Datapath:
    REGISTRY[path.name] = path
    return path


for _path in (PageableBounce(), PinnedBounce(), Gds(), HostDirect(), SafetensorsLibrary(),
              RunaiStreamer(), FastSafetensors()):  # the last two: peers, available when installed
    register(_path)


def get(name: str) -> Datapath:
    try:
        return REGISTRY[name]
    except KeyError:
        raise DatapathUnavailable(f"unknown datapath {name!r}; known: {', '.join(REGISTRY)}") from None


def available(device: str | torch.device | None = None) -> list[DatapathInfo]:
    """Every registered path with available / reason / one-line description for `device`."""
    device = resolve_device(device)
    return [path.info(device) for path in REGISTRY.values()]


__all__ = ["Chunk", "Datapath", "DatapathInfo", "LoadJob", "TensorRead", "REGISTRY", "available", "get", "register"]
