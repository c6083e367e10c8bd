"""`gdslab env | tune | make-checkpoint | reshard | inspect | load | demo | bench | sweep | report | dist-load`."""

from __future__ import annotations

import argparse
import sys

from .errors import GdslabError


def cmd_make_checkpoint(args) -> int:
    from .checkpoint import Checkpoint
    from .synthetic import write_checkpoint

    path = write_checkpoint(args.directory, size=args.size, shards=args.shards, preset=args.preset,
                            dtype=args.dtype, seed=args.seed, overwrite=args.overwrite)
    print(Checkpoint.open(path).summary())
    return 0


def cmd_reshard(args) -> int:
    from .reshard import reshard

    done = reshard(args.source, args.destination, args.tp, dtype=args.dtype, max_file_size=args.max_file_size,
                   vocab=args.vocab, force=args.force, progress=not args.no_progress)
    print(done.summary())
    return 0


def cmd_inspect(args) -> int:
    from .checkpoint import Checkpoint
    from .reshard import is_preshard, open_set

    if is_preshard(args.path):
        print(open_set(args.path).summary())
        return 0
    ckpt = Checkpoint.open(args.path)
    print(ckpt.summary())
    if args.tensors:
        for t in ckpt.tensors:
            print(f"{t.name}\t{t.dtype_name}\t{list(t.shape)}\t{t.nbytes}\t{t.file.name}@{t.offset}")
    return 0


def cmd_env(args) -> int:
    import json

    from .probe import probe

    report = probe(args.dir)
    auto = _auto_here(report)
    if args.json:
        print(json.dumps({**report.as_dict(), **auto}, indent=2))
        return 0
    print(report.as_text())
    print("\n== Auto knobs (gdslab.policy; an explicit argument wins)")
    for state, choice in auto["auto"].items():
        print(f"{state}: {choice['chosen']}\n  " + "\n  ".join(choice["why"]))
    print("\n== Tune profile (gdslab tune)\n" + auto["tune_profile"])
    return 0


def _auto_here(report) -> dict:
    """What `auto` would choose here, cold and warm, for the host and (where there is one) the GPU; the profile."""
    from . import datapaths, tuned
    from .policy import LoadFacts, choose, local_ranks, machine_facts

    machine = machine_facts(report)
    kinds = ["cpu"] + (["cuda"] if machine.gpus else [])
    out = {}
    for kind in kinds:
        gds = kind == "cuda" and datapaths.get("gds").info("cuda").available
        for cache, resident in (("cold", 0.0), ("warm", 1.0)):
            best, source = tuned.winner(machine, kind, cache)
            pick = choose(machine, LoadFacts(kind, resident, gds, local_ranks()), profile=best, profile_source=source)
            out[f"{kind}/{cache}"] = {"chosen": pick.summary(), "why": list(pick.why.values()),
                                      "chosen_by": pick.source}
    return {"auto": out, "tune_profile": tuned.describe(machine)}


def cmd_tune(args) -> int:
    from .tune import forget, tune

    if args.forget:
        gone = forget(args.checkpoint)
        print(f"removed {gone}" if gone else "no tune profile here to remove")
        return 0
    result = tune(args.checkpoint, device=args.device, budget_s=args.budget, progress=not args.no_progress,
                  save=not args.dry_run)
    print(result.table())
    if not result.winners:
        print("nothing measured: no profile written", file=sys.stderr)
        return 1
    return 0


