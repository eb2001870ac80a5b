"""On paper: env steps/s of one DD-PPO experiment on 1–64 ranks, fed with the costs the bench's
``distributed`` section measures on this machine, with and without the straggler cut-off.

One synchronous rollout of every rank takes

    collection (the slowest rank's, or the cut's) + update compute + G × all_reduce(N)

and yields the env steps every rank collected. Per rank and rollout the collection time is
``c × X`` with ``X`` log-normal of mean 1 and the measured coefficient of variation; in the "stragglers"
scenario each rank is in addition, with probability ``p`` per rollout, ``s`` times slower (a busy node, a
slow GPU, long episodes). The cut-off (``machine.sync_frac = q``, ``min_rollout_frac = m``) ends the
rollout when ``ceil(q·N)`` ranks have finished; a slower rank has then collected ``t*/τ_i`` of its steps,
but at least ``m`` (it runs until ``m·τ_i``). All-reduce: a ring of ``2(N−1)`` latency steps (gloo's
chunked ring; halving-doubling would take ``2·log2 N``), each ``α`` within a node and ``α + hop_s`` once the
ring spans nodes, plus ``2(N−1)/N`` of the gradient bytes at the link's bandwidth. Monte Carlo over
rollouts; prints a markdown table.

    python scripts/scaling_model.py --bench bench_results/results.json     # the bench's measured figures
    python scripts/scaling_model.py --collect-s 0.21 --update-s 0.02 --allreduce-ms 1.46
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

RANKS = (1, 2, 4, 8, 16, 32, 64)


def allreduce_s(n: int, alpha_s: float, ranks_per_node: int, hop_s: float, grad_bytes: float,
                link_bytes_per_s: float) -> float:
    """Seconds per ring all_reduce of ``grad_bytes`` over ``n`` ranks."""
    if n == 1:
        return 0.0
    latency = alpha_s + (hop_s if n > ranks_per_node else 0.0)
    return 2 * (n - 1) * latency + 2 * (n - 1) / n * grad_bytes / link_bytes_per_s


def rollout_end(tau: np.ndarray, sync_frac: float | None, min_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """(when each rollout's collection ends, the fraction of its steps collected) for ranks whose whole
    rollouts would take ``tau`` ``[rollouts, N]`` seconds."""
    if sync_frac is None:
        return tau.max(1), np.ones(len(tau))
    k = math.ceil(sync_frac * tau.shape[1] - 1e-9)
    cut = np.sort(tau, 1)[:, k - 1:k]  # when the k-th rank finishes
    ends = np.maximum(np.minimum(tau, cut), min_frac * tau)
    return ends.max(1), (ends / tau).mean(1)


def throughput(n: int, steps_per_rank: int, collect_s: float, cv: float, update_s: float, sync_s: float,
               sync_frac: float | None, min_frac: float, straggler_p: float, straggler_x: float,
               rollouts: int = 4000, seed: int = 0) -> tuple[float, float]:
    """(env steps/s, mean rollout fill) over ``rollouts`` simulated rollouts of ``n`` ranks."""
    rng = np.random.default_rng(seed)
    sigma = math.sqrt(math.log(1 + cv * cv))
    tau = collect_s * rng.lognormal(-sigma * sigma / 2, sigma, size=(rollouts, n))
    tau *= np.where(rng.random((rollouts, n)) < straggler_p, straggler_x, 1.0)
    end, fill = rollout_end(tau, None if n == 1 else sync_frac, min_frac)
    steps = n * steps_per_rank * fill
    return float(steps.sum() / (end + update_s + sync_s).sum()), float(fill.mean())


def table(collect_s: float, cv: float, update_s: float, allreduce_ms: float, grad_steps: int, steps_per_rank: int,
          grad_bytes: float, ranks_per_node: int = 16, hop_s: float = 50e-6, link_gbit: float = 25.0,
          straggler_p: float = 0.05, straggler_x: float = 2.5, sync_frac: float = 0.6, min_frac: float = 0.25) -> str:
    """The markdown table of env steps/s against ranks, four scenarios."""
    alpha = allreduce_ms / 1e3 / 2  # the measured 2-rank ring is 2 latency steps
    rows = []
    for n in RANKS:
        sync = grad_steps * allreduce_s(n, alpha, ranks_per_node, hop_s, grad_bytes, link_gbit * 1e9 / 8)
        cells = []
        for p in (0.0, straggler_p):
            for q in (None, sync_frac):
                rate, fill = throughput(n, steps_per_rank, collect_s, cv, update_s, sync, q, min_frac, p, straggler_x)
                cells.append(f"{rate:,.0f}" + (f" ({fill:.2f})" if q is not None else ""))
        rows.append(f"| {n} | {sync * 1e3:.1f} | " + " | ".join(cells) + " |")
    head = (f"| ranks | all_reduce ms per rollout | steps/s | with cut-off q={sync_frac} (fill) | stragglers "
            f"(p={straggler_p}, ×{straggler_x}) | stragglers, with cut-off (fill) |\n|---|---|---|---|---|---|\n")
    return head + "\n".join(rows) + "\n"


def from_bench(results: dict) -> dict:
    """The model's inputs from the bench's ``distributed`` results (fast preset: 8 samplers × 256 steps a rank,
    40 gradient steps a rollout)."""
    d = results["distributed"]
    global_rate = d["train_steps_per_s"]["2 ranks x 8 samplers, 1 thread each"]
    collect = d["rollout_collect_s"]["mean"]
    grad_steps, ms = 40, d["all_reduce"]["ms_per_all_reduce"]
    wall = 2 * 8 * 256 / global_rate  # one rollout of both ranks
    return {"collect_s": collect, "cv": d["rollout_collect_s"]["cv"], "allreduce_ms": ms, "grad_steps": grad_steps,
            "update_s": max(wall - collect - grad_steps * ms / 1e3, 0.0), "steps_per_rank": 8 * 256,
            "grad_bytes": 4 * d["all_reduce"]["parameters"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", help="the bench's results JSON (its distributed section gives every figure)")
    p.add_argument("--collect-s", type=float, default=0.21, help="one rank's rollout collection, seconds")
    p.add_argument("--cv", type=float, default=0.05, help="its coefficient of variation over rollouts")
    p.add_argument("--update-s", type=float, default=0.02, help="update compute per rollout, seconds")
    p.add_argument("--allreduce-ms", type=float, default=1.46, help="one 2-rank all_reduce, ms")
    p.add_argument("--grad-steps", type=int, default=40, help="optimizer steps (all_reduces) per rollout")
    p.add_argument("--steps-per-rank", type=int, default=8 * 256, help="env steps of one rank's rollout")
    p.add_argument("--ranks-per-node", type=int, default=16)
    p.add_argument("--hop-us", type=float, default=50.0, help="extra latency per ring step across nodes, µs")
    args = p.parse_args()
    if args.bench:
        with open(args.bench) as f:
            inputs = from_bench(json.load(f))
    else:
        inputs = {"collect_s": args.collect_s, "cv": args.cv, "update_s": args.update_s,
                  "allreduce_ms": args.allreduce_ms, "grad_steps": args.grad_steps,
                  "steps_per_rank": args.steps_per_rank, "grad_bytes": 4 * 5411}
    print("inputs:", {k: round(v, 4) for k, v in inputs.items()})
    print(table(**inputs, ranks_per_node=args.ranks_per_node, hop_s=args.hop_us * 1e-6))


if __name__ == "__main__":
    main()
