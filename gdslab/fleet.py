"""A fleet's cold start: N nodes loading at once from one FSx for Lustre file system (a projection).

Built on `gdslab.coldstart`'s inputs and ceilings. Each node reads its own bytes (the
model's, or its share when one replica spans several nodes, pre-sharded) through its own
client ceiling (FSx's per-client figure for its path, within the node's network) and its
GPUs' links; the file system's ceilings are shared by every node reading at that moment.
All nodes start together and are alike, so each node's time to ready is the job's.

Two readings of "shared", both shown, neither published for many clients:
- ``server_cache=False``: every node's bytes come off the servers' disks; the disk rate is
  split among the nodes (fair shares, assumed).
- ``server_cache=True``: the nodes read the same files at about the same time, so the disks
  deliver each byte once and the servers' in-memory cache serves the rest at the file
  system's network rate (FSx's documented network throughput per TiB); only where the model
  fits in that cache (assumed: concurrent readers of one byte cost one disk read).

Where adding nodes stops helping: `knee()` is the largest node count whose per-node time
equals one node's alone; beyond it the file system binds and each node waits longer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .coldstart import (FSX_CACHE_GIB_PER_TIB, FSX_NETWORK_MBPS_PER_TIB, FSX_SSD_DOCS, GB, GIB, LABEL, Inputs,
                        Limit, Storage, client_limit, format_seconds, input_status, model_bytes, storage_limit)

NODE_COUNTS = (1, 2, 4, 8, 16)
LARGER_TIB = 480.0  # a what-if beside the published 96 TiB: five times its size, same tier

ASSUMPTIONS = {
    "fair_share": "FSx divides a ceiling it cannot exceed evenly among the clients reading at once (assumed: "
                  "no published multi-client figure)",
    "server_cache": "nodes reading the same files at once cost one disk read per byte; the servers' cache "
                    "(FSx per-TiB RAM, " + FSX_SSD_DOCS + ") serves the others at the network rate (assumed)",
    "symmetric": "every node is alike and starts at the same moment, so each node's time is the job's (assumed)",
}


@dataclass(frozen=True)
class FleetPoint:
    """N nodes at once: each node's rate and time to ready, what binds it, and what that rests on."""

    nodes: int
    node_bytes: float  # bytes each node reads
    gbps: float  # each node's read rate
    binding: Limit
    limits: tuple[Limit, ...] = field(repr=False)
    kind: str  # "predicted" or "assumed" (nothing here has a published figure of its own)
    basis: str
    label: str = LABEL

    @property
    def seconds(self) -> float:
        """Each node's (and the job's) time to ready, weights only."""
        return self.node_bytes / (self.gbps * GB)

    @property
    def aggregate_gbps(self) -> float:
        return self.nodes * self.gbps

    def record(self) -> dict:
        return {"label": self.label, "nodes": self.nodes, "node_bytes": self.node_bytes, "node_gbps": self.gbps,
                "aggregate_gbps": self.aggregate_gbps, "seconds": self.seconds, "binding": self.binding.name,
                "kind": self.kind, "basis": self.basis}


def fsx(capacity_tib: float = 96.0, tier: int = 1000, client: str = "efa+gds") -> Storage:
    """An FSx for Lustre Persistent-2 file system; the published 96 TiB one carries its measured rate."""
    if tier not in FSX_NETWORK_MBPS_PER_TIB:
        raise ValueError(f"tier must be one of {sorted(FSX_NETWORK_MBPS_PER_TIB)} MB/s/TiB, got {tier!r}")
    return Storage("fsx-lustre", client, float(capacity_tib), float(tier), measured=capacity_tib == 96.0 and tier == 1000)


def _kind(limit: Limit, inputs: Inputs, fleet_assumption: str = "") -> tuple[str, str]:
    assumed = [n for n in limit.inputs if input_status(inputs, n) == "assumed"]
    if fleet_assumption:
        return "assumed", f"{limit.name}: {ASSUMPTIONS[fleet_assumption]}"
    if assumed:
        return "assumed", f"{limit.name}: assumed input(s) {', '.join(assumed)}"
    statuses = ", ".join(f"{n} {input_status(inputs, n)}" for n in limit.inputs) or "the file system's size and tier"
    return "predicted", f"{limit.name}: from {statuses}"


