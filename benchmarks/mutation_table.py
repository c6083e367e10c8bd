"""Per-module table of a mutmut run (`make mutation` prints it; docs/results/mutation.md keeps it).

Reads mutmut's own records (mutants/<module>.py.meta, one exit code per mutant) and prints,
per mutated module: mutants, killed, survived, timed out, no tests, not yet checked, and the
kill ratio (killed / mutants checked). Then the names of the mutants not killed, so that
each can be looked at with `mutmut show NAME`, or with --diffs each one's diff, the brief for
whoever writes the test that kills it or explains why it is equivalent.

    .venv/bin/python benchmarks/mutation_table.py [--names] [--diffs]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

# mutmut 3's exit codes (mutmut/stats.py: status_by_exit_code).
_KILLED = {1, 3}
_SURVIVED = {0}
_TIMEOUT = {24, -24, 36, 152, 255}
_NO_TESTS = {5, 33}


def _status(code: int | None) -> str:
    if code is None:
        return "not checked"
    if code in _KILLED:
        return "killed"
    if code in _SURVIVED:
        return "survived"
    if code in _TIMEOUT:
        return "timeout"
    if code in _NO_TESTS:
        return "no tests"
    return "other"


def table(root: Path = Path("mutants")) -> tuple[list[str], dict[str, list[str]]]:
    rows = ["| module | mutants | killed | survived | timed out | no tests | not checked | other | kill ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    not_killed: dict[str, list[str]] = {}
    for meta in sorted(root.rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if not codes:
            continue
        module = str(meta.relative_to(root))[: -len(".meta")]
        count = Counter(_status(code) for code in codes.values())
        checked = sum(count.values()) - count["not checked"]
        ratio = f"{100 * count['killed'] / checked:.1f}%" if checked else "-"
        rows.append(f"| `{module}` | {len(codes)} | {count['killed']} | {count['survived']} | {count['timeout']} "
                    f"| {count['no tests']} | {count['not checked']} | {count['other']} | {ratio} |")
        not_killed[module] = sorted(f"{name}: {_status(code)}" for name, code in codes.items()
                                    if _status(code) not in ("killed", "not checked"))
    return rows, not_killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", action="store_true", help="also list each mutant not killed")
    parser.add_argument("--diffs", action="store_true", help="also print the diff of each mutant not killed")
    args = parser.parse_args()
    rows, not_killed = table()
    if len(rows) == 2:
        raise SystemExit("no mutmut results under mutants/: run `make mutation` first")
    print("\n".join(rows))
    if args.names:
        for module, names in not_killed.items():
            if names:
                print(f"\n{module}:")
                print("\n".join(f"  {n}" for n in names))
    if args.diffs:
        _print_diffs(not_killed)


def _print_diffs(not_killed: dict[str, list[str]]) -> None:
    # mutmut's own reader of its mutated copy (it looks under ./mutants, so run from the repo root).
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    for module, names in not_killed.items():
        for entry in names:
            name = entry.split(":", 1)[0]
            print(f"\n## {entry}\n```diff\n{get_diff_for_mutant(name, path=Path(module))}\n```")


if __name__ == "__main__":
    main()
