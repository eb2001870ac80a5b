"""The bench's ``packing`` section: a 16-job seed sweep of the smoke experiment on the local two-node SLURM
cluster (``scripts/slurm_local.sh start --nodes 2``), as 16 single jobs against 2 allocations of 8 packed jobs
(``hydra.launcher.jobs_per_task=8``).

Both ask for whole nodes (``cpus_per_task=2``, each node's CPUs), as clusters that allocate by the node do.
Figures: queue-to-report wall time (the launcher command, from submission to the written report); core
utilisation (this machine's busy share of its cores over that time, from /proc/stat: the two nodes share this
machine's cores, so this is what the sweep made of them); and the share of the CPU time SLURM allocated
(each job's CPUs × its run time, from squeue) that was used (this machine's busy CPU time over the sweep).
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOBS = 16
PACK = 8
SMOKE = ["experiment=smoke", "logger=tensorboard"]


def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _allocated_cpu_s(sweep: Path) -> float:
    """CPU-seconds SLURM allocated to the sweep's jobs: CPUs × (end − start) for each."""
    ids = sorted({d.name.split("_")[0] for d in (sweep / ".submitit").iterdir() if d.name[0].isdigit()})
    for _ in range(120):  # a running job's end is its time limit: wait until SLURM has ended them all
        states = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(ids), "-o", "%T"],
                                capture_output=True, text=True).stdout.split()
        if not {"PENDING", "RUNNING", "COMPLETING"} & set(states):
            break
        time.sleep(0.5)
    lines = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(ids), "-o", "%S %e %C"],
                           capture_output=True, text=True).stdout.split("\n")
    total = 0.0
    for line in filter(None, lines):
        start, end, cpus = line.split()
        span = datetime.datetime.fromisoformat(end) - datetime.datetime.fromisoformat(start)
        total += int(cpus) * span.total_seconds()
    return total


def _sweep(out: Path, name: str, extra: list[str]) -> dict:
    sweep = out / "packing" / name
    subprocess.run(["rm", "-rf", str(sweep)], check=True)
    env = {**os.environ, "PATH": f"{ROOT / 'scripts' / 'slurm'}:{os.environ['PATH']}", "WANDB_MODE": "disabled"}
    b0, t0_j = _busy_jiffies()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--multirun", "hydra/launcher=submitit_slurm",
                           "hydra.launcher.cpus_per_task=2", *extra, *SMOKE, f"seed=range(1,{JOBS + 1})",
                           f"hydra.sweep.dir={sweep}"], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    b1, t1_j = _busy_jiffies()
    if proc.returncode != 0:
        raise SystemExit(f"packing bench: the {name} sweep failed:\n{proc.stderr[-3000:]}")
    done = sum((sweep / str(j) / "DONE").is_file() for j in range(JOBS))
    used_cpu_s = (b1 - b0) / os.sysconf("SC_CLK_TCK")
    allocated = _allocated_cpu_s(sweep)
    return {"queue_to_report_s": round(wall, 1), "core_utilisation": round((b1 - b0) / max(1, t1_j - t0_j), 3),
            "allocated_cpu_s": round(allocated, 1), "used_share_of_allocation": round(used_cpu_s / max(allocated, 1e-9), 3),
            "jobs_done": done, "slurm_jobs": JOBS if name == "single" else -(-JOBS // PACK)}


def measure(out: Path) -> dict:
    """Both sweeps, one after the other, on a two-node cluster started here (and left running)."""
    started = subprocess.run(["bash", str(ROOT / "scripts" / "slurm_local.sh"), "start", "--nodes", "2"],
                             capture_output=True, text=True)
    if started.returncode != 0:
        return {"skipped": f"no local SLURM cluster: {started.stderr.strip()[-300:]}"}
    return {"single": _sweep(out, "single", []),
            "packed": _sweep(out, "packed", [f"hydra.launcher.jobs_per_task={PACK}"])}


def markdown(r: dict) -> str:
    if "skipped" in r:
        return f"\nPacking: skipped ({r['skipped']})\n"
    rows = "".join(f"| {name} | {v['slurm_jobs']} | {v['jobs_done']}/{JOBS} | {v['queue_to_report_s']} | "
                   f"{v['core_utilisation']:.0%} | {v['allocated_cpu_s']:.0f} | {v['used_share_of_allocation']:.0%} |\n" for name, v in (("16 single jobs", r["single"]),
                                                                        (f"packed, {PACK} a job", r["packed"])))
    return ("\nA 16-seed smoke sweep on the local two-node SLURM cluster, whole nodes (2 CPUs) per SLURM job:\n\n"
            "| layout | SLURM jobs | done | queue to report (s) | core utilisation | allocated CPU·s | used of allocated |\n"
            "|---|---|---|---|---|---|---|\n" + rows)