def point(nodes: int, storage: Storage | None = None, *, model: str = "llama-3.1-405b", dtype: str = "fp8_e4m3",
          nodes_per_replica: int = 1, server_cache: bool = False, inputs: Inputs = Inputs()) -> FleetPoint:
    """`nodes` nodes starting at once from `storage`; each reads 1/`nodes_per_replica` of the model."""
    if not isinstance(nodes, int) or nodes < 1:
        raise ValueError(f"nodes must be a positive integer, got {nodes!r}")
    if not isinstance(nodes_per_replica, int) or nodes_per_replica < 1 or nodes % nodes_per_replica:
        raise ValueError(f"nodes ({nodes}) must be a multiple of nodes_per_replica ({nodes_per_replica!r})")
    storage = storage or fsx()
    if storage.kind != "fsx-lustre":
        raise ValueError(f"a fleet reads from one FSx for Lustre file system, not {storage.kind!r}")
    total = model_bytes(model, dtype)
    node_bytes = total / nodes_per_replica
    own = [client_limit(storage, inputs),
           Limit(f"{inputs.gpus_per_node} PCIe links × {inputs.pcie_gbps:g} GB/s",
                 inputs.gpus_per_node * inputs.pcie_gbps, ("pcie_gbps",))]
    disk = storage_limit(storage, inputs)
    network_gbps = storage.capacity_tib * FSX_NETWORK_MBPS_PER_TIB[int(storage.tier_mbps_per_tib)] / 1000
    cache_bytes = storage.capacity_tib * FSX_CACHE_GIB_PER_TIB[int(storage.tier_mbps_per_tib)] * GIB
    shared: list[tuple[Limit, str]] = []
    if server_cache and total <= cache_bytes:
        # the disks deliver the model once, in the time every node takes: as a rate per node
        window = total / (disk.gbps * GB)
        shared.append((Limit(f"disks read the model once: {disk.name}", node_bytes / window / GB, disk.inputs),
                       "server_cache" if nodes > 1 else ""))
        shared.append((Limit(f"FSx network {network_gbps:g} GB/s shared by {nodes} node(s)", network_gbps / nodes),
                       "server_cache" if nodes > 1 else ""))
    else:
        shared.append((Limit(f"{disk.name} shared by {nodes} node(s)", disk.gbps / nodes, disk.inputs),
                       "fair_share" if nodes > 1 else ""))
    limits = [(limit, "") for limit in own] + shared
    binding, why = min(limits, key=lambda pair: pair[0].gbps)
    kind, basis = _kind(binding, inputs, why)
    return FleetPoint(nodes, node_bytes, binding.gbps, binding, tuple(limit for limit, _ in limits), kind, basis)


def curve(storage: Storage | None = None, node_counts=NODE_COUNTS, **options) -> list[FleetPoint]:
    """`point` for each node count."""
    return [point(n, storage, **options) for n in node_counts]


def knee(storage: Storage | None = None, *, up_to: int = 1024, **options) -> int:
    """The largest node count (stepping by a replica) whose per-node time is still one replica's alone.

    1 means the file system binds from the first node: adding nodes never shortens anyone's
    wait, it only adds nodes to share the same ceiling.
    """
    step = options.get("nodes_per_replica", 1)
    alone = point(step, storage, **options).seconds
    best = step
    for n in range(step, up_to + 1, step):
        if point(n, storage, **options).seconds > alone * (1 + 1e-9):
            break
        best = n
    return best


def table(points: list[FleetPoint]) -> str:
    """Markdown: nodes, per-node time to ready, per-node and aggregate GB/s, what binds, kind."""
    lines = ["| nodes | time to ready (each node) | GB/s per node | GB/s all nodes | binding | kind |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {p.nodes} | {format_seconds(p.seconds)} ({p.label}) | {p.gbps:.1f} | {p.aggregate_gbps:.1f} | "
              f"{p.binding.name} | {p.kind} |" for p in points]
    return "\n".join(lines)


def scenarios(inputs: Inputs = Inputs()) -> dict[str, list[FleetPoint]]:
    """The published 96 TiB FSx and one five times larger, with and without the servers' cache: 1–16 P5en."""
    out = {}
    for tib in (96.0, LARGER_TIB):
        for cache in (False, True):
            name = f"{tib:g} TiB FSx, " + ("servers' cache shared" if cache else "every byte from disk")
            out[name] = curve(fsx(tib), server_cache=cache, inputs=inputs)
    return out


__all__ = ["NODE_COUNTS", "LARGER_TIB", "ASSUMPTIONS", "FleetPoint", "fsx", "point", "curve", "knee", "table",
           "scenarios"]
