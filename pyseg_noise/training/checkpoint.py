"""Checkpoint files: written atomically, read with ``weights_only=True``.

A checkpoint is a dict of tensors and plain values only (so ``torch.load(...,
weights_only=True)`` reads it without unpickling arbitrary objects):

====================  =============================================================
``format``            :data:`CHECKPOINT_FORMAT`
``iteration``         optimizer steps done (the next iteration to run)
``total_iterations``  of the whole run; ``finished`` = iteration == total
``method``            registry name; ``config`` the full config as a dict
``networks``          ``{name: state_dict}`` of the method's trainable networks
``method_state``      the method's extra state (e.g. its EMA teacher)
``optimizer``         ``optimizer.state_dict()``; ``scaler`` the AMP grad scaler's
``scheduler``         ``{"iteration", "lr"}``: the schedule is a function of the iteration
``sampler``           the data stream's state (seed, global batch, next iteration)
``rng``               one entry per process: torch (CPU, CUDA), numpy and python states
====================  =============================================================

Writing goes to a temporary file in the same folder, which is flushed,
fsync'ed and then renamed over the previous checkpoint (``os.replace`` is
atomic on POSIX and Windows), and the folder is fsync'ed: a run killed at any
moment leaves either the previous checkpoint or the new one, never a torn file.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "checkpoint_path",
    "atomic_save",
    "load_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
]

CHECKPOINT_FORMAT = 1
CHECKPOINT_NAME = "last.pt"
PathLike = Union[str, Path]


def checkpoint_path(run_dir: PathLike) -> Path:
    """``<run_dir>/checkpoints/last.pt``."""
    return Path(run_dir) / "checkpoints" / CHECKPOINT_NAME


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _serialize(obj: Any, f) -> None:
    torch.save(obj, f)


def atomic_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` such that ``path`` is never left half-written.

    Stale temporary files of earlier killed writes are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            stale.unlink()
        except OSError:
            pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            _serialize(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    Args:
        path: a checkpoint file, or a run folder (its ``checkpoints/last.pt``).

    Raises:
        FileNotFoundError: no checkpoint there.
        ValueError: the file is not a pyseg_noise checkpoint (or is corrupt).
    """
    path = Path(path)
    if path.is_dir():
        path = checkpoint_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/foreign files
        raise ValueError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a pyseg_noise checkpoint (format {CHECKPOINT_FORMAT})")
    return state


def capture_rng_state() -> Dict[str, Any]:
    """This process's torch (CPU and every CUDA device), numpy and python generator states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }


def restore_rng_state(state: Optional[Dict[str, Any]]) -> None:
    """Restore what :func:`capture_rng_state` returned (CUDA states only if the device count matches)."""
    if not state:
        return
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
