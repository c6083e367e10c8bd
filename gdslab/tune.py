"""`gdslab tune`: a short, bounded sweep around the policy's choice, whose winners `auto` loads then use.

The policy (`gdslab.policy`) guesses from the machine; the machine may disagree (a shared
VM whose best thread count moves from run to run, a file system the rules do not know).
`tune` measures, where the lab runs: for each cache state (cold, warm) it loads the
checkpoint with the policy's own knobs and with one step either side of each (threads
halved and doubled, io size a quarter and four times, O_DIRECT on and off for a host
path), round after round, interleaved, until the time budget is spent. The best median
per device and cache state is stored in a profile for this machine and file system
(`gdslab.tuned`), which later `auto` loads use and name. Loads here pass every knob
explicitly, so neither the policy nor an older profile decides what is measured.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import policy, tuned
from .checkpoint import Checkpoint
from .devices import resolve_device
from .errors import GdslabError
from .loader import load
from .sizes import format_size
from .sweep import prepare_cache

MiB = 1 << 20
DEFAULT_BUDGET_S = 60.0
DEFAULT_SIZE = "512MiB"


@dataclass
class Trial:
    """One set of knobs for one cache state, and what each of its runs measured."""

    cache: str
    datapath: str
    threads: int
    io_size: int
    options: dict = field(default_factory=dict)
    policy: bool = False          # the policy's own choice (the others are its neighbours)
    gbps: list[float] = field(default_factory=list)
    effective: str = ""
    failed: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.gbps) if self.gbps else 0.0

    @property
    def label(self) -> str:
        options = "".join(f", {k}={v}" for k, v in self.options.items())
        return f"{self.datapath}, {self.threads} threads, {format_size(self.io_size)}{options}"

    def winner(self) -> dict:
        return {"datapath": self.datapath, "threads": self.threads, "io_size": self.io_size,
                "options": dict(self.options), "gbps": self.median, "runs": len(self.gbps)}


@dataclass
class TuneResult:
    checkpoint: str
    device: str
    trials: list[Trial]
    winners: dict[str, dict]
    skipped: dict[str, str]
    seconds: float
    budget_s: float
    profile: Path | None = None

    def table(self) -> str:
        """The trials, best first within each cache state; the policy's own choice and the winner marked."""
        lines = [f"gdslab tune: {self.checkpoint} → {self.device}, {self.seconds:.0f} s of a {self.budget_s:.0f} s "
                 "budget; medians (GB/s = 1e9 B/s)", "",
                 f"{'cache':5} {'GB/s':>6} {'runs':>4}  knobs"]
        for cache in dict.fromkeys(t.cache for t in self.trials):
            best = self.winners.get(f"{self._kind}/{cache}")
            for t in sorted((t for t in self.trials if t.cache == cache), key=lambda t: -t.median):
                won = best is not None and bool(t.gbps) and _knobs(t.winner()) == _knobs(best)
                marks = [m for m, on in (("policy", t.policy), ("WINNER", won)) if on]
                value = f"{t.median:6.2f}" if t.gbps else "     –"
                lines.append(f"{cache:5} {value} {len(t.gbps):4}  {t.label}"
                             + (f"   [{', '.join(marks)}]" if marks else "") + (f"  failed: {t.failed}" if t.failed else ""))
        for cache, why in self.skipped.items():
            lines.append(f"{cache:5}      –    0  not measured: {why}")
        if self.profile:
            lines += ["", f"profile: {self.profile}"]
        return "\n".join(lines)

    @property
    def _kind(self) -> str:
        return resolve_device(self.device).type


def _knobs(w: dict) -> tuple:
    return w["datapath"], w["threads"], w["io_size"], sorted((w.get("options") or {}).items())


