"""Value checks done inside the Triton kernels' own pass: where they write, and who reads it.

The label-range and NaN checks of ``pyseg_noise.ops`` cost the GPU nothing extra
when the loss kernels do them on the values they load anyway. A kernel launched
with ``CHECK=True`` writes into a per-call error buffer (int64 ``[2]``):

- ``[0]``: an offending label (0 when none: 0 is always a valid label);
- ``[1]``: nonzero when a teacher probability is NaN.

``pyseg_noise.ops`` opens :func:`collect` around one op call when value checks are
on; the launchers take the buffer with :func:`error_buffer` (one per call, shared
by all its launches) and the op reads it once after the launches — one small
device-to-host copy. Outside :func:`collect` (checks turned off with
``set_value_checks(False)``, a graph compiled by ``torch.compile``, a direct
``torch.ops.pyseg_noise`` call) the kernels are built with ``CHECK=False``: no
buffer, no read, and a bad label gives NaN (see ``class_rows.class_index``).

Pure torch: importable without triton.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator, Optional

import torch

__all__ = ["ErrorBox", "collect", "error_buffer"]

_STATE = threading.local()


class ErrorBox:
    """The error buffer of one op call (None until a launcher asks for it)."""

    buffer: Optional[torch.Tensor] = None

    def read(self) -> tuple[int, bool]:
        """(offending label or 0, NaN seen): one host read of the buffer, none if no kernel checked."""
        if self.buffer is None:
            return 0, False
        bad, nan = self.buffer.tolist()
        return int(bad), bool(nan)


@contextmanager
def collect() -> Iterator[ErrorBox]:
    """Launchers called in this block (on this thread) check values into one shared buffer."""
    previous = getattr(_STATE, "box", None)
    box = ErrorBox()
    _STATE.box = box
    try:
        yield box
    finally:
        _STATE.box = previous


def error_buffer(device: torch.device) -> Optional[torch.Tensor]:
    """The current call's error buffer on ``device`` (created zeroed on first use), or None: no checks."""
    box = getattr(_STATE, "box", None)
    if box is None:
        return None
    if box.buffer is None:
        box.buffer = torch.zeros(2, dtype=torch.int64, device=device)
    return box.buffer
