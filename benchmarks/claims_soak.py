"""Run every notebook N times under `pytest --nbval`, as users check the lab, and report each claim's spread.

Each notebook runs in its own `python -m pytest -q --nbval NOTEBOOK` (strict nbval, the
lab's default size: $GDSLAB_LAB_SIZE is removed from the environment), with
$GDSLAB_CLAIMS_LOG naming a file its `gdslab.claims.claim` calls append to. The report
(docs/results/claims-soak.md) gives, per notebook, how many runs passed and how long
they took, and per claim its threshold, the min / median / max measured and the margin
left by the worst value. Progress is kept in --work (one JSON line per notebook run),
so an interrupted soak resumes where it stopped.

    .venv/bin/python benchmarks/claims_soak.py              # 10 runs of every notebook
    .venv/bin/python benchmarks/claims_soak.py --runs 2     # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gdslab.claims import LOG_VARIABLE, margin, read_log  # noqa: E402


def run_notebook(notebook: Path, log: Path, timeout: float) -> dict:
    """One strict nbval run of one notebook at the default size; its outcome and the claims it logged."""
    env = {k: v for k, v in os.environ.items() if k != "GDSLAB_LAB_SIZE"}
    env[LOG_VARIABLE] = str(log)
    log.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", str(notebook)]
    began = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        rc, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        rc, output = "timeout", f"timed out after {timeout:.0f} s\n{(e.stdout or b'')[-4000:]!r}"
    seconds = time.perf_counter() - began
    claims = read_log(log) if log.exists() else []
    return {"notebook": notebook.name, "rc": rc, "seconds": seconds, "claims": claims,
            "tail": "" if rc == 0 else output[-3000:]}


def summarize(done: list[dict]) -> tuple[list[dict], list[dict]]:
    """Per notebook (runs, passed, seconds) and per claim (threshold, values, margin)."""
    notebooks: dict[str, dict] = {}
    claims: dict[tuple, dict] = {}
    for run in done:
        nb = notebooks.setdefault(run["notebook"], {"notebook": run["notebook"], "runs": 0, "passed": 0, "seconds": []})
        nb["runs"] += 1
        nb["passed"] += run["rc"] == 0
        nb["seconds"].append(run["seconds"])
        for c in run["claims"]:
            key = (run["notebook"], c["claim"], c["op"], c["threshold"])
            entry = claims.setdefault(key, {"notebook": run["notebook"], "claim": c["claim"], "op": c["op"],
                                            "threshold": c["threshold"], "values": [], "failed": 0, "runs": set()})
            entry["values"].append(c["value"])
            entry["failed"] += not c.get("held", True)
            entry["runs"].add(run["run"])
    rows = []
    for entry in claims.values():
        values = entry["values"]
        worst = min(margin(v, entry["op"], entry["threshold"]) for v in values)
        rows.append({**entry, "runs": len(entry["runs"]), "min": min(values), "median": statistics.median(values),
                     "max": max(values), "margin": worst})
    return list(notebooks.values()), rows


def _fmt(x: float) -> str:
    return f"{x + 0.0:.4g}"  # + 0.0: no "-0"


def report(done: list[dict], runs_asked: int, out: Path, command: str) -> str:
    notebooks, claims = summarize(done)
    cores = os.cpu_count()
    try:
        mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal:")) / 2**20
    except (OSError, StopIteration):
        mem = float("nan")
    failures = [r for r in done if r["rc"] != 0]
    lines = [
        "# Claims soak: every notebook under `pytest --nbval`, many times",
        "",
        f"Command: `{command}` ({runs_asked} runs asked; this report covers the runs done so far). Each run is",
        "`python -m pytest -q --nbval NOTEBOOK` per notebook, strict nbval, at the lab's default size",
        "(`GDSLAB_LAB_SIZE` unset: 512 MiB), every asserted number logged by `gdslab.claims.claim`.",
        f"Machine: {platform.node() or 'this machine'}, {cores} cores, {mem:.0f} GiB, {platform.platform()}, "
        f"Python {platform.python_version()}; shared with other work while it ran (a busy room, realistic).",
        f"Written {datetime.now(timezone.utc).isoformat(timespec='seconds')}.",
        "",
        f"**{sum(n['passed'] for n in notebooks)} of {sum(n['runs'] for n in notebooks)} notebook runs passed; "
        f"{len(failures)} failed.**",
        "",
        "| notebook | runs | passed | seconds min / median / max |",
        "|---|---:|---:|---|",
    ]
    for n in sorted(notebooks, key=lambda n: n["notebook"]):
        s = n["seconds"]
        lines.append(f"| {n['notebook']} | {n['runs']} | {n['passed']} | "
                     f"{min(s):.0f} / {statistics.median(s):.0f} / {max(s):.0f} |")
    lines += [
        "",
        "Per claim: the bound, the values measured over all runs (a claim inside a loop logs once per",
        "item), and the margin the worst value left (in the claim's unit; negative: it failed).",
        "",
        "| notebook | claim | bound | values | min | median | max | margin |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for c in sorted(claims, key=lambda c: (c["notebook"], c["claim"], c["op"])):
        lines.append(f"| {c['notebook'].split('_')[0]} | {c['claim']} | {c['op']} {_fmt(c['threshold'])} | "
                     f"{len(c['values'])} | {_fmt(c['min'])} | {_fmt(c['median'])} | {_fmt(c['max'])} | "
                     f"{_fmt(c['margin'])} |")
    if failures:
        lines += ["", "## Failures", ""]
        for r in failures:
            lines += [f"### run {r['run']}, {r['notebook']} (exit {r['rc']})", "", "```", r["tail"].strip()[-2000:],
                      "```", ""]
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--notebooks", nargs="*", type=Path, default=None, help="default: notebooks/*.ipynb")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "claims-soak.md")
    parser.add_argument("--work", type=Path, default=ROOT / "results" / "claims-soak",
                        help="progress and claim logs (resumed when present)")
    parser.add_argument("--fresh", action="store_true", help="forget progress in --work and start again")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per notebook run")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    args.work.mkdir(parents=True, exist_ok=True)
    progress = args.work / "runs.jsonl"
    if args.fresh:
        progress.unlink(missing_ok=True)
    done = [json.loads(line) for line in progress.read_text().splitlines()] if progress.exists() else []
    have = {(r["run"], r["notebook"]) for r in done}
    command = "python benchmarks/claims_soak.py" + (f" --runs {args.runs}" if args.runs != 10 else "")
    for run in range(1, args.runs + 1):
        for notebook in notebooks:
            if (run, notebook.name) in have:
                continue
            result = {"run": run, **run_notebook(notebook, args.work / f"run{run}-{notebook.stem}.jsonl", args.timeout)}
            done.append(result)
            with progress.open("a") as f:
                f.write(json.dumps(result) + "\n")
            print(f"run {run}/{args.runs} {notebook.name}: {'ok' if result['rc'] == 0 else 'FAILED'} "
                  f"in {result['seconds']:.0f} s, {len(result['claims'])} claims logged", flush=True)
        report(done, args.runs, args.out, command)
    print(report(done, args.runs, args.out, command))
    return 0 if all(r["rc"] == 0 for r in done) else 1


if __name__ == "__main__":
    sys.exit(main())
