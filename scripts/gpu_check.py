"""On a GPU machine: the update throughput of PPO and SAC on ``cuda:0`` against this machine's CPU, and a short
training of each through launch.py with ``machine.devices=[0]`` (``scripts/gpu_check.sh`` sets it up).

Prints one line per figure and a JSON line at the end:
``{"ppo_update_ms": {"cpu", "cuda"}, "sac_gradient_step_ms": {...}, "runs": {name: {"ok", "wall_s", "steps_per_s"}}}``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench  # noqa: E402 - scripts/bench.py: update_ms
import offpolicy  # noqa: E402 - scripts/offpolicy.py: gradient_step_ms

RUNS = {  # name -> overrides: a few thousand steps each, on the GPU
    "ppo (Pendulum)": ["env=pendulum", "experiment=smoke"],   # Pendulum: no box2d to build there
    "sac (Pendulum)": ["env=pendulum", "experiment=pendulum_sac", "algo.learning_starts=500",
                       "pipeline.stages.0.max_stage_steps=3000", "pipeline.save_interval=1500"],
}


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: torch sees no CUDA device")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}", flush=True)
    out = {"ppo_update_ms": {}, "sac_gradient_step_ms": {}, "runs": {}}
    for device in ("cpu", "cuda"):
        out["ppo_update_ms"][device] = round(bench.update_ms(16000, 1, repeats=10, device=device)[0], 2)
        out["sac_gradient_step_ms"][device] = round(offpolicy.gradient_step_ms(device, steps=500), 2)
        print(f"{device}: PPO gradient step (16,000 samples) {out['ppo_update_ms'][device]} ms, "
              f"SAC gradient step (batch 256) {out['sac_gradient_step_ms'][device]} ms", flush=True)
    for name, overrides in RUNS.items():
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), f"run_dir={d}/run", "machine.devices=[0]",
                                   *overrides], cwd=ROOT, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            rates = [float(line.split(" steps/s")[0].rsplit(" ", 1)[-1]) for line in proc.stderr.splitlines()
                     if " steps/s" in line]
        out["runs"][name] = {"ok": proc.returncode == 0, "wall_s": round(wall, 1),
                             "steps_per_s": round(rates[-1]) if rates else None}
        print(f"{name} on cuda:0: {out['runs'][name]}" + ("" if proc.returncode == 0 else "\n" + proc.stderr[-2000:]),
              flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
