"""The exceptions gdslab raises on purpose: each names the file (when there is one) and the reason."""

from __future__ import annotations

from pathlib import Path


class GdslabError(Exception):
    """Base of every error gdslab raises deliberately."""


class FileError(GdslabError):
    """Something is wrong with one file: the message is "<path>: <reason>"."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class CheckpointError(FileError):
    """A checkpoint (safetensors file, index, directory) is malformed or unsafe to read."""


class CacheError(FileError):
    """A file's page-cache state could not be read or changed."""


class ResultsError(FileError):
    """A results file (JSON/CSV records) cannot be read as records."""


class LoadError(GdslabError):
    """A load failed part-way; nothing it had produced is handed back."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = Path(path) if path is not None else None
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if path is not None else reason)


class LoadCancelled(LoadError):
    """The load was stopped on request (Stop button, cancel event); nothing is handed back."""


class DatapathUnavailable(GdslabError):
    """The data path asked for cannot run on this machine; the message says why."""
