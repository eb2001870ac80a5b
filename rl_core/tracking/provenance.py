"""What produced a run: the resolved config and the code's git commit with uncommitted changes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def save_provenance(run_dir: Path, cfg: DictConfig, code_dir: Path) -> None:
    """Write ``config.yaml`` (resolved) and ``git.txt`` / ``git.diff`` into ``run_dir``.

    ``config.yaml`` is written once: a resumed run keeps the config it started with.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = run_dir / "config.yaml"
    if not config_file.exists():
        config_file.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    commit = _git(["rev-parse", "HEAD"], code_dir)
    status = _git(["status", "--short"], code_dir)
    diff = _git(["diff", "HEAD"], code_dir)
    if commit is None:
        (run_dir / "git.txt").write_text(f"{code_dir} is not a git checkout (or git is missing)\n")
        return
    (run_dir / "git.txt").write_text(f"commit {commit.strip()}\n\nuncommitted files:\n{status or '(none)'}\n")
    (run_dir / "git.diff").write_text(diff or "")
