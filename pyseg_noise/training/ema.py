"""The mean teacher: an exponential moving average of a student network (SPEC 7).

PINT §2.1 keeps an auxiliary network whose weights follow the main one,
``theta~_t = gamma * theta~_{t-1} + (1 - gamma) * theta_t`` with ``gamma = 0.99``;
as in the mean-teacher code bases, the decay ramps up during the first steps,
``decay_t = min(1 - 1/(t + 1), gamma)``, so that the early teacher is not
dominated by its random initialisation.
"""
from __future__ import annotations

import copy
import numbers
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from pyseg_noise.ops.ema import ema_update_

__all__ = ["EMATeacher"]


def _named_pairs(kind: str, teacher: List[Tuple[str, Tensor]], student: List[Tuple[str, Tensor]]):
    """Pairs teacher and student tensors by name; raises on the first structural mismatch."""
    if len(teacher) != len(student):
        raise ValueError(
            f"EMATeacher.update: the student has {len(student)} {kind} but the teacher has {len(teacher)}; "
            "pass the network the teacher was made from"
        )
    for i, ((tn, _), (sn, _)) in enumerate(zip(teacher, student)):
        if tn != sn:
            raise ValueError(f"EMATeacher.update: {kind} {i} is '{sn}' in the student but '{tn}' in the teacher")
    return [(t, s) for (_, t), (_, s) in zip(teacher, student)]


class EMATeacher:
    """Keeps an EMA teacher copy of a student ``nn.Module``.

    The teacher is a deep copy of the student at construction, with ``requires_grad`` off. Each
    :meth:`update` moves every floating parameter towards the student's with
    ``decay_t = min(1 - 1/(t + 1), gamma)`` in one :func:`pyseg_noise.ops.ema_update_` call (one
    fused multi-tensor pass for the whole network), and copies the buffers (BatchNorm running
    statistics and counters) and any non-floating parameter as they are. The teacher's
    train/eval mode is left to the caller (PINT runs it with dropout on for its M perturbed
    passes).

    Args:
        student: the network being trained.
        gamma: the EMA decay once warmed up, in [0, 1] (PINT: 0.99).
        backend: backend of :func:`pyseg_noise.ops.ema_update_` (None: by device).

    Attributes:
        teacher (nn.Module): the EMA network; call it for teacher predictions.
        gamma (float): the decay after warm-up.
        step (int or None): the step of the last :meth:`update`, None before the first.

    Raises:
        TypeError: ``student`` is not an ``nn.Module``; ``gamma`` is not a number.
        ValueError: ``gamma`` outside [0, 1].

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from pyseg_noise.training import EMATeacher
        >>> student = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4))
        >>> ema = EMATeacher(student, gamma=0.99)
        >>> opt = torch.optim.SGD(student.parameters(), lr=0.1)
        >>> for step in range(3):
        ...     loss = student(torch.randn(2, 1, 8, 8, 8)).square().mean()
        ...     opt.zero_grad(); loss.backward(); opt.step()
        ...     decay = ema.update(student, step)
        >>> round(decay, 4)  # min(1 - 1/3, 0.99)
        0.6667
        >>> with torch.no_grad():
        ...     teacher_logits = ema.teacher(torch.randn(2, 1, 8, 8, 8))
    """

    def __init__(self, student: nn.Module, gamma: float = 0.99, *, backend: Optional[str] = None) -> None:
        if not isinstance(student, nn.Module):
            raise TypeError(f"EMATeacher: student must be an nn.Module, got {type(student).__name__}")
        self.gamma = self._check_gamma(gamma)
        self.backend = backend
        self.step: Optional[int] = None
        self.teacher = copy.deepcopy(student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        # Filled in place each step: the op reads the value, so nothing is re-created or recompiled.
        self._decay = torch.zeros((), dtype=torch.float64)

    @staticmethod
    def _check_gamma(gamma) -> float:
        if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real):
            raise TypeError(f"EMATeacher: gamma must be a float in [0, 1], got {type(gamma).__name__}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"EMATeacher: gamma must lie in [0, 1], got {gamma}")
        return float(gamma)

    def decay(self, step: int) -> float:
        """The decay used at global step ``step`` (>= 0): ``min(1 - 1/(step + 1), gamma)``.

        Step 0 gives 0 (the teacher becomes a copy of the student), step 1 gives 0.5, and the
        ramp reaches ``gamma`` at ``step = 1/(1 - gamma) - 1`` (99 for gamma = 0.99).

        Raises:
            TypeError, ValueError: ``step`` is not an int >= 0.
        """
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise TypeError(f"EMATeacher: step must be an int (the global step), got {type(step).__name__}")
        if step < 0:
            raise ValueError(f"EMATeacher: step must be >= 0, got {step}")
        return min(1.0 - 1.0 / (int(step) + 1), self.gamma)

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> float:
        """Moves the teacher towards ``student`` (same architecture as at construction).

        Args:
            student: the network the teacher was made from, after its optimizer step.
            step: the global step ``t`` (>= 0) that sets the warm-up decay.

        Returns:
            the decay used, ``min(1 - 1/(t + 1), gamma)``.

        Raises:
            TypeError, ValueError: a bad ``step``; a student whose parameters or buffers do not
                match the teacher's by name, shape or device.
        """
        if not isinstance(student, nn.Module):
            raise TypeError(f"EMATeacher.update: student must be an nn.Module, got {type(student).__name__}")
        decay = self.decay(step)
        params = _named_pairs(
            "parameters", list(self.teacher.named_parameters()), list(student.named_parameters())
        )
        ema, src = [], []
        for t, s in params:
            if t.is_floating_point():
                ema.append(t)
                src.append(s.detach())
            else:
                t.copy_(s)
        self._decay.fill_(decay)
        ema_update_(ema, src, self._decay, backend=self.backend)
        for t, s in _named_pairs("buffers", list(self.teacher.named_buffers()), list(student.named_buffers())):
            t.copy_(s)
        self.step = int(step)
        return decay

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to resume: the teacher's weights and buffers, ``gamma`` and ``step``."""
        return {"teacher": self.teacher.state_dict(), "gamma": self.gamma, "step": self.step}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restores a :meth:`state_dict` (the teacher must have the same architecture).

        Raises:
            KeyError: an entry of :meth:`state_dict` is missing.
            RuntimeError: the weights do not fit the teacher (from ``nn.Module.load_state_dict``).
        """
        missing = [k for k in ("teacher", "gamma", "step") if k not in state]
        if missing:
            raise KeyError(f"EMATeacher.load_state_dict: the state lacks {missing}; expected EMATeacher.state_dict()")
        self.teacher.load_state_dict(state["teacher"])
        self.gamma = self._check_gamma(state["gamma"])
        self.step = None if state["step"] is None else int(state["step"])

    def __repr__(self) -> str:
        return f"EMATeacher(gamma={self.gamma}, step={self.step}, teacher={type(self.teacher).__name__})"
