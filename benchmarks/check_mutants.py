"""Check mutants by hand against chosen tests, many in one process: killed or survived, one line each.

A test author's check before (or after) a `make mutation` run: does this test kill those
survivors? mutmut's trampoline reads MUTANT_UNDER_TEST at every call of a mutated function,
so one process can import torch and the package once and run the tests under each mutant in
turn (a fresh `python -m pytest` per mutant spends seconds importing). Needs the `mutants/`
folder of a run. Run from the repository root, with -P so that `gdslab` comes from `mutants/`:

    .venv/bin/python -P benchmarks/check_mutants.py @names.txt -- tests/test_datapaths_mutants.py -k bounce

Names come as arguments or, after @, from a file (one per line; `mutation_table.py --names`
lists them). A mutant still running after --timeout seconds is interrupted and reported as timed out
(as mutmut would: caught, but not counted as killed).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import sys
from pathlib import Path


class _Late(Exception):
    pass


def _names(items: list[str]) -> list[str]:
    out = []
    for item in items:
        if item.startswith("@"):
            out += [line.split()[0].rstrip(":") for line in Path(item[1:]).read_text().splitlines() if line.strip()]
        else:
            out.append(item)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="mutant names, or @FILE of names")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per mutant")
    args = parser.parse_args(argv[:split])
    pytest_args = argv[split + 1:]
    if not Path("mutants/gdslab").is_dir():
        parser.error("no mutants/gdslab here: run from the repository root after `make mutation`")
    sys.path.insert(0, str(Path("mutants").resolve()))
    import pytest

    timed_out = []

    def late(*_):
        timed_out.append(True)
        raise _Late()

    signal.signal(signal.SIGALRM, late)
    for name in _names(args.names):
        timed_out.clear()
        os.environ["MUTANT_UNDER_TEST"] = name
        signal.setitimer(signal.ITIMER_REAL, args.timeout)
        verdict = "survived"
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                code = pytest.main(["-q", "-x", "-p", "no:cacheprovider", *pytest_args])
            # 5: no test selected (tests/conftest.py keeps only the mutated module's own files)
            verdict = {0: "survived", 5: "no tests"}.get(int(code), "killed")
        except _Late:
            pass
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if timed_out:
            verdict = f"timed out (after {args.timeout:g} s)"
        print(name, verdict, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
