"""Job markers: small JSON files in a run's folder that say how it ended, read by resume and the sweep report.

``DONE``: the run finished (its final validation). ``FAILED``: a sweep job raised (the error's first line and
the traceback). ``PREEMPTED``: a sweep job saved on a signal and waits to be requeued (steps and signal). ``PRUNE``: a tuning
study asks the run to stop at its next checkpoint; ``PRUNED``: the study pruned the run (trial, steps).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DONE, FAILED, PREEMPTED, PRUNE, PRUNED = "DONE", "FAILED", "PREEMPTED", "PRUNE", "PRUNED"


def write_marker(run_dir: Path, name: str, **fields: Any) -> None:
    """Write marker ``name`` into ``run_dir`` with ``fields`` as one JSON object."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / name).write_text(json.dumps(fields) + "\n")


def read_marker(run_dir: Path, name: str) -> dict[str, Any] | None:
    """Marker ``name`` of ``run_dir`` as a dict, or ``None`` when there is none."""
    path = run_dir / name
    return json.loads(path.read_text()) if path.is_file() else None


def clear_markers(run_dir: Path, *names: str) -> None:
    for name in names:
        (run_dir / name).unlink(missing_ok=True)
