"""Shared test helpers."""

from __future__ import annotations

import json
import os
import re
import threading
import tomllib
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


def write_synced(path: Path, nbytes: int) -> Path:
    """A file of `nbytes` random bytes, synced: its pages clean, so eviction can drop them."""
    with open(path, "wb") as f:
        f.write(os.urandom(nbytes))
        f.flush()
        os.fsync(f.fileno())
    return path


# A test that took longer than this in mutmut's stats run is left out of mutants' runs: every
# surviving mutant pays for every test it reaches, and one 33 s test (reshard's bounded-memory run
# of a large checkpoint) made the whole core's run last hours. What only such a test would catch
# shows as a survivor, to be caught by a cheaper test. `make test` runs them all.
MUTATION_TEST_BUDGET_S = 3.0
# A mutant's tests may take this many times their time in the stats run, plus the slack, of wall time.
MUTATION_WALL_FACTOR = 10
MUTATION_WALL_SLACK_S = 60.0

_MUTANT_NAME = re.compile(r"^(?P<module>gdslab(?:\.\w+)*?)\.x[_\u01c1]")


def pytest_collection_modifyitems(config, items):
    """Under mutmut, run a mutant against its own module's unit tests only, fastest first.

    mutmut picks every test that calls the mutated function: a checkpoint mutant would run
    every loader test. The issue asks for the module's own fast tests ([tool.gdslab.mutation_tests]
    in pyproject.toml names them); a mutant none of them reaches is reported as having no tests,
    not silently counted killed. Fastest first, because `-x` stops at the first failure; none
    slower than MUTATION_TEST_BUDGET_S.
    """
    match = _MUTANT_NAME.match(os.environ.get("MUTANT_UNDER_TEST", ""))
    if match is None:
        return
    module = match.group("module")
    try:
        own = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["gdslab"]["mutation_tests"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return
    prefixes = [key for key in own if module == key or module.startswith(key + ".")]
    if prefixes:
        files = set(own[max(prefixes, key=len)])
        own_file = [item.nodeid.split("::")[0] in files for item in items]
        config.hook.pytest_deselected(items=[item for item, own in zip(items, own_file) if not own])
        items[:] = [item for item, own in zip(items, own_file) if own]
    try:
        durations = json.loads(Path("mutmut-stats.json").read_text())["duration_by_test"]
    except (OSError, KeyError, ValueError):
        return
    heavy = [item for item in items if durations.get(item.nodeid, 0.0) > MUTATION_TEST_BUDGET_S]
    if heavy:
        config.hook.pytest_deselected(items=heavy)
        items[:] = [item for item in items if durations.get(item.nodeid, 0.0) <= MUTATION_TEST_BUDGET_S]
    items.sort(key=lambda item: durations.get(item.nodeid, float("inf")))
    expected = sum(durations.get(item.nodeid, MUTATION_TEST_BUDGET_S) for item in items)
    _end_after(MUTATION_WALL_FACTOR * expected + MUTATION_WALL_SLACK_S)


STATS_FAILURES = "mutmut-stats-failures.txt"  # in mutants/, where mutmut runs its tests


def pytest_runtest_logreport(report):
    """Under mutmut's stats run, write each failing test's report to STATS_FAILURES.

    mutmut runs its stats in a forked child whose output it does not show: a failing test
    there ends the run with only "failed to collect stats. runner returned 1".
    `make mutation` prints this file when that happens.
    """
    if report.failed and os.environ.get("MUTANT_UNDER_TEST") == "stats":
        with open(STATS_FAILURES, "a") as f:
            f.write(f"{report.nodeid} ({report.when})\n{report.longreprtext}\n\n")


def _end_after(seconds: float) -> None:
    """End this mutant's test process after `seconds` of wall time, as mutmut's own timeout does.

    mutmut limits a mutant's CPU time only (RLIMIT_CPU): a mutant that deadlocks (a lock never
    released, a pool waiting on itself) sleeps on a futex using no CPU and is never stopped;
    run E of docs/results/mutation.md stalled on two such. Exit status 24 (SIGXCPU's number)
    is what mutmut reads as "timed out", so such a mutant is counted as a timeout, not killed.
    """
    timer = threading.Timer(seconds, os._exit, args=(24,))
    timer.daemon = True
    timer.start()