def candidates(choice: policy.Choice, cache: str, host: bool) -> list[Trial]:
    """The policy's choice first, then one step either side of each knob (no duplicates)."""
    base = Trial(cache, choice.datapath, choice.threads, choice.io_size, dict(choice.options), policy=True)
    out = [base]

    def add(**change) -> None:
        t = Trial(cache, base.datapath, change.get("threads", base.threads), change.get("io_size", base.io_size),
                  change.get("options", dict(base.options)))
        if 1 <= t.threads <= policy.MAX_THREADS and MiB <= t.io_size <= 256 * MiB and \
                all((t.threads, t.io_size, t.options) != (o.threads, o.io_size, o.options) for o in out):
            out.append(t)

    add(threads=max(1, base.threads // 2))
    add(threads=base.threads * 2)
    add(io_size=base.io_size // 4)
    add(io_size=base.io_size * 4)
    if host and "direct" in base.options:
        add(options={**base.options, "direct": not base.options["direct"]})
    return out


def tune(checkpoint: str | Path | None = None, device: str | None = None, budget_s: float = DEFAULT_BUDGET_S,
         caches: tuple[str, ...] = ("cold", "warm"), progress: bool = True, save: bool = True,
         size: str = DEFAULT_SIZE) -> TuneResult:
    """Measure the policy's choice and its neighbours within `budget_s` seconds; store the winners.

    `checkpoint` defaults to a synthetic one of `size` in the checkpoints folder (its file
    system is the one tuned). Every trial runs at least once where the budget allows, the
    policy's own choice always; further rounds repeat them all, interleaved, while time is left.
    """
    from tqdm.auto import tqdm

    from . import datapaths
    from .synthetic import cached_checkpoint

    folder = Path(checkpoint) if checkpoint else cached_checkpoint(size, 4)
    ckpt = Checkpoint.open(folder)
    files = [f.path for f in ckpt.files]
    device = resolve_device(device)
    directory = ckpt.root if ckpt.root.is_dir() else ckpt.root.parent
    machine = policy.this_machine(directory)
    gds = device.type == "cuda" and datapaths.get("gds").info(device).available
    trials: list[Trial] = []
    for cache in caches:
        facts = policy.LoadFacts(device.type, 0.0 if cache == "cold" else 1.0, gds, policy.local_ranks())
        trials += candidates(policy.choose(machine, facts), cache, device.type == "cpu")
    skipped: dict[str, str] = {}
    start = time.monotonic()
    took: list[float] = []
    bar = tqdm(total=round(budget_s), disable=not progress, unit="s", desc="gdslab tune")
    try:
        for _ in range(1000):
            ran = False
            for trial in trials:
                if trial.cache in skipped or trial.failed:
                    continue
                elapsed = time.monotonic() - start
                guess = statistics.median(took) if took else 0.0
                if elapsed + guess > budget_s and not (trial.policy and not trial.gbps):
                    continue
                bar.set_postfix_str(f"{trial.cache} {trial.label}", refresh=False)
                began = time.monotonic()
                ok, _, why = prepare_cache(files, trial.cache)
                if not ok:
                    skipped[trial.cache] = why
                    continue
                try:
                    result = load(ckpt, trial.datapath, device=device, threads=trial.threads,
                                  io_size=trial.io_size, measure_costs=False, **trial.options)
                except GdslabError as e:
                    trial.failed = str(e)
                    continue
                trial.gbps.append(result.gbps)
                trial.effective = result.effective
                del result
                took.append(time.monotonic() - began)
                ran = True
                bar.update(min(round(budget_s), round(time.monotonic() - start)) - bar.n)
            if not ran:
                break
    finally:
        bar.close()
    winners = {}
    for cache in caches:
        measured = [t for t in trials if t.cache == cache and t.gbps]
        if measured:
            winners[f"{device.type}/{cache}"] = max(measured, key=lambda t: t.median).winner()
    outcome = TuneResult(str(ckpt.root), str(device), trials, winners, skipped, time.monotonic() - start, budget_s)
    if save and winners:
        table = [{"cache": t.cache, **t.winner(), "policy": t.policy} for t in trials if t.gbps]
        outcome.profile = tuned.save(machine, winners, table, str(ckpt.root), budget_s)
    return outcome


def forget(checkpoint_dir: str | Path | None = None) -> Path | None:
    """Remove the profile of the file system holding `checkpoint_dir` (default: where checkpoints go)."""
    from .synthetic import checkpoints_home

    folder = Path(checkpoint_dir) if checkpoint_dir else Path(checkpoints_home())
    if folder.is_file():
        folder = folder.parent
    return tuned.forget(policy.this_machine(folder))


__all__ = ["DEFAULT_BUDGET_S", "Trial", "TuneResult", "candidates", "forget", "tune"]
