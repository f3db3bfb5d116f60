"""Atomic, rotating checkpoints and the stop signal.

A checkpoint is written into ``.tmp-step-N`` by every rank, then (after a barrier) rank 0
writes a manifest of every file and its size, renames the folder to ``step-N`` and points
``latest`` at it. A folder without a manifest, or whose files do not match it, is
incomplete: resume skips it and takes the previous one. A gang killed at any moment
therefore resumes from the newest checkpoint that was fully written.

"Newest" is by save time (recorded in the manifest), not by step: a run that started over
(because no checkpoint loaded) writes lower steps than the abandoned ones, and both resume
and rotation must prefer the current run's checkpoints. The manifest also records the world
size that wrote the checkpoint, which the recipe checks before loading (ZeRO partitions the
optimizer state per rank).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from kadapt_trainer import dist
from kadapt_trainer.errors import BadInputError

CHECKPOINT_PREFIX = "step-"
TMP_PREFIX = ".tmp-"
LATEST_FILE = "latest"
MANIFEST_FILE = "kadapt-manifest.json"
STATE_FILE = "kadapt-state.json"
RNG_FILE = "rng-rank{rank}.pt"
_STEP_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


@dataclass
class TrainState:
    """Where training stands: everything besides tensors that a resume needs."""

    global_step: int = 0
    epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    eval_metrics: dict[str, float] = field(default_factory=dict)
    best_eval_metrics: dict[str, float] = field(default_factory=dict)
    early_stopped: bool = False
    saved_at: float = 0.0
    #: The training curve, one point per evaluation: step, epoch, the mean training loss since
    #: the previous point, then that evaluation's metrics. Checkpointed, so a resumed run's
    #: curve is whole.
    curve: list[dict[str, float]] = field(default_factory=list)
    loss_since_point: float = 0.0
    steps_since_point: int = 0

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        """Parse what :meth:`to_json` wrote."""
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_json(self) -> str:
        """A stable JSON form."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def tag_for(step: int) -> str:
    """Folder name of the checkpoint at an optimizer step."""
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def step_of(path: Path) -> int | None:
    """The step of a ``step-N`` folder, else None."""
    match = _STEP_RE.match(path.name)
    return int(match.group(1)) if match else None


def _manifest(folder: Path) -> dict[str, int]:
    """Every file under the folder (but the manifest) with its size."""
    out: dict[str, int] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST_FILE:
            out[str(path.relative_to(folder))] = path.stat().st_size
    return out


def is_complete(folder: Path) -> bool:
    """True when the manifest exists and every file it lists is there with its size."""
    try:
        listed = json.loads((folder / MANIFEST_FILE).read_text())["files"]
        return all((folder / name).stat().st_size == size for name, size in listed.items()) and bool(listed)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a checkpoint folder ({} when missing or unreadable)."""
    try:
        data = json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def saved_world_size(folder: Path) -> int | None:
    """The number of ranks that wrote a checkpoint (None for a manifest without it)."""
    value = _read_manifest(folder).get("world_size")
    return int(value) if isinstance(value, int) else None


def _saved_at(folder: Path) -> tuple[float, int]:
    """Sort key, newest last: save time from the manifest (else its mtime), then the step."""
    value = _read_manifest(folder).get("saved_at")
    if not isinstance(value, (int, float)):
        try:
            value = (folder / MANIFEST_FILE).stat().st_mtime
        except OSError:
            value = 0.0
    return float(value), step_of(folder) or 0


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, newest (by save time) first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and step_of(p) is not None and is_complete(p)]
    found.sort(key=_saved_at, reverse=True)
    return found


def _fsync_write(path: Path, text: str) -> None:
    """Write a small file and replace the old one atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    """This rank's random generators."""
    import numpy as np

    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointManager:
    """Saves, rotates and finds checkpoints under one root folder (shared by all ranks)."""

    def __init__(self, root: Path, keep: int, info: dist.DistInfo) -> None:
        self.root = root
        self.keep = keep
        self.info = info
        self.last_saved: Path | None = None
        self.last_saved_at: float | None = None
        #: Complete checkpoints that failed to load in :meth:`resume` (newest first).
        self.skipped: list[str] = []

    def save(self, state: TrainState, write: Callable[[Path], None]) -> Path:
        """Write one checkpoint atomically; ``write(folder)`` runs on every rank."""
        tag = tag_for(state.global_step)
        tmp = self.root / f"{TMP_PREFIX}{tag}"
        final = self.root / tag
        if self.info.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        dist.barrier()
        write(tmp)
        torch.save(rng_state(), tmp / RNG_FILE.format(rank=self.info.rank))
        dist.barrier()
        if self.info.is_main:
            state.saved_at = time.time()
            _fsync_write(tmp / STATE_FILE, state.to_json())
            manifest = {
                "step": state.global_step,
                "world_size": self.info.world_size,
                "saved_at": state.saved_at,
                "files": _manifest(tmp),
            }
            _fsync_write(tmp / MANIFEST_FILE, json.dumps(manifest))
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
            _fsync_write(self.root / LATEST_FILE, tag + "\n")
            self._rotate(state)
        dist.barrier()
        self.last_saved = final
        self.last_saved_at = time.time()
        return final

    def _rotate(self, state: TrainState) -> None:
        """Keep the newest ``keep`` checkpoints (by save time) plus the best one; drop temp folders."""
        complete = complete_checkpoints(self.root)
        best = tag_for(state.best_step) if state.best_step is not None else None
        for old in complete[self.keep :]:
            if old.name != best:
                shutil.rmtree(old, ignore_errors=True)
        for stale in self.root.glob(f"{TMP_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)

    def resume(self, load: Callable[[Path], None]) -> TrainState | None:
        """Load the newest checkpoint that loads on every rank; fall back to older ones.

        Rank 0 picks the candidates (complete ones, newest first) so every rank tries the
        same folder; a folder that fails to load on any rank is skipped by all and named in
        :attr:`skipped`. A :class:`BadInputError` from ``load`` (a checkpoint that cannot load
        in this configuration, on every rank alike) stops the search: no retry would help.
        """
        candidates = [str(p) for p in complete_checkpoints(self.root)] if self.info.is_main else []
        names = dist.broadcast_object(candidates)
        assert isinstance(names, list)
        device = torch.device("cpu")
        for name in names:
            folder = Path(name)
            failed = False
            try:
                load(folder)
                state = TrainState.from_json((folder / STATE_FILE).read_text())
                rng_file = folder / RNG_FILE.format(rank=self.info.rank)
                if rng_file.exists():
                    set_rng_state(torch.load(rng_file, weights_only=False))
            except BadInputError:
                raise
            except Exception as exc:
                failed = True
                print(f"kadapt: checkpoint {folder} did not load ({type(exc).__name__}: {exc}); trying an older one")
            if dist.any_rank(failed, device):
                self.skipped.append(folder.name)
                continue
            self.last_saved = folder
            self.last_saved_at = state.saved_at
            return state
        return None


class StopSignal:
    """SIGTERM/SIGINT set a flag; the loop checkpoints at the end of the step and exits 143."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> StopSignal:
        """Take over SIGTERM and SIGINT (main thread only)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        self.signum = signum

    def restore(self) -> None:
        """Give the signals back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
