#!/usr/bin/env bash
# The GPU check (issue 27, item 6): on a bare GPU machine with Python 3.12 and a CUDA torch installed, set up a
# venv that sees that torch, install our other dependencies from wheels carried in, and print PPO's and SAC's
# update throughput on cuda:0 against the CPU, with a short training of each (scripts/gpu_check.py). < 5 min.
#
#   here, once:   bash scripts/gpu_check.sh --fetch      # cp312 wheels into .gpu_wheels/ (ignored by git)
#   there:        bash scripts/gpu_check.sh              # (the device tool: carry .gpu_wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu_wheels
# what a PPO or a Pendulum SAC training imports (no box2d: it compiles from source; no MuJoCo, W&B, videos or
# sweepers): 30 MB of wheels, under the device tool's 64 MiB carry
DEPS=(hydra-core omegaconf gymnasium numpy tensorboard rich imageio)

if [[ "${1:-}" == "--fetch" ]]; then
  python3 -m pip download -q -d "$WHEELS" --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --platform any "${DEPS[@]}" 2>&1 | grep -v "^WARNING" || true
  du -sh "$WHEELS"
  exit 0
fi

PY=python3.12; command -v $PY >/dev/null || PY=python3
$PY -c "import torch, sys; assert torch.cuda.is_available(), 'no CUDA'; print('torch', torch.__version__, sys.version.split()[0])"
$PY -m venv --system-site-packages .venv-gpu       # the machine's CUDA torch, as it is
.venv-gpu/bin/python -m pip install -q --no-index --find-links "$WHEELS" "${DEPS[@]}"
.venv-gpu/bin/python -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>/dev/null \
  || echo "(the project is not installed as a package: running from the checkout)"
PYTHONPATH=. timeout 280 .venv-gpu/bin/python scripts/gpu_check.py
