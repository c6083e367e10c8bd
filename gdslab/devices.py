"""Which device a load goes to: one place that turns 'cuda', 'cuda:3', 'cpu' or nothing into a torch.device.

Nothing asked means the first GPU where there is one, else the host; "cuda" without an index
means the current device (`torch.cuda.current_device()`), as it does in torch; a GPU asked
for that is not here is a clear error, never a silent fallback to the host.
"""

from __future__ import annotations

import torch

from .errors import DatapathUnavailable


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """'cuda:0' when a GPU is here and nothing was asked; a clear error for a GPU that is not."""
    if device is None:
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DatapathUnavailable(f"not a device: {device!r} ({e})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DatapathUnavailable(f"{device} asked for, but there is no CUDA GPU here")
        if device.index is None:  # "cuda" is the current device, as in torch (torch.cuda.set_device moves it)
            device = torch.device("cuda", torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise DatapathUnavailable(f"{device} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise DatapathUnavailable(f"device {device} is not supported: use 'cpu' or 'cuda:N'")
    return device


__all__ = ["resolve_device"]
