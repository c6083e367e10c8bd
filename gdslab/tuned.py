"""What `gdslab tune` remembered: the measured best knobs for one machine and one file system.

A profile is a small JSON file in the user's cache folder (`platformdirs.user_cache_dir
("gdslab")`, or `$GDSLAB_CACHE_DIR`), one per file system (named by its type and mount
point), holding the machine it was measured on (CPU model, usable cores, GPUs), the
kernel, the mount's source, and the winner of each device kind and cache state
("cpu/cold", "cuda/warm"...). `auto` loads use it only where all of those still match:
a profile from another machine, a stale one (another kernel, another device under the
mount) or one that cannot be read is ignored with one warning naming the file and why —
never a crash, and never silently used.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from datetime import datetime, timezone
from pathlib import Path

VERSION = 1
ENV = "GDSLAB_CACHE_DIR"


class ProfileIgnored(UserWarning):
    """A tune profile exists for this file system but is not used (the message says which file and why)."""


def cache_dir() -> Path:
    """Where profiles live: `$GDSLAB_CACHE_DIR`, else the platform's user cache folder for gdslab."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("gdslab"))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "root"


def profile_path(machine) -> Path:
    """The profile file for the file system under `machine` (a `policy.Machine`)."""
    return cache_dir() / f"tune-{_slug(machine.fstype)}-{_slug(machine.mount_point)}.json"


def _filesystem(machine) -> dict:
    return {"mount_point": machine.mount_point, "fstype": machine.fstype, "source": machine.mount_source}


def save(machine, winners: dict[str, dict], table: list[dict], checkpoint: str = "", budget_s: float = 0.0) -> Path:
    """Write the profile for `machine`'s file system (atomically); returns its path."""
    path = profile_path(machine)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "gdslab_tune_profile": VERSION, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine.key(), "kernel": machine.kernel, "filesystem": _filesystem(machine),
        "checkpoint": checkpoint, "budget_s": budget_s, "winners": winners, "table": table,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    os.replace(tmp, path)
    _warned.clear()
    return path


_warned: set[tuple[str, str]] = set()


def _ignore(path: Path, why: str) -> None:
    """Warn once per file and reason that a profile is not used."""
    if (str(path), why) in _warned:
        return
    _warned.add((str(path), why))
    warnings.warn(f"gdslab: ignoring tune profile {path}: {why}; auto loads use the policy's own choices "
                  "(run `gdslab tune` again, or `gdslab tune --forget`)", ProfileIgnored, stacklevel=3)


def problem(doc, machine) -> str | None:
    """Why a parsed profile does not fit `machine` (None: it fits)."""
    if not isinstance(doc, dict) or doc.get("gdslab_tune_profile") != VERSION:
        return "not a gdslab tune profile of this version"
    winners = doc.get("winners")
    if not isinstance(winners, dict) or not all(
            isinstance(w, dict) and isinstance(w.get("datapath"), str) and isinstance(w.get("threads"), int)
            and isinstance(w.get("io_size"), int) and w["threads"] > 0 and w["io_size"] > 0
            and isinstance(w.get("options", {}), dict) for w in winners.values()):
        return "its winners are malformed"
    mine, theirs = machine.key(), doc.get("machine")
    if theirs != mine:
        return f"measured on another machine ({_describe(theirs)}; this one: {_describe(mine)})"
    if doc.get("kernel") != machine.kernel:
        return f"stale: measured under kernel {doc.get('kernel')}, this is {machine.kernel}"
    fs = doc.get("filesystem") or {}
    if fs != _filesystem(machine):
        return (f"stale: measured on {fs.get('fstype')} from {fs.get('source')} at {fs.get('mount_point')}, "
                f"now {machine.fstype} from {machine.mount_source} at {machine.mount_point}")
    return None


def _describe(key) -> str:
    if not isinstance(key, dict):
        return "unknown machine"
    return f"{key.get('cpu_model')}, {key.get('usable_cpus')} usable cores, {key.get('gpus')} GPUs"


def read(machine) -> tuple[dict | None, Path]:
    """(the profile for `machine` if there is one that fits, its path); warns once where one is ignored."""
    path = profile_path(machine)
    if not path.exists():
        return None, path
    try:
        doc = json.loads(path.read_text())
    except ValueError as e:
        _ignore(path, f"not valid JSON (cut short or corrupt: {e})")
        return None, path
    except OSError as e:
        _ignore(path, f"unreadable ({e.strerror or e})")
        return None, path
    why = problem(doc, machine)
    if why:
        _ignore(path, why)
        return None, path
    return doc, path


def winner(machine, device_type: str, cache: str) -> tuple[dict | None, str]:
    """The measured best knobs for a load of `cache` ('cold'/'warm') onto `device_type`, and the file."""
    doc, path = read(machine)
    if doc is None:
        return None, ""
    return doc["winners"].get(f"{device_type}/{cache}"), str(path)


def forget(machine) -> Path | None:
    """Remove the profile of `machine`'s file system; returns the path removed (None: there was none)."""
    path = profile_path(machine)
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_dir():
        import shutil

        shutil.rmtree(path)
    else:
        path.unlink()
    _warned.clear()
    return path


def describe(machine) -> str:
    """What `gdslab env` prints: the profile in use, or why none is."""
    path = profile_path(machine)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _warned.clear()
        doc, _ = read(machine)
    if doc is None:
        if caught:
            return f"{path}: ignored: {str(caught[0].message).split(': ', 2)[-1]}"
        return f"none for {machine.fstype} at {machine.mount_point} (`gdslab tune` measures one; it would be {path})"
    from .sizes import format_size

    lines = [f"{path} (tuned {doc.get('created')} on {doc.get('checkpoint') or 'a checkpoint'})"]
    for state, w in sorted(doc["winners"].items()):
        options = "".join(f", {k}={v}" for k, v in (w.get("options") or {}).items())
        gbps = f": {w['gbps']:.2f} GB/s" if isinstance(w.get("gbps"), (int, float)) else ""
        lines.append(f"  {state}: {w['datapath']}, {w['threads']} threads, {format_size(w['io_size'])}{options}{gbps}")
    return "\n".join(lines)


__all__ = ["ENV", "ProfileIgnored", "cache_dir", "describe", "forget", "problem", "profile_path", "read", "save",
           "winner"]
