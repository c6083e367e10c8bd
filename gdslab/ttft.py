"""Time to first token: what a cold start is to the people who serve models.

A loader's GB/s is one part. From a folder to the first token a server also builds the
model and runs its first forward pass, and once the weights arrive fast, those can
dominate. `first_token` times each stage on one clock:

- construct: read `config.json`, build the `transformers` model with its parameters on
  `meta` (no memory, no initialisation: `into_model.parameters_on_meta`); the first run in
  a process also imports the model's code, seconds that a new server pays too (`compare`
  discards a first round to keep them apart);
- weights: `gdslab.load_into` by the chosen data path, straight into the model;
- forward: the first forward pass over a short prompt (the prefill), device synchronized;
- token: the greedy next token picked from the last position's logits and brought to the
  host, which is what a server sends back.

`from_pretrained_first_token` times `transformers`' own `from_pretrained` (construction
and weights in one call, as users know it) and the same forward and token: the baseline.
Each stage is an `Event` on one `EventLog`, lane "stages", beside the load's own reader
threads (shifted onto the same clock), so `gdslab.plots.plot_timeline` draws the Gantt.
The prompt is fixed token ids (synthetic checkpoints have no tokenizer): the same ids in
every run, so every run must pick the same token.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .cache import evict_all, resident_fraction_all, warm
from .checkpoint import Checkpoint
from .devices import resolve_device
from .into_model import load_into, parameters_on_meta
from .loader import LoadResult, cache_state
from .profile import Event, EventLog

STAGES = ("construct", "weights", "forward", "token")
BASELINE = "from_pretrained"
BASELINE_STAGES = (BASELINE, "forward", "token")
LANE = "stages"
CACHES = ("cold", "warm")
PROMPT_TOKENS = 16


def prompt_ids(vocab: int, tokens: int = PROMPT_TOKENS) -> torch.Tensor:
    """A fixed prompt of `tokens` ids spread over the vocabulary (1 × tokens, int64)."""
    return torch.tensor([[(1 + 7919 * k) % vocab for k in range(tokens)]], dtype=torch.long)


@dataclass
class FirstToken:
    """One run from a folder to the first token: seconds per stage, the token, the events."""

    label: str  # the data path, or "from_pretrained"
    device: str
    cache: str  # measured before the run: cold, partial or warm
    resident_before: float
    stages: dict[str, float]
    token: int
    prompt_tokens: int
    nbytes: int
    events: list[Event] = field(repr=False, default_factory=list)
    load: LoadResult | None = field(repr=False, default=None)
    asked: str = ""  # the cache state asked for ("cold", "warm" or "" for as found)

    @property
    def seconds(self) -> float:
        return sum(self.stages.values())

    def record(self) -> dict:
        """Flat: one row per run, a column per stage (`<stage>_s`)."""
        return {"label": self.label, "device": self.device, "cache": self.cache, "asked": self.asked,
                "resident_before": self.resident_before, "nbytes": self.nbytes, "prompt_tokens": self.prompt_tokens,
                "token": self.token, "seconds": self.seconds,
                **{f"{stage}_s": s for stage, s in self.stages.items()},
                "effective": self.load.effective if self.load is not None else BASELINE}

    def __str__(self) -> str:
        parts = ", ".join(f"{stage} {s:.3f}" for stage, s in self.stages.items())
        return f"{self.label} → {self.device} ({self.cache}): first token in {self.seconds:.3f} s ({parts})"


class _Clock:
    """Stage events on one clock, in their own lane."""

    def __init__(self):
        self.origin = time.perf_counter()
        self.events: list[Event] = []
        self.stages: dict[str, float] = {}

    def stage(self, name: str, start: float, nbytes: int = 0, device: str = "") -> None:
        end = time.perf_counter()
        self.events.append(Event(name, start - self.origin, end - self.origin, nbytes, LANE, "", device))
        self.stages[name] = end - start

    def shifted(self, events: list[Event], origin: float) -> list[Event]:
        """A load's events (on its own clock, which started at `origin`) on this clock."""
        delta = origin - self.origin
        return [Event(e.stage, e.start + delta, e.end + delta, e.nbytes, e.thread, e.file, e.device, e.landed)
                for e in events]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _set_cache(files: list[Path], cache: str | None) -> None:
    if cache == "cold":
        evict_all(files)
    elif cache == "warm":
        warm(files)
    elif cache is not None:
        raise ValueError(f"cache must be one of {CACHES} or None, got {cache!r}")


