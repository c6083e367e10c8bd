"""gdslab: see and measure how LLM weights get from storage into GPU memory."""

from .checkpoint import Checkpoint, TensorEntry, read_header
from .errors import CheckpointError, DatapathUnavailable, GdslabError, LoadCancelled, LoadError
from .cache import CacheError, evict, resident_fraction
from .probe import ProbeReport, probe
from .sizes import format_size, parse_size
from .synthetic import PRESETS, write_checkpoint
from .loader import LoadResult, load
from . import datapaths
from . import coldstart
from .sweep import Grid, sweep
from .profile import DeviceMemorySampler, Event, EventLog, ProfileSummary, summarize

__version__ = "0.1.0"

__all__ = [
    "Checkpoint", "TensorEntry", "read_header",
    "CheckpointError", "DatapathUnavailable", "GdslabError", "LoadCancelled", "LoadError",
    "CacheError", "evict", "resident_fraction",
    "ProbeReport", "probe",
    "format_size", "parse_size",
    "PRESETS", "write_checkpoint",
    "LoadResult", "load", "datapaths",
    "coldstart",
    "Grid", "sweep",
    "DeviceMemorySampler", "Event", "EventLog", "ProfileSummary", "summarize",
]
