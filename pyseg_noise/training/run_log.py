"""The run's log: JSON lines in the run folder, a tqdm progress bar, TensorBoard when installed.

``<run>/log.jsonl`` holds one object per logged iteration::

    {"iteration": 20, "loss": 0.41, "lr": 0.01, "uncertainty": 0.12, "seconds": 8.3}

``iteration`` counts finished optimizer steps; other keys are whatever the
method's ``train_step`` returned. Validation results are lines with a
``"split"`` key. On resume, lines past the checkpoint's iteration are dropped,
so the file reads as one uninterrupted run.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

__all__ = ["RunLog", "read_log"]

PathLike = Union[str, Path]


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
        resume_from: iteration of the checkpoint being resumed (later lines are dropped).
    """

    def __init__(self, run_dir: PathLike, *, enabled: bool = True, progress: bool = True, total: int = 0,
                 initial: int = 0, desc: str = "train", resume_from: Optional[int] = None):
        self.path = Path(run_dir) / "log.jsonl"
        self.enabled = enabled
        self._bar = None
        self._tb = None
        if not enabled:
            return
        if resume_from is not None:
            kept = [r for r in read_log(self.path) if r.get("iteration", 0) <= resume_from]
            with open(self.path, "w") as f:
                for r in kept:
                    f.write(json.dumps(r) + "\n")
        elif self.path.exists():
            self.path.unlink()
        self._file = open(self.path, "a")
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="it", dynamic_ncols=True)
        try:  # optional: only if tensorboard is installed
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=resume_from)
        except Exception:
            self._tb = None

    def log(self, record: Mapping[str, Any]) -> None:
        """Append one record (must hold ``"iteration"``)."""
        if not self.enabled:
            return
        self._file.write(json.dumps({k: _json_value(v) for k, v in record.items()}) + "\n")
        self._file.flush()
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
            self._file.close()
