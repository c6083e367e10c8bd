"""What `verify=True` costs: per data path, the load, the verification and both walls (docs/results/verify.md).

    .venv/bin/python benchmarks/verify_cost.py CHECKPOINT host-direct pinned-bounce --device cpu --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

from gdslab.checkpoint import Checkpoint
from gdslab.datapaths.base import TensorRead
from gdslab.loader import load
from gdslab.sizes import format_size
from gdslab.verify import verify_tensors


def measure_cost(source, datapaths: list[str], device=None, repeats: int = 3, **knobs) -> list[dict]:
    """Per data path, medians over `repeats` warm runs: the load, the verification, and both walls.

    `load_s` is the load's own clock; `verify_s` times `verify_tensors` on the loaded tensors
    (the call `load(..., verify=True)` makes); the walls time whole `load()` calls without
    and with `verify=True`, setup (open, probe, residency) included.
    """
    plan = Checkpoint.open(source)
    reads = [TensorRead.whole(entry) for entry in plan.tensors]
    rows = []
    for datapath in datapaths:
        load(plan, datapath, device, **knobs)  # warm the page cache and the path
        samples: dict[str, list[float]] = {"load_s": [], "verify_s": [], "wall_s": [], "wall_verify_s": []}
        for _ in range(repeats):
            started = time.perf_counter()
            result = load(plan, datapath, device, **knobs)
            samples["wall_s"].append(time.perf_counter() - started)
            samples["load_s"].append(result.seconds)
            samples["verify_s"].append(verify_tensors(result.tensors, reads).seconds)
            nbytes, where = result.nbytes, result.device
            del result
            started = time.perf_counter()
            load(plan, datapath, device, verify=True, **knobs)
            samples["wall_verify_s"].append(time.perf_counter() - started)
        row = {"datapath": datapath, "device": where, "nbytes": nbytes}
        row.update({key: statistics.median(values) for key, values in samples.items()})
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    """`benchmarks/verify_cost.py CHECKPOINT [DATAPATH ...]`: the cost of verify=True, as a markdown table."""
    parser = argparse.ArgumentParser(prog="benchmarks/verify_cost.py", description=main.__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("datapaths", nargs="*", default=["host-direct", "pinned-bounce"])
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows = measure_cost(args.checkpoint, args.datapaths, args.device, args.repeats)
    print("| datapath | device | bytes | load s | verify s | verify GB/s | load() wall s | load(verify=True) wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['datapath']} | {r['device']} | {format_size(r['nbytes'])} | {r['load_s']:.3f} | "
              f"{r['verify_s']:.3f} | {r['nbytes'] / r['verify_s'] / 1e9:.2f} | {r['wall_s']:.3f} | "
              f"{r['wall_verify_s']:.3f} |")


if __name__ == "__main__":
    main()
