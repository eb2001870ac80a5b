"""Many task samplers stepped together, in worker processes or in this process.

The learner writes a batch of actions into shared memory, every worker steps its block of
samplers and writes observations, rewards and end flags back; only finished-episode metrics
travel through the pipes. A worker that raises reports its traceback; a worker that dies is
noticed through its process sentinel at once, so the learner fails with the worker's name
instead of hanging.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection
import pickle
import signal
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.task import TaskSource

_STEP = b"s"
_EMPTY = b""
STARTUP_TIMEOUT_S = 120.0


def _is_stopped(pid: int | None) -> bool:
    """Whether process ``pid`` is stopped (state T in /proc; False where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


class SamplerError(RuntimeError):
    """A sampler worker failed, died or stopped answering."""


@dataclass
class StepBuffers:
    """Arrays shared by the learner and the workers; ``N`` samplers, ``D`` obs dims, ``A`` action dims.

    obs: ``[N, D]`` float32, the observation to act on (the next episode's first one after a reset).
    final_obs: ``[N, D]`` float32, the last observation of an episode that ended at this step.
    actions: ``[N, A]`` float32, written by the learner before each step.
    reward: ``[N]`` float32. terminated / truncated: ``[N]`` bool (truncated = time limit).
    active: ``[N]`` bool, False once a valid/test sampler has played all its tasks.
    """

    obs: np.ndarray
    final_obs: np.ndarray
    actions: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    active: np.ndarray

    SPECS = (("obs", "f", 1), ("final_obs", "f", 1), ("actions", "f", 2), ("reward", "f", 0),
             ("terminated", "B", 0), ("truncated", "B", 0), ("active", "B", 0))

    @classmethod
    def allocate(cls, ctx: Any, n: int, obs_dim: int, action_dim: int) -> dict[str, Any]:
        """Raw shared arrays (picklable into worker processes), or plain ones for ``ctx=None``."""
        raws = {}
        for name, code, kind in cls.SPECS:
            size = n * (obs_dim if kind == 1 else action_dim if kind == 2 else 1)
            raws[name] = ctx.RawArray(code, size) if ctx is not None else np.zeros(size, np.float32 if code == "f" else np.uint8)
        return {"raws": raws, "n": n, "obs_dim": obs_dim, "action_dim": action_dim}

    @classmethod
    def view(cls, spec: dict[str, Any]) -> "StepBuffers":
        n, d, a = spec["n"], spec["obs_dim"], spec["action_dim"]
        arrays = {}
        for name, code, kind in cls.SPECS:
            arr = np.frombuffer(spec["raws"][name], dtype=np.float32 if code == "f" else np.uint8)
            arr = arr.view(np.bool_) if code == "B" else arr
            arrays[name] = arr.reshape((n, d) if kind == 1 else (n, a) if kind == 2 else (n,))
        return cls(**arrays)


class SamplerGroup:
    """Samplers ``indices`` of one mode, stepped in the calling process into shared ``StepBuffers``."""

    def __init__(self, factory: TaskSource, mode: str, indices: range, run_seed: int,
                 buffers: StepBuffers, render: bool = False) -> None:
        self.indices = indices
        self.samplers = [factory.make(mode, i, run_seed, render=render) for i in indices]
        self.buf = buffers

    def _put_obs(self, i: int, obs: np.ndarray | None) -> None:
        self.buf.active[i] = obs is not None
        if obs is not None:
            self.buf.obs[i] = obs

    def reset(self) -> None:
        for i, sampler in zip(self.indices, self.samplers):
            self._put_obs(i, sampler.reset())

    def step(self) -> list[dict[str, Any]]:
        """Step every active sampler with its action; returns metrics of episodes that ended."""
        buf, finished = self.buf, []
        for i, sampler in zip(self.indices, self.samplers):
            if not buf.active[i]:
                buf.reward[i], buf.terminated[i], buf.truncated[i] = 0.0, False, False
                continue
            obs, reward, terminated, truncated, metrics = sampler.step(buf.actions[i])
            buf.reward[i], buf.terminated[i], buf.truncated[i] = reward, terminated, truncated
            if metrics is None:
                buf.obs[i] = obs
            else:
                buf.final_obs[i] = obs
                finished.append({**metrics, "sampler": i})
                self._put_obs(i, sampler.reset())
        return finished

    def render(self) -> list[np.ndarray | None]:
        return [s.render() if self.buf.active[i] else None for i, s in zip(self.indices, self.samplers)]

    def state_dicts(self) -> list[dict[str, Any]]:
        return [s.state_dict() for s in self.samplers]

    def load_state_dicts(self, states: list[dict[str, Any]]) -> None:
        for i, sampler, state in zip(self.indices, self.samplers, states):
            self._put_obs(i, sampler.load_state_dict(state))

    def close(self) -> None:
        for s in self.samplers:
            s.close()


def _worker(conn: mp.connection.Connection, factory: TaskSource, mode: str, indices: range,
            run_seed: int, buffer_spec: dict[str, Any], render: bool) -> None:
    # Ctrl-C goes to the whole process group; the learner decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        group = SamplerGroup(factory, mode, indices, run_seed, StepBuffers.view(buffer_spec), render)
        conn.send_bytes(pickle.dumps(("ok", None)))
    except Exception:
        conn.send_bytes(pickle.dumps(("error", traceback.format_exc())))
        return
    while True:
        try:
            msg = conn.recv_bytes()
        except (EOFError, OSError):  # the learner is gone
            break
        try:
            if msg == _STEP:
                # The hot path: raw bytes, and an empty reply when no episode ended.
                finished = group.step()
                conn.send_bytes(pickle.dumps(("ok", finished)) if finished else _EMPTY)
                continue
            cmd, arg = pickle.loads(msg)
            if cmd == "close":
                group.close()
                conn.send_bytes(pickle.dumps(("ok", None)))
                break
            out = group.load_state_dicts(arg) if cmd == "load" else getattr(group, cmd)()
            conn.send_bytes(pickle.dumps(("ok", out)))
        except Exception:
            conn.send_bytes(pickle.dumps(("error", traceback.format_exc())))


class Samplers:
    """``num_samplers`` task samplers of one mode, split into contiguous blocks.

    Each of ``num_workers`` worker processes steps one block; with ``learner_steps=True`` the
    calling (learner) process steps one more block itself while the workers run, which uses
    the core that would otherwise sit idle waiting for them. ``num_workers=0`` steps every
    sampler in this process (no start-up cost; used for evaluation). Arrays in :attr:`buf`
    are shared views, overwritten by the next step: copy what you keep.

    Args:
        factory: builds each sampler (pickled into the workers).
        mode: ``train``, ``valid`` or ``test``.
        run_seed: seeds the samplers' RNGs (with their index).
        start_method: multiprocessing start method (``spawn`` is safe with torch threads).
        learner_steps: the learner process steps a block too (ignored when ``num_workers=0``).
        timeout_s: longest wait for one reply before a worker counts as hung (start-up waits at least
            ``STARTUP_TIMEOUT_S``: a worker imports its env's packages first).
    """

    def __init__(self, factory: TaskSource, mode: str, num_samplers: int, num_workers: int,
                 run_seed: int, start_method: str = "spawn", learner_steps: bool = True,
                 render: bool = False, timeout_s: float = 30.0) -> None:
        if num_samplers < 1:
            raise ValueError(f"num_samplers: must be >= 1, got {num_samplers}")
        self.num_samplers = num_samplers
        self.timeout_s = timeout_s
        learner_steps = learner_steps or num_workers == 0
        num_workers = min(num_workers, num_samplers - int(learner_steps))
        num_blocks = num_workers + int(learner_steps)
        bounds = np.linspace(0, num_samplers, num_blocks + 1).round().astype(int)
        self.blocks = [range(int(bounds[b]), int(bounds[b + 1])) for b in range(num_blocks)]
        obs_dim = int(np.prod(factory.observation_space.shape))
        action_dim = int(np.prod(factory.action_space.shape))
        ctx = mp.get_context(start_method) if num_workers > 0 else None
        spec = StepBuffers.allocate(ctx, num_samplers, obs_dim, action_dim)
        self.buf = StepBuffers.view(spec)
        self.procs: list[Any] = []
        self.conns: list[mp.connection.Connection] = []
        self.hung: set[int] = set()  # workers that stopped answering: killed, not asked, at close
        self.group: SamplerGroup | None = None
        try:
            for w in range(num_workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker, name=f"{mode}-sampler-worker-{w}", daemon=True,
                                   args=(child, factory, mode, self.blocks[w], run_seed, spec, render))
                proc.start()
                child.close()
                self.procs.append(proc)
                self.conns.append(parent)
            if learner_steps:
                self.group = SamplerGroup(factory, mode, self.blocks[-1], run_seed, self.buf, render)
            self._gather(range(num_workers), max(timeout_s, STARTUP_TIMEOUT_S))  # start-up errors surface here
        except BaseException:
            self.close()
            raise

    @property
    def num_workers(self) -> int:
        return len(self.procs)

    def _describe(self, w: int) -> str:
        b = self.blocks[w]
        return f"sampler worker {w} (pid {self.procs[w].pid}, samplers {b.start}..{b.stop - 1})"

    def _gather(self, workers: range, timeout_s: float | None = None) -> list[Any]:
        """Wait for one reply from each worker; a death, an error or a hang raises ``SamplerError``."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        replies: dict[int, Any] = {}
        waiting = set(workers)
        while waiting:
            objs = [self.conns[w] for w in waiting] + [self.procs[w].sentinel for w in waiting]
            ready = mp.connection.wait(objs, timeout=timeout_s)
            if not ready:
                w = min(waiting)
                self.hung.add(w)
                stopped = (" (its process is stopped, e.g. by SIGSTOP or a debugger)"
                           if _is_stopped(self.procs[w].pid) else "")
                raise SamplerError(f"{self._describe(w)} sent nothing for {timeout_s:g} s{stopped}; "
                                   "machine.worker_timeout_s sets how long to wait")
            for w in list(waiting):
                status = None
                if self.conns[w] in ready or self.conns[w].poll():
                    try:
                        data = self.conns[w].recv_bytes()
                        status, payload = ("ok", []) if data == _EMPTY else pickle.loads(data)
                    except (EOFError, OSError):
                        status = "died"
                    if status == "error":
                        raise SamplerError(f"{self._describe(w)} failed:\n{payload}")
                    if status == "ok":
                        replies[w] = payload
                        waiting.discard(w)
                        continue
                if self.procs[w].sentinel in ready or status == "died":
                    self.procs[w].join(timeout=1)
                    raise SamplerError(f"{self._describe(w)} died with exit code {self.procs[w].exitcode}")
        return [replies[w] for w in workers]

    def _send(self, messages: list[bytes]) -> None:
        for conn, msg in zip(self.conns, messages):
            try:
                conn.send_bytes(msg)
            except (BrokenPipeError, OSError):
                pass  # reported with its exit code by _gather

    def _call(self, cmd: str, args: list[Any] | None = None) -> list[Any]:
        """Run ``cmd`` on every block, workers first, the learner's block meanwhile; replies in block order."""
        if cmd == "step":
            self._send([_STEP] * self.num_workers)
        else:
            self._send([pickle.dumps((cmd, None if args is None else args[w])) for w in range(self.num_workers)])
        own = []
        if self.group is not None:
            own = [self.group.load_state_dicts(args[-1]) if cmd == "load" else getattr(self.group, cmd)()]
        return self._gather(range(self.num_workers)) + own

    def reset(self) -> np.ndarray:
        """Start the first task of every sampler; returns obs ``[N, D]``."""
        self._call("reset")
        return self.buf.obs

    def step(self, actions: np.ndarray) -> list[dict[str, Any]]:
        """Step all samplers with ``actions`` ``[N, A]``; results land in :attr:`buf`.

        Returns the metrics of episodes that ended, each with its ``sampler`` index and env ``seed``.
        """
        self.buf.actions[:] = actions
        return [m for reply in self._call("step") for m in reply]

    def render(self) -> list[np.ndarray | None]:
        """Frames ``[H, W, 3]`` uint8 per sampler (``None`` for exhausted ones); needs ``render=True``."""
        return [f for reply in self._call("render") for f in reply]

    def state_dicts(self) -> list[dict[str, Any]]:
        return [s for reply in self._call("state_dicts") for s in reply]

    def load_state_dicts(self, states: list[dict[str, Any]]) -> np.ndarray:
        """Continue each sampler's saved episode stream; returns obs ``[N, D]``."""
        if len(states) != self.num_samplers:
            raise ValueError(f"checkpoint holds {len(states)} sampler states, this run has {self.num_samplers} samplers")
        self._call("load", [states[b.start:b.stop] for b in self.blocks])
        return self.buf.obs

    def close(self) -> None:
        if self.group is not None:
            self.group.close()
            self.group = None
        for w, (proc, conn) in enumerate(zip(self.procs, self.conns)):
            if w in self.hung:
                proc.kill()  # SIGKILL ends a stopped process too
            try:
                if proc.is_alive() and w not in self.hung:
                    conn.send_bytes(pickle.dumps(("close", None)))
                    if conn.poll(5):
                        conn.recv_bytes()
            except (EOFError, OSError):
                pass
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            conn.close()
        self.procs, self.conns, self.hung = [], [], set()

    def __enter__(self) -> "Samplers":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
