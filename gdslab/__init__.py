"""gdslab: see and measure how LLM weights get from storage into GPU memory."""

from . import coldstart, datapaths
from .cache import CacheError, evict, resident_fraction
from .checkpoint import Checkpoint, TensorEntry, read_header
from .sharded import ShardedResult, load_sharded
from .errors import CheckpointError, DatapathUnavailable, GdslabError, LoadCancelled, LoadError
from .lab import show_figures_inline as _show_figures_inline
from .loader import LoadResult, load
from .into_model import CheckpointMismatch, load_into, parameters_on_meta
from .plan import PlanError, rank_plan, rank_reads, share_partition
from .probe import ProbeReport, probe
from .reshard import PreshardedSet, ReshardError, open_set, reshard
from .profile import DeviceMemorySampler, Event, EventLog, ProfileSummary, summarize
from .sizes import format_size, parse_size
from .sweep import Grid, sweep
from .synthetic import PRESETS, write_checkpoint

__version__ = "0.1.0"

_show_figures_inline()  # in a notebook, gdslab's figures display as images

__all__ = [
    "Checkpoint", "TensorEntry", "read_header",
    "CheckpointError", "DatapathUnavailable", "GdslabError", "LoadCancelled", "LoadError",
    "CacheError", "evict", "resident_fraction",
    "ProbeReport", "probe",
    "format_size", "parse_size",
    "PRESETS", "write_checkpoint",
    "LoadResult", "load", "datapaths", "load_into", "parameters_on_meta", "CheckpointMismatch",
    "PlanError", "rank_plan", "rank_reads", "share_partition", "ShardedResult", "load_sharded",
    "coldstart", "reshard", "open_set", "PreshardedSet", "ReshardError",
    "Grid", "sweep",
    "DeviceMemorySampler", "Event", "EventLog", "ProfileSummary", "summarize",
]
