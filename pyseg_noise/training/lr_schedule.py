"""Learning-rate policies as pure functions of the iteration.

A function of the iteration (rather than a stateful scheduler object) is what
makes a resumed run use exactly the learning rates of an uninterrupted one:
the only scheduler state is the iteration, which the checkpoint holds.
"""
from __future__ import annotations

from .config import OptimConfig

__all__ = ["learning_rate", "step_lr"]


def step_lr(base_lr: float, iteration: int, step: int, gamma: float) -> float:
    """``base_lr * gamma ** (iteration // step)`` (PINT: 0.01, divided by 10 every 2500 iterations).

    Example:
        >>> [step_lr(0.01, t, 2500, 0.1) for t in (0, 2499, 2500)]
        [0.01, 0.01, 0.001]
    """
    return base_lr * gamma ** (iteration // step)


def learning_rate(optim: OptimConfig, iteration: int, total: int) -> float:
    """The learning rate of 0-based ``iteration`` of a ``total``-iteration run under ``optim``'s policy.

    Policies: ``"step"`` (:func:`step_lr`), ``"poly"`` (``lr * (1 - t / total) ** poly_power``)
    and ``"constant"``.
    """
    if optim.lr_policy == "step":
        return step_lr(optim.lr, iteration, optim.lr_step, optim.lr_gamma)
    if optim.lr_policy == "poly":
        return optim.lr * max(1.0 - iteration / max(total, 1), 0.0) ** optim.poly_power
    if optim.lr_policy == "constant":
        return optim.lr
    raise ValueError(f"unknown lr_policy {optim.lr_policy!r}")
