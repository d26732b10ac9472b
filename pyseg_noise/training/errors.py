"""The training package's exceptions, in one module that imports nothing of the package.

The modules that raise them (``config``, ``registry``, ``checkpoint``, ``run_log``)
import them from here, so none of them needs another for its error types (the
former ``config`` <-> ``registry`` cycle); each still exports the ones it raises
(``from pyseg_noise.training.config import ConfigError`` keeps working).

The command line sorts them by exit code: :class:`ConfigError` and
:class:`CheckpointError` are the user's to fix (exit 2);
:class:`CheckpointWriteError` and :class:`RunOutputWriteError` are the machine's
(a full disk; exit 1).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

__all__ = ["ConfigError", "CheckpointError", "CheckpointWriteError", "RunOutputWriteError"]

PathLike = Union[str, Path]


class ConfigError(ValueError):
    """A configuration (or command-line) value is invalid; the message names the key."""


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: unreadable, corrupt, foreign, incomplete or not fitting the run.

    The message names the file.
    """


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (e.g. ``ENOSPC``: no space left on the device).

    The message names the file and says that the previous checkpoint, if any, is unchanged;
    ``errno`` is that of the operating-system error that caused it (``None`` if there was none).
    """

    def __init__(self, message: str, errno: Optional[int] = None):
        super().__init__(message)
        self.errno = errno


class RunOutputWriteError(OSError):
    """Writing a file of the run folder other than the checkpoint failed (e.g. ``ENOSPC``).

    Parameters
    ----------
    message : str
        Names the file (and, from the Trainer, the last good checkpoint).
    errno : int, optional
        That of the operating-system error that caused it.
    path : Path, optional
        The file that could not be written.
    iteration : int, optional
        The iteration whose log record could not be written (log writes only).
    """

    def __init__(self, message: str, errno: Optional[int] = None, path: Optional[PathLike] = None,
                 iteration: Optional[int] = None):
        super().__init__(message)
        self.errno = errno
        self.path = None if path is None else Path(path)
        self.iteration = iteration