def _folder(ckpt: Checkpoint) -> Path:
    root = Path(ckpt.root)
    return root if root.is_dir() else root.parent


def _config_path(folder: Path) -> Path:
    config = folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{folder}: no config.json, so no model to build (a synthetic checkpoint gets one "
                                "from gdslab.synthetic.write_config; a real checkpoint brings its own)")
    return config


def build_model(checkpoint, config=None):
    """The `transformers` causal LM of `checkpoint`'s `config.json`, parameters on `meta`, in eval mode.

    Parameters get their dtype from the config (`torch_dtype`); no initialiser runs (the
    weights come next); tied embeddings are tied; buffers computed at construction are real.
    """
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    folder = _folder(checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.open(checkpoint))
    if config is None:
        config = AutoConfig.from_pretrained(_config_path(folder))
    dtype = getattr(config, "dtype", None) or torch.float32
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with parameters_on_meta(), no_init_weights():
            model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.set_default_dtype(previous)
    model.tie_weights()  # no_init_weights skipped the tying that init_weights does
    return model.eval()


def _first_forward(model, clock: _Clock, device: torch.device, ids: torch.Tensor) -> int:
    start = time.perf_counter()
    with torch.inference_mode():
        logits = model(ids.to(device)).logits
        _sync(device)
        clock.stage("forward", start, device=str(device))
        start = time.perf_counter()
        token = int(logits[0, -1].argmax())  # greedy: the first generated token, on the host
    clock.stage("token", start, device=str(device))
    return token


def first_token(checkpoint, datapath: str = "auto", device: str | torch.device | None = None, *,
                cache: str | None = None, prompt_tokens: int = PROMPT_TOKENS, threads: int | str = "auto",
                io_size: int | str = "auto", **options) -> FirstToken:
    """Folder to first token with gdslab: construct on meta, `load_into` by `datapath`, forward, token.

    `cache` "cold" evicts the checkpoint's files from the page cache first, "warm" reads them
    through it first, None leaves it as it is; the state measured just before is recorded.
    """
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.open(checkpoint)
    device = resolve_device(device)
    files = [f.path for f in ckpt.files]
    _set_cache(files, cache)
    resident = resident_fraction_all(files)
    _sync(device)
    clock = _Clock()
    start = time.perf_counter()
    model = build_model(ckpt)
    clock.stage("construct", start)
    start = time.perf_counter()
    log = EventLog()
    result = load_into(model, ckpt, datapath, device, threads, io_size, log=log, **options)
    clock.stage("weights", start, result.nbytes, str(device))
    ids = prompt_ids(model.config.vocab_size, prompt_tokens)
    token = _first_forward(model, clock, device, ids)
    events = clock.events + clock.shifted(result.events, log.origin)  # the load set its origin
    return FirstToken(result.datapath, str(device), cache_state(resident), resident, clock.stages, token, prompt_tokens,
                      result.nbytes, sorted(events, key=lambda e: (e.start, e.end)), result, cache or "")


