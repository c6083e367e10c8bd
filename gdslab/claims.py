"""A notebook's claims, asserted with their measured value and, for the soak, written down.

A claim that fails at random teaches a room that the lab is wrong. So every claim a
notebook asserts goes through `claim(name, value, op, threshold)`: it fails with a message
that names the claim, the value measured and the bound; and when `$GDSLAB_CLAIMS_LOG`
names a file it first appends the value there as one JSON line. `benchmarks/claims_soak.py`
runs the notebooks many times with that set and reports, per claim, the spread of what
was measured against its threshold (the margin).
"""

from __future__ import annotations

import json
import math
import operator
import os
import time
from pathlib import Path

LOG_VARIABLE = "GDSLAB_CLAIMS_LOG"

OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq}


class ClaimFailed(AssertionError):
    """A notebook's claim did not hold: the message names it, the measured value and the bound."""


def margin(value: float, op: str, threshold: float) -> float:
    """How far `value` lies inside its bound, in the bound's direction (negative: outside)."""
    if op not in OPS:
        raise ValueError(f"unknown comparison {op!r} (one of {', '.join(OPS)})")
    if op == "==":
        return -abs(value - threshold)
    return value - threshold if op in (">", ">=") else threshold - value


def claim(name: str, value, op: str, threshold, *, note: str = "") -> float:
    """Assert `value op threshold` (a number against a number); log it for the soak; return `value`.

    `name` says the claim in words (it is the soak's key: keep it stable); `note` says what
    the number is, for the report.
    """
    if op not in OPS:
        raise ValueError(f"claim {name!r}: unknown comparison {op!r} (one of {', '.join(OPS)})")
    if isinstance(value, bool) or isinstance(threshold, bool):
        raise TypeError(f"claim {name!r}: value and threshold must be numbers, not True/False")
    value, threshold = float(value), float(threshold)
    held = not math.isnan(value) and OPS[op](value, threshold)
    path = os.environ.get(LOG_VARIABLE)
    if path:
        line = {"claim": name, "value": value, "op": op, "threshold": threshold, "held": held,
                "note": note, "time": time.time()}
        with Path(path).open("a") as f:
            f.write(json.dumps(line) + "\n")
    if not held:
        raise ClaimFailed(f"claim {name!r} does not hold: measured {value:.6g}, needs {op} {threshold:.6g}"
                          + (f" ({note})" if note else ""))
    return value


def read_log(path: str | Path) -> list[dict]:
    """The claims a log holds, one dict per line; a line that is not a claim is an error naming the file."""
    out = []
    for k, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {k} is not JSON ({e.msg})") from None
        if not isinstance(entry, dict) or not {"claim", "value", "op", "threshold"} <= set(entry):
            raise ValueError(f"{path}: line {k} is not a claim (needs claim, value, op, threshold)")
        out.append(entry)
    return out


__all__ = ["ClaimFailed", "LOG_VARIABLE", "claim", "margin", "read_log"]