def cmd_load(args) -> int:
    import time

    from tqdm import tqdm

    from .cache import evict_all
    from .checkpoint import Checkpoint
    from .loader import BackgroundLoad

    from .devices import resolve_device
    from .sizes import format_size

    options = _options(args.option, many=False)
    if args.strict_gds:  # before anything starts cuFile: it reads its configuration once, when it opens
        datapath, why, options["strict"] = "gds", "strict GDS asked for: cuFile compat mode off", True
        config = _strict_cufile_json(args.cufile_dir)
        print(f"strict GDS: {config} (allow_compat_mode false; cufile.log in {config.parent}), KvikIO compat OFF",
              flush=True)
    ckpt = Checkpoint.open(args.source)
    device = resolve_device(args.device)
    if args.cold:
        evict_all(f.path for f in ckpt.files)
    chosen = {}
    if not args.strict_gds:  # the one policy (gdslab.policy) for every knob left at auto, said and why
        from . import datapaths
        from .errors import DatapathUnavailable
        from .policy import resolve

        auto = resolve(ckpt.root if ckpt.root.is_dir() else ckpt.root.parent, [f.path for f in ckpt.files], device,
                       args.datapath or "auto", args.threads, args.io_size, options)
        datapath, threads, io_size, options, chosen = auto.datapath, auto.threads, auto.io_size, auto.options, auto.details
        why = chosen.get("chosen_by", "asked for")
        info = datapaths.get(datapath).info(device)
        if not info.available:  # refused before anything starts, as the loader would
            raise DatapathUnavailable(f"{datapath} cannot run on {device}: {info.reason}")
    else:
        threads, io_size = args.threads, args.io_size
    dtypes = ", ".join(f"{k}×{v}" for k, v in sorted(ckpt.dtype_counts().items()))
    print(f"{ckpt.root}: {format_size(ckpt.nbytes)} in {len(ckpt.files)} file(s), {len(ckpt.tensors)} tensors "
          f"({dtypes}) → {device} by {datapath} ({why})", flush=True)
    if chosen:
        print("  " + chosen["why"].replace("; ", "\n  "), flush=True)
    run = BackgroundLoad(ckpt, datapath=datapath, device=device, threads=threads, io_size=io_size, **options)
    with tqdm(total=run.total, unit="B", unit_scale=True, unit_divisor=1000, desc=datapath) as bar:
        try:
            while not run.done:
                time.sleep(0.1)
                bar.update(run.log.landed_bytes - bar.n)
        except KeyboardInterrupt:
            run.stop()
            run.thread.join()
            raise
        bar.update(run.log.landed_bytes - bar.n)
    try:
        result = run.wait()
    except GdslabError as e:
        print(f"gdslab load: {e}", file=sys.stderr)
        return 1
    result.details.update(chosen)
    print(result)
    if args.record:
        import json
        from pathlib import Path

        Path(args.record).write_text(json.dumps(result.record(), indent=2, default=str) + "\n")
    return 0


def _strict_cufile_json(folder: str | None):
    """Write the strict cufile.json (the usual one, compat off) and point cuFile and KvikIO at it."""
    import os
    import tempfile

    from . import gds_evidence

    base_path = gds_evidence.default_cufile_json()
    base = gds_evidence.read_cufile_json(base_path) if base_path else None
    config = gds_evidence.write_strict_cufile_json(folder or tempfile.mkdtemp(prefix="gdslab-strict-"), base)
    os.environ.update(gds_evidence.strict_environment(config))
    return config


def _list(text: str, convert=str) -> list:
    return [convert(v.strip()) for v in text.split(",") if v.strip()]