def from_pretrained_first_token(checkpoint, device: str | torch.device | None = None, *, cache: str | None = None,
                                prompt_tokens: int = PROMPT_TOKENS) -> FirstToken:
    """The baseline: `AutoModelForCausalLM.from_pretrained(folder)` (dtype from the config), forward, token."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.open(checkpoint)
    folder = _folder(ckpt)
    _config_path(folder)
    device = resolve_device(device)
    files = [f.path for f in ckpt.files]
    _set_cache(files, cache)
    resident = resident_fraction_all(files)
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its per-tensor progress bar is not part of the work
    try:
        _sync(device)
        clock = _Clock()
        start = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype="auto", **({"device_map": str(device)} if device.type == "cuda" else {})).eval()
        _sync(device)
        clock.stage(BASELINE, start, ckpt.nbytes, str(device))
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    token = _first_forward(model, clock, device, prompt_ids(model.config.vocab_size, prompt_tokens))
    return FirstToken(BASELINE, str(device), cache_state(resident), resident, clock.stages, token, prompt_tokens,
                      ckpt.nbytes, clock.events, None, cache or "")


def compare(checkpoint, datapaths: list[str] | tuple[str, ...] = ("auto",), device=None, *,
            caches: tuple[str, ...] = CACHES, repeats: int = 1, baseline: bool = True, warmup: bool = True,
            **kwargs) -> list[FirstToken]:
    """Every data path (and the baseline) × cache state × repeat, interleaved, in one process.

    `warmup` runs one discarded round first: the process's one-time costs (imports, the
    first call into each library) fall on it, not on whichever run happens to go first.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats!r}")
    labels = [*datapaths, *([BASELINE] if baseline else [])]

    def one(label: str, cache: str | None) -> FirstToken:
        if label == BASELINE:
            return from_pretrained_first_token(checkpoint, device, cache=cache)
        return first_token(checkpoint, label, device, cache=cache, **kwargs)

    if warmup:
        for label in labels:
            one(label, None)
    return [one(label, cache) for _ in range(repeats) for cache in caches for label in labels]


def medians(runs: list[FirstToken]) -> list[dict]:
    """Per (label, cache asked): the median seconds of each stage and in total, and the run count."""
    groups: dict[tuple[str, str], list[FirstToken]] = {}
    for run in runs:
        groups.setdefault((run.label, run.asked or run.cache), []).append(run)
    out = []
    for (label, cache), group in groups.items():
        stages = list(dict.fromkeys(s for run in group for s in run.stages))
        row = {"label": label, "cache": cache, "runs": len(group), "device": group[0].device}
        for stage in stages:
            row[f"{stage}_s"] = statistics.median(r.stages.get(stage, 0.0) for r in group)
        row["seconds"] = statistics.median(r.seconds for r in group)
        out.append(row)
    return out


# --- the command line: `gdslab ttft CHECKPOINT --datapath ...` ------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="a folder with config.json (a synthetic lab checkpoint has one)")
    parser.add_argument("--datapath", action="append", help="data path(s) to load the weights by (repeatable; "
                                                             "default: auto, gdslab.policy's choice)")
    parser.add_argument("--device", default=None, help="cpu or cuda:N (default: the first GPU, else the host)")
    parser.add_argument("--cache", choices=[*CACHES, "both"], default="both", help="page cache before each run")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-baseline", action="store_true", help="skip transformers' from_pretrained")
    parser.add_argument("--threads", default="auto", help="reader threads (default: auto)")
    parser.add_argument("--io-size", default="auto", help="bytes per read, e.g. 16MiB (default: auto)")
    parser.add_argument("--json", action="store_true", help="one JSON record per run")


def run_cli(args) -> int:
    device = resolve_device(args.device)
    paths = args.datapath or ["auto"]
    threads = int(args.threads) if str(args.threads).isdigit() else args.threads
    caches = CACHES if args.cache == "both" else (args.cache,)
    runs = compare(args.checkpoint, paths, device, caches=caches, repeats=args.repeats,
                   baseline=not args.no_baseline, threads=threads, io_size=args.io_size)
    if args.json:
        for run in runs:
            print(json.dumps(run.record()))
        return 0
    for run in runs:
        print(run)
    tokens = {run.token for run in runs}
    print(f"first token: {', '.join(map(str, sorted(tokens)))}" + ("" if len(tokens) == 1 else "  (runs disagree!)"))
    return 0 if len(tokens) == 1 else 1


__all__ = ["BASELINE", "CACHES", "FirstToken", "STAGES", "build_model", "compare", "first_token",
           "from_pretrained_first_token", "medians", "prompt_ids"]
