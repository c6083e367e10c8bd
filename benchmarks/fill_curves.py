"""Fill curves of every available data path, the event curve beside the device's own count.

    .venv/bin/python benchmarks/fill_curves.py --size 2GiB --cache cold --out docs/results/fill-curves

For each path available on the device it loads a synthetic checkpoint once with a
`DeviceMemorySampler` running at 100 Hz, saves `fill-<path>.png` (events solid, sampled
memory dashed) and prints how far the two curves stray apart, as a fraction of the bytes.
On a machine without a GPU the host paths run and the sampler says why it sampled nothing.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import torch

from gdslab import datapaths
from gdslab.cache import evict_all, warm
from gdslab.checkpoint import Checkpoint
from gdslab.loader import load, resolve_device
from gdslab.plots import plot_fill_curves
from gdslab.profile import DeviceMemorySampler, EventLog, curve_gap, fill_curve
from gdslab.synthetic import cached_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="2GiB")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--device", default=None, help="default: cuda:0 if present, else cpu")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--io-size", default="16MiB")
    parser.add_argument("--hz", type=float, default=100.0)
    parser.add_argument("--cache", choices=("cold", "warm"), default="cold",
                        help="evict the files from the page cache before each load (cold) or read them first (warm)")
    parser.add_argument("--out", default="docs/results/fill-curves")
    args = parser.parse_args(argv)

    device = str(resolve_device(args.device))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = cached_checkpoint(args.size, args.shards, "llama-3.1-8b", "bf16", 0)
    print(f"checkpoint {path}, device {device}, {torch.cuda.get_device_name(device) if 'cuda' in device else 'host'}")
    print(f"{'path':<16} {'GB/s':>6} {'cache':>7} {'samples':>7} {'max gap':>8} {'mean gap':>8}  effective")
    for info in datapaths.available(device):
        if not info.available:
            print(f"{info.name:<16} unavailable: {info.reason}")
            continue
        files = [f.path for f in Checkpoint.open(path).files]
        evict_all(files) if args.cache == "cold" else warm(files)
        log = EventLog()
        with DeviceMemorySampler(device, hz=args.hz, log=log) as sampler:
            result = load(path, datapath=info.name, device=device, threads=args.threads, io_size=args.io_size, log=log)
        sampled = [sampler.curve()] if sampler.available else []
        fig = plot_fill_curves(result, sampled=sampled)
        fig.savefig(out / f"fill-{info.name}.png", dpi=110)
        if sampled:
            largest, mean = curve_gap(fill_curve(result.events, device), sampled[0])
            gaps = f"{len(sampler.times):>7} {largest:>8.1%} {mean:>8.1%}"
        else:
            gaps = f"{'-':>7} {'-':>8} {'-':>8}"
        print(f"{info.name:<16} {result.gbps:>6.2f} {result.cache:>7} {gaps}  {result.effective}")
        if not sampler.available:
            print(f"{'':<16} (no sampled curve: {sampler.reason})")
        del result
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