def _value(text: str):
    """A path option's value from the command line: true/false, an integer, a size, or the text."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(low)
    except ValueError:
        pass
    from .sizes import parse_size

    try:
        return parse_size(text)
    except ValueError:
        return text.strip()


def _options(items: list[str], many: bool) -> dict:
    """`NAME=V` (or `NAME=V1,V2` when `many`) pairs into a dict of path options."""
    out = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"gdslab: --option wants NAME=VALUE, got {item!r}")
        parsed = [_value(v) for v in values.split(",") if v.strip()] if many else _value(values)
        out[name.strip()] = parsed
    return out


def cmd_sweep(args) -> int:
    from . import datapaths
    from .loader import resolve_device
    from .report import report
    from .sweep import Grid, sweep

    names = _list(args.datapaths)
    if names == ["all"]:
        names = [i.name for i in datapaths.available(resolve_device(args.device))]
    grid = Grid(datapaths=names, io_sizes=_list(args.io_sizes), threads=_list(args.threads, int),
                shards=_list(args.shards, int), caches=_list(args.caches), repeats=args.repeats, size=args.size,
                preset=args.preset, dtype=args.dtype, seed=args.seed, options=_options(args.option, many=True),
                checkpoint=args.checkpoint or "")
    result = sweep(args.out, grid, device=args.device, root=args.root, progress=not args.no_progress)
    print(f"{result.ran} measured, {result.skipped} skipped, {result.failed} failed, {result.resumed} already done "
          f"-> {result.jsonl} and {result.csv}")
    if args.report:
        print(f"report: {report(args.out).markdown}")
    return 0


def cmd_report(args) -> int:
    from .report import report

    done = report(args.results, args.out)
    print(done.text)
    print(f"wrote {done.markdown} and {len(done.figures)} figure(s)")
    return 0


def cmd_bench(args) -> int:
    from .compare import run

    if not args.compare:
        print("gdslab bench: say what to run: --compare (host-direct vs the read floor and the peers)",
              file=sys.stderr)
        return 2
    return run(args, "gdslab " + " ".join(sys.argv[1:]))


def cmd_demo(args) -> int:
    from pathlib import Path

    from .headline import compare_paths
    from .probe import probe
    from .synthetic import cached_checkpoint

    folder = Path(args.checkpoint) if args.checkpoint else cached_checkpoint(args.size, args.shards)
    print(probe(folder if folder.is_dir() else folder.parent).as_text(), end="\n\n")
    headline = compare_paths(args.out, size=args.size, device=args.device, repeats=args.repeats,
                             shards=args.shards, threads=args.threads, io_size=args.io_size,
                             checkpoint=args.checkpoint)
    print("\n" + headline.table())
    chart = Path(args.out) / "demo.png"
    headline.figure().savefig(chart, dpi=110)
    print(f"\nchart: {chart}   records: {Path(args.out) / 'sweep.csv'}")
    return 0


def cmd_dist_load(args) -> int:
    """`gdslab dist-load`: one node, one worker per device (threads); prints each run, saves records."""
    import json
    from pathlib import Path

    from .sharded import load_sharded

    if args.nodes is not None:  # many nodes: the same torchrun line runs on each of them
        from .dist import torchrun_command

        extra = [f"--cache={args.cache}", f"--threads={args.threads}", f"--io-size={args.io_size}"] + \
            ([f"--datapath={args.datapath}"] if args.datapath else []) + ([f"--json={args.json}"] if args.json else [])
        print(torchrun_command(args.checkpoint, args.nodes, args.nproc_per_node, args.rdzv_endpoint, args=extra))
        return 0
    devices = [d.strip() for d in args.devices.split(",")] if args.devices else None
    records = []
    for repeat in range(args.repeats):
        result = load_sharded(args.checkpoint, args.world, devices, args.datapath, args.threads, args.io_size,
                              strided=args.strided, vocab=args.vocab, cache=args.cache, simulate=args.simulate)
        print(result, flush=True)
        records += [{**r, "repeat": repeat, "kind": "rank"} for r in result.records()]
        records.append({**result.record(), "repeat": repeat, "kind": "run"})
        del result
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    return 0


def add_dist_load(sub) -> None:
    """`gdslab dist-load` on the CLI's subparsers."""
    from .plan import DEFAULT_STRIDED, STRIDED_MODES, VOCAB_POLICIES
    from .policy import knob_arg
    from .sharded import CACHE_CHOICES

    p = sub.add_parser("dist-load", help="sharded load: every rank's tensor-parallel slice at once, one worker "
                                         "per device (many nodes: torchrun -m gdslab.dist)")
    p.add_argument("checkpoint")
    p.add_argument("--world", type=int, default=None, help="ranks (default: one per GPU)")
    p.add_argument("--devices", default=None, help="comma list, e.g. cuda:0,cuda:1 (default: GPUs, else cpu × world)")
    p.add_argument("--simulate", action="store_true",
                   help="more ranks than GPUs: run them on the CPU (recorded as simulated) instead of refusing")
    p.add_argument("--datapath", default="auto", help="default: auto (gdslab.policy, from the machine and the cache)")
    p.add_argument("--threads", type=knob_arg, default="auto", help="reader threads per rank (default: auto)")
    p.add_argument("--io-size", default="auto")
    p.add_argument("--strided", default=DEFAULT_STRIDED, choices=STRIDED_MODES)
    p.add_argument("--vocab", default="split", choices=VOCAB_POLICIES)
    p.add_argument("--cache", default="as-is", choices=CACHE_CHOICES)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", default=None, help="write every rank and run record here")
    p.add_argument("--nodes", type=int, default=None,
                   help="print the torchrun line to run on each of this many nodes (and load nothing here)")
    p.add_argument("--nproc-per-node", type=int, default=8, help="with --nodes: ranks per node (default 8)")
    p.add_argument("--rdzv-endpoint", default="$HEAD_NODE:29500",
                   help="with --nodes: HOST:PORT of the rendezvous every node reaches (default $HEAD_NODE:29500)")
    p.set_defaults(func=cmd_dist_load)


