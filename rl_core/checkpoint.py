"""Checkpoint files: written atomically, found by the step count in their name, loaded safely."""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the run."""


def checkpoint_path(run_dir: Path, total_steps: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"ckpt_{total_steps:010d}.pt"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(env steps, path)`` of every checkpoint of a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = [(int(m.group(1)), p) for p in folder.glob("ckpt_*.pt") if (m := _NAME.match(p.name))]
    return sorted(found)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """Write ``state`` to ``path`` through a temporary file and a rename: a kill mid-write leaves
    the earlier checkpoints intact and never a half-written file under a checkpoint's name. A write that
    fails (a full disk, a folder that cannot be written) leaves nothing behind and raises ``CheckpointError``
    naming the folder, and for a full disk the space it needed."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_file(tmp, data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(path.parent).free
            raise CheckpointError(f"no space left in {path.parent} for checkpoint {path.name} "
                                  f"({len(data) / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free); the earlier "
                                  "checkpoints are intact: free some space, then resume=true") from None
        raise CheckpointError(f"cannot write checkpoint {path} ({e.strerror or e}); the earlier checkpoints "
                              "are intact") from None
    return path


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes whose process is gone (killed mid-write)."""
    removed = []
    folder = Path(run_dir) / CHECKPOINT_DIR
    for tmp in [*folder.glob(".ckpt_*.tmp"), *folder.glob(".replay_*.tmp")]:
        pid = tmp.suffixes[-2].lstrip(".") if len(tmp.suffixes) >= 2 else ""
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue  # another live process is writing it
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True`` (no arbitrary code); a bad file raises ``CheckpointError`` naming it."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; give one file from a run's checkpoints/ "
                              "(ckpt_<env steps>.pt)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): not a checkpoint; it was left as it is")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many kinds for truncated or foreign files
        raise CheckpointError(f"checkpoint {path} is corrupted or not a checkpoint ({type(e).__name__}: "
                              f"{(str(e).splitlines() or [''])[0][:200]}); it was left as it is") from e
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"checkpoint {path} holds no model state; it was left as it is")
    return state


def load_model_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Load weights, naming the first parameter whose name or shape does not match the config's model."""
    own = model.state_dict()
    for name, tensor in weights.items():
        if name not in own:
            raise CheckpointError(f"{source}: parameter {name} does not exist in the configured model")
        if own[name].shape != tensor.shape:
            raise CheckpointError(f"{source}: parameter {name} has shape {tuple(tensor.shape)} in the checkpoint "
                                  f"but {tuple(own[name].shape)} in the configured model")
    missing = sorted(set(own) - set(weights))
    if missing:
        raise CheckpointError(f"{source}: parameter {missing[0]} of the configured model is missing from the checkpoint")
    model.load_state_dict(weights)
