"""gdslab: see and measure how LLM weights get from storage into GPU memory."""

from .checkpoint import Checkpoint, TensorEntry, read_header
from .errors import CheckpointError, DatapathUnavailable, GdslabError, LoadCancelled, LoadError
from .sizes import format_size, parse_size
from .synthetic import PRESETS, write_checkpoint

__version__ = "0.1.0"

__all__ = [
    "Checkpoint", "TensorEntry", "read_header",
    "CheckpointError", "DatapathUnavailable", "GdslabError", "LoadCancelled", "LoadError",
    "format_size", "parse_size",
    "PRESETS", "write_checkpoint",
]
