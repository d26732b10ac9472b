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
A write that fails (full disk, quota, file-size limit, I/O error) removes its
temporary file, leaves the previous checkpoint as it was and raises
:class:`CheckpointWriteError` (an ``OSError`` with the ``errno`` of the cause).

Reading refuses, with :class:`CheckpointError` (a ``ValueError``) naming the file,
anything that is not a complete checkpoint of this format: empty, truncated or
foreign files, files holding objects other than tensors and plain values (never
unpickled as code: ``weights_only=True``), and checkpoints missing an entry or
holding one of the wrong type.
"""
from __future__ import annotations

import errno as _errno
import os
import pickle
import random
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from .errors import CheckpointError, CheckpointWriteError

__all__ = [
    "CheckpointError",
    "CheckpointWriteError",
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


def _os_error_of(exc: BaseException) -> Optional[OSError]:
    """``exc`` if it is an OSError, else the first OSError among its causes/contexts.

    ``torch.save`` turns an OSError raised by the file's ``write`` into a RuntimeError
    ("unexpected pos ...") whose ``__context__`` is the OSError.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _os_error_reason(cause: OSError) -> str:
    """The operating system's words for ``cause`` with its code, e.g. ``No space left on device (ENOSPC)``."""
    reason = cause.strerror or str(cause) or type(cause).__name__
    if cause.errno is not None and cause.errno in _errno.errorcode:
        reason = f"{reason} ({_errno.errorcode[cause.errno]})"
    return reason


def atomic_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` such that ``path`` is never left half-written.

    Stale temporary files of earlier killed writes are removed first.

    Raises:
        CheckpointWriteError: the operating system refused the write (full disk, quota,
            file-size limit, I/O error, permissions); the temporary file is removed and
            ``path`` is unchanged.
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
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        cause = _os_error_of(exc) if isinstance(exc, Exception) else None
        if cause is None or isinstance(exc, CheckpointWriteError):
            raise
        kept = (f"the previous checkpoint {path} is unchanged" if path.exists()
                else "no earlier checkpoint exists there")
        raise CheckpointWriteError(f"cannot write checkpoint {path}: {_os_error_reason(cause)}; {kept}",
                                   cause.errno) from exc
    _fsync_dir(path.parent)
    return path


#: top-level entries of a checkpoint and the types they must have
_REQUIRED = {
    "iteration": int,
    "total_iterations": int,
    "method": str,
    "config": dict,
    "networks": dict,
    "optimizer": dict,
}
_OPTIONAL = {
    "finished": bool,
    "method_state": (dict, type(None)),
    "scaler": (dict, type(None)),
    "scheduler": dict,
    "sampler": dict,
    "rng": list,
    "world_size": int,
}
_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation",
                      "In PyTorch 2.6", "Re-running `torch.load`")


def _read_error_reason(exc: BaseException) -> str:
    """One line saying why ``torch.load(weights_only=True)`` failed, without torch's multi-line boilerplate."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    kept = [ln for ln in lines if not ln.startswith(_TORCH_BOILERPLATE)]
    text = " ".join(kept) or type(exc).__name__
    if isinstance(exc, pickle.UnpicklingError) and "GLOBAL" in text:
        return ("it holds Python objects other than tensors and plain values, which are refused and were not "
                f"unpickled (weights_only=True: {text.split(' whose ')[0]})")
    if isinstance(exc, (pickle.UnpicklingError, EOFError)):
        return f"not a torch checkpoint, or truncated ({type(exc).__name__}: {text})"
    # e.g. "PytorchStreamReader failed reading zip archive: failed finding central directory. This is ..."
    first = text.split(". ")[0]
    return f"corrupt or truncated file ({type(exc).__name__}: {first[:300]})"


def _structure_problem(state: Any) -> Optional[str]:
    """What makes ``state`` not a complete checkpoint, or None."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a checkpoint dict"
    if state.get("format") != CHECKPOINT_FORMAT:
        return f"its format is {state.get('format')!r}, expected {CHECKPOINT_FORMAT}"
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        return f"it lacks the entries {', '.join(missing)}"
    for key, kind in list(_REQUIRED.items()) + list(_OPTIONAL.items()):
        if key in state and not (isinstance(state[key], kind) and not (kind is int and isinstance(state[key], bool))):
            return f"its entry {key!r} is a {type(state[key]).__name__}"
    if not 0 <= state["iteration"] <= state["total_iterations"]:
        return f"iteration {state['iteration']} is outside 0..total_iterations={state['total_iterations']}"
    if state["config"].get("method") != state["method"]:
        return (f"its config is for method {state['config'].get('method')!r} but the checkpoint is of "
                f"{state['method']!r}")
    if not state["networks"]:
        return "it holds no network"
    for name, sd in state["networks"].items():
        if not isinstance(sd, dict) or not sd:
            return f"network {name!r} has no state dict"
        bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
        if bad:
            return f"network {name!r} entry {bad[0]!r} is not a tensor"
    for key in ("state", "param_groups"):
        if key not in state["optimizer"]:
            return f"its optimizer state lacks {key!r}"
    return None


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` and check that it is complete.

    Args:
        path: a checkpoint file, or a run folder (its ``checkpoints/last.pt``).

    Raises:
        FileNotFoundError: no checkpoint there.
        CheckpointError (a ValueError): the file is empty, truncated, corrupt, not a
            pyseg_noise checkpoint, holds objects other than tensors and plain values
            (refused without running any of their code), or lacks an entry; the
            message (one line) names the file.
    """
    path = Path(path)
    if path.is_dir():
        path = checkpoint_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():  # a foreign pickle protocol: the error below says what matters
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: {_read_error_reason(exc)}") from exc
    problem = _structure_problem(state)
    if problem is not None:
        raise CheckpointError(f"{path} is not a complete pyseg_noise checkpoint (format {CHECKPOINT_FORMAT}): "
                              f"{problem}")
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
