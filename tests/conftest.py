"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from gdslab.cache import can_evict, eviction_must_work


def require_eviction(folder: Path) -> None:
    """Skip a cold-cache test only where eviction cannot work (tmpfs...); fail where it must (ext4, xfs).

    Deciding by `can_evict` alone would turn a broken eviction into skips: exactly how a
    warm run comes to be labelled cold.
    """
    ok, why = can_evict(folder)
    if ok:
        return
    if eviction_must_work(folder):
        pytest.fail(f"page-cache eviction must work on this file system, and does not: {why}")
    pytest.skip(f"page-cache eviction does not work here: {why}")
