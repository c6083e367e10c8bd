"""What the notebooks share: the one place the lab's size, and the user's own checkpoint, are read.

`GDSLAB_LAB_SIZE` sets the size of the checkpoints the notebooks write and load
("32MiB" in the test suite, so every notebook runs in seconds on a CPU-only machine).
`GDSLAB_CHECKPOINT` points the lab at a real checkpoint instead (a safetensors file or an
HF model folder, e.g. one downloaded with `hf download`): every notebook
then loads that, and says what it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from .sizes import parse_size
from .synthetic import cached_checkpoint

LAB_SIZE_VAR = "GDSLAB_LAB_SIZE"
CHECKPOINT_VAR = "GDSLAB_CHECKPOINT"
DEFAULT_LAB_SIZE = "512MiB"
TEST_LAB_SIZE = "32MiB"


def lab_size() -> int:
    """Bytes of the lab's checkpoints: $GDSLAB_LAB_SIZE, else 512 MiB."""
    return parse_size(os.environ.get(LAB_SIZE_VAR, DEFAULT_LAB_SIZE))


def user_checkpoint() -> Path | None:
    """$GDSLAB_CHECKPOINT, checked (a `CheckpointError` names what is wrong with it), or None."""
    value = os.environ.get(CHECKPOINT_VAR, "").strip()
    if not value:
        return None
    from .checkpoint import Checkpoint

    return Path(Checkpoint.open(Path(value).expanduser()).root)


def lab_checkpoint(shards: int = 4, preset: str = "llama-3.1-8b", dtype: str = "bf16", seed: int = 0) -> Path:
    """The lab's checkpoint: $GDSLAB_CHECKPOINT when set (its own shards), else a synthetic one at `lab_size()`."""
    real = user_checkpoint()
    if real is not None:
        return real
    return cached_checkpoint(lab_size(), shards, preset, dtype, seed)


def describe_checkpoint(path: str | os.PathLike) -> str:
    """What a notebook loads: name, bytes, files, dtypes, and whether it is real or synthetic."""
    from .checkpoint import Checkpoint
    from .sizes import format_size

    ckpt = Checkpoint.open(path)
    dtypes = ", ".join(f"{name}×{count}" for name, count in sorted(ckpt.dtype_counts().items()))
    kind = ("your checkpoint ($GDSLAB_CHECKPOINT)" if user_checkpoint() == Path(ckpt.root)
            else "a synthetic Llama-shaped checkpoint, scaled down to the lab size")
    return (f"{Path(ckpt.root).name}: {format_size(ckpt.nbytes)} in {len(ckpt.files)} file(s), "
            f"{len(ckpt.tensors)} tensors ({dtypes}); {kind}")


def show_figures_inline() -> None:
    """Inside IPython, display the bare matplotlib Figures gdslab.plots returns as PNG images.

    gdslab draws without pyplot (no global state, safe from threads), and IPython only knows
    how to show a Figure once pyplot's inline backend is active; this registers the same
    formatter by name, so nothing is imported when no kernel is running.
    """
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return
    formatter = shell.display_formatter.formatters["image/png"]
    formatter.for_type_by_name("matplotlib.figure", "Figure", _figure_png)


def _figure_png(figure) -> bytes:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    return buffer.getvalue()
