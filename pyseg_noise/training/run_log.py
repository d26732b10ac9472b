"""The run's log: JSON lines in the run folder, a tqdm progress bar, TensorBoard when installed.

``<run>/log.jsonl`` holds one object per logged iteration::

    {"iteration": 20, "loss": 0.41, "lr": 0.01, "uncertainty": 0.12, "seconds": 8.3}

``iteration`` counts finished optimizer steps; other keys are whatever the
method's ``train_step`` returned. Validation results are lines with a
``"split"`` key. On resume, lines past the checkpoint's iteration are dropped,
so the file reads as one uninterrupted run.

A write to the run folder that the operating system refuses (a full disk,
quota, file-size limit, I/O error) raises :class:`RunOutputWriteError` naming
the file: :class:`RunLog` for ``log.jsonl`` (the lines already written stay; a
torn last line is skipped by :func:`read_log` and dropped on resume), and
:func:`writing` around the Trainer's other outputs (``eval/``, ``plots/``).
Checkpoints have their own error, :class:`~.checkpoint.CheckpointWriteError`.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Union

from tqdm.auto import tqdm

from .checkpoint import _os_error_of, _os_error_reason
from .errors import RunOutputWriteError

__all__ = ["RunLog", "RunOutputWriteError", "read_log", "writing"]

PathLike = Union[str, Path]


def _stat(path: Path) -> Optional[tuple]:
    """(size, mtime, inode) of ``path``, None if it does not exist (or cannot be looked at)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


@contextlib.contextmanager
def writing(path: PathLike, *, keep_partial: bool = False, iteration: Optional[int] = None) -> Iterator[Path]:
    """Turn an operating-system error raised while writing ``path`` into :class:`RunOutputWriteError`.

    Parameters
    ----------
    path : str or Path
        The file the block writes (named in the error).
    keep_partial : bool
        Leave what reached ``path`` before the failure (an appended log); by default a
        file the block created or changed is removed, so no torn plot or table is left
        to be read (a file the block did not touch stays).
    iteration : int, optional
        Stored on the error (the log record being written).

    Yields
    ------
    Path
        ``path``.

    Raises
    ------
    RunOutputWriteError
        The block raised an ``OSError`` (or an error caused by one, as libraries wrap them).
    """
    path = Path(path)
    before = _stat(path)
    try:
        yield path
    except RunOutputWriteError:
        raise
    except Exception as exc:
        cause = _os_error_of(exc)
        if cause is None:
            raise
        if not keep_partial and _stat(path) not in (None, before):
            with contextlib.suppress(OSError):
                path.unlink()
        raise RunOutputWriteError(f"cannot write {path}: {_os_error_reason(cause)}", cause.errno, path,
                                  iteration) from exc


def read_log(path: PathLike) -> List[Dict[str, Any]]:
    """The records of a ``log.jsonl`` (a torn last line, from a killed run, is skipped)."""
    path = Path(path)
    if path.is_dir():
        path = path / "log.jsonl"
    records = []
    if not path.is_file():
        return records
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf
    return v


class RunLog:
    """Writes ``log.jsonl`` (main process only), drives the progress bar and TensorBoard.

    Args:
        run_dir: the run folder.
        enabled: False on non-main processes (nothing is written or shown).
        progress: show a tqdm bar.
        total, initial: bar range.
        desc: bar label.
        resume_from: iteration of the checkpoint being resumed (later lines are dropped;
            the file is replaced atomically, so a failed rewrite leaves it as it was).

    Raises:
        RunOutputWriteError: ``log.jsonl`` cannot be written (e.g. no space left); it names
            the file and, from :meth:`log`, the iteration of the record.
    """

    def __init__(self, run_dir: PathLike, *, enabled: bool = True, progress: bool = True, total: int = 0,
                 initial: int = 0, desc: str = "train", resume_from: Optional[int] = None):
        self.path = Path(run_dir) / "log.jsonl"
        self.enabled = enabled
        self._bar = None
        self._tb = None
        self._failed = False
        if not enabled:
            return
        if resume_from is not None:
            kept = [r for r in read_log(self.path) if r.get("iteration", 0) <= resume_from]
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            with writing(self.path, keep_partial=True):
                try:
                    with open(tmp, "w") as f:
                        f.writelines(json.dumps(r) + "\n" for r in kept)
                    os.replace(tmp, self.path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        tmp.unlink()
                    raise
        elif self.path.exists():
            self.path.unlink()
        with writing(self.path, keep_partial=True):
            self._file = open(self.path, "a")
        if progress:
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="it", dynamic_ncols=True)
        try:  # deferred: tensorboard is optional (not a dependency) and slow to import
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=resume_from)
        except Exception:
            self._tb = None

    def log(self, record: Mapping[str, Any]) -> None:
        """Append one record (must hold ``"iteration"``)."""
        if not self.enabled:
            return
        try:
            with writing(self.path, keep_partial=True, iteration=record.get("iteration")):
                self._file.write(json.dumps({k: _json_value(v) for k, v in record.items()}) + "\n")
                self._file.flush()
        except RunOutputWriteError:
            self._failed = True
            raise
        if self._tb is not None:
            prefix = record.get("split", "train")
            for k, v in record.items():
                if k not in ("iteration", "split") and isinstance(v, (int, float)):
                    self._tb.add_scalar(f"{prefix}/{k}", v, record["iteration"])

    def progress(self, n: int, **postfix: Any) -> None:
        """Advance the bar by ``n`` iterations, showing ``postfix`` (e.g. loss, lr)."""
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()},
                                      refresh=False)
            self._bar.update(n)

    def write(self, message: str) -> None:
        """Print a line without breaking the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if not self._file.closed:
            try:
                with writing(self.path, keep_partial=True):
                    self._file.close()
            except RunOutputWriteError:
                # closing retries the flush of a record that already failed; that error was raised
                if not self._failed:
                    raise