def build_parser() -> argparse.ArgumentParser:
    from .policy import knob_arg
    from .synthetic import DTYPES, PRESETS

    parser = argparse.ArgumentParser(prog="gdslab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-checkpoint", help="write a synthetic Llama-shaped checkpoint")
    p.add_argument("directory")
    p.add_argument("--size", default="2GiB")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--preset", default="llama-3.1-8b", choices=sorted(PRESETS))
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_make_checkpoint)

    p = sub.add_parser("reshard", help="split a checkpoint into one set of files per tensor-parallel rank "
                                       "(and quantize its MLP weights to FP8), with a manifest")
    p.add_argument("source")
    p.add_argument("destination", help="an empty or absent folder (or --force to replace a set there)")
    p.add_argument("--tp", type=int, required=True, help="the tensor-parallel degree (ranks)")
    p.add_argument("--dtype", default="source", choices=("source", "fp8_e4m3"),
                   help="fp8_e4m3: as Meta's FP8 release (MLP weights, per-channel scales); default: keep")
    p.add_argument("--max-file-size", default="5GiB", help="largest file of a rank (vLLM's default: 5GiB)")
    p.add_argument("--vocab", default="split", choices=("split", "replicate"))
    p.add_argument("--force", action="store_true", help="replace a pre-sharded set in the destination")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_reshard)

    p = sub.add_parser("inspect", help="tensors, bytes, shards and dtypes of a checkpoint (or a pre-sharded set)")
    p.add_argument("path")
    p.add_argument("--tensors", action="store_true", help="list every tensor")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("env", help="what this machine can do: GPUs, driver, KvikIO/cuFile, nvidia-fs, file system; the GDS verdict")
    p.add_argument("--dir", default=None, help="the directory whose file system to judge (default: where checkpoints go)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_env)

    p = sub.add_parser("tune", help="a short sweep around the auto knobs (cold and warm); the winners are kept in a "
                                    "profile that later auto loads on this machine and file system use")
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="the checkpoint to measure (default: a synthetic 512 MiB one where checkpoints go)")
    p.add_argument("--budget", type=float, default=60.0, help="seconds to spend (default 60)")
    p.add_argument("--device", default=None, help="cuda:N or cpu (default: cuda:0 when a GPU is here)")
    p.add_argument("--forget", action="store_true", help="remove this machine's profile for that file system")
    p.add_argument("--dry-run", action="store_true", help="measure and print, but keep no profile")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("load", help="one load with a progress bar in GB/s")
    p.add_argument("source")
    p.add_argument("--datapath", default="auto",
                   help="default: auto, the policy's (gdslab.policy: from the machine, the device and how much of "
                        "the checkpoint is in the page cache), said and why")
    p.add_argument("--device", default=None, help="cuda:N or cpu (default: cuda:0 when a GPU is here)")
    p.add_argument("--threads", type=knob_arg, default="auto", help="reader threads (default: auto)")
    p.add_argument("--io-size", default="auto", help="bytes per read, e.g. 16MiB (default: auto)")
    p.add_argument("--cold", action="store_true", help="evict the checkpoint's pages first")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="a data path's own knob, e.g. buffers_per_thread=4 or gds_threshold=1MiB (repeatable)")
    p.add_argument("--strict-gds", action="store_true",
                   help="gds with cuFile's compatibility mode off (a temporary cufile.json through "
                        "CUFILE_ENV_PATH_JSON) and KvikIO compat OFF: every read is DMA or the load fails, saying why")
    p.add_argument("--cufile-dir", default=None, help="with --strict-gds: where its cufile.json and cufile.log go")
    p.add_argument("--record", default=None, metavar="FILE", help="write the load's record there as JSON")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("demo", help="the headline: every data path, cold and warm, a table and a chart")
    p.add_argument("--size", default="2GiB")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=knob_arg, default="auto",
                   help="reader threads for every path (default: auto, the policy's for each cache state)")
    p.add_argument("--io-size", default="auto")
    p.add_argument("--device", default=None, help="cuda:N or cpu (default: cuda:0 when a GPU is here)")
    p.add_argument("--out", default="results/demo")
    p.add_argument("--checkpoint", default=None, help="a real checkpoint (file or HF folder) instead of a synthetic one")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sweep", help="a grid of loads (path × io size × threads × shards × cold/warm), resumable")
    p.add_argument("out", nargs="?", default="results/sweep", help="results folder (sweep.jsonl, sweep.csv)")
    p.add_argument("--datapaths", default="host-direct", help="comma-separated, or 'all'")
    p.add_argument("--io-sizes", default="4MiB,16MiB")
    p.add_argument("--threads", default="1,4,8")
    p.add_argument("--shards", default="1,4")
    p.add_argument("--caches", default="cold,warm")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--size", default="256MiB", help="checkpoint size (the same tensors for every shard count)")
    p.add_argument("--preset", default="llama-3.1-8b", choices=sorted(PRESETS))
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cuda:N or cpu (default: cuda:0 when a GPU is here)")
    p.add_argument("--root", default=None, help="where checkpoints are cached (default $GDSLAB_CHECKPOINTS)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=V1,V2",
                   help="a path option to sweep, e.g. buffers_per_thread=1,2,4 (repeatable; only paths with it)")
    p.add_argument("--checkpoint", default=None,
                   help="sweep a real checkpoint (file or HF folder) instead of synthetic ones (its own shards)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--report", action="store_true", help="write the report when done")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="figures (PNG) and markdown tables from sweep results")
    p.add_argument("results", help="a sweep's results folder, .jsonl or .csv")
    p.add_argument("--out", default=None, help="where to write report.md and the PNGs (default: beside the results)")
    p.set_defaults(func=cmd_report)

    from .compare import add_arguments as compare_arguments

    p = sub.add_parser("bench", help="--compare: host-direct vs the read floor, Run:ai, fastsafetensors, safetensors")
    p.add_argument("--compare", action="store_true", help="run the comparison benchmark (benchmarks/compare.py)")
    compare_arguments(p)
    p.set_defaults(func=cmd_bench)

    add_dist_load(sub)

    from .ttft import add_arguments as ttft_arguments, run_cli as ttft_run

    p = sub.add_parser("ttft", help="time to first token: construct on meta, weights by a data path, first forward, "
                                    "first token; cold and warm; transformers' from_pretrained beside")
    ttft_arguments(p)
    p.set_defaults(func=ttft_run)

    # Further subcommands register here (env, load, demo, bench, sweep, report).
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GdslabError as e:
        print(f"gdslab: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gdslab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
