"""Detecting a collapsed segmentation: a method that ends up predicting (almost) one class everywhere.

At small scale a mean-teacher loss can stay stuck on background: the lagging
teacher's pseudo labels say "background", the student follows, and Dice ends
near 0 while plain cross-entropy learns. ``reproduce`` runs every method beside
the clean- and noisy-label V-Nets on the same budget and flags such runs with
this detector instead of letting a mean over collapsed runs pass for a result.

A run is flagged when, averaged over the validation cases,

* its predicted foreground fraction is below ``min_fg_ratio`` (10 %) of the
  reference foreground fraction ("predicts background everywhere"), or above
  ``max(0.5, max_fg_ratio * reference)`` ("predicts foreground everywhere"); or
* a reference run (the clean-label V-Net on the same budget) reaches Dice >=
  ``reference_min_dice`` (0.5) but this run stays below ``min_dice`` (0.2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

__all__ = ["CollapseVerdict", "detect_collapse"]


@dataclass(frozen=True)
class CollapseVerdict:
    """``collapsed`` and a one-line ``reason`` (empty when not collapsed)."""

    collapsed: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.collapsed


def detect_collapse(summary: Mapping[str, float], reference: Optional[Mapping[str, float]] = None, *,
                    min_fg_ratio: float = 0.1, max_fg_ratio: float = 5.0, min_dice: float = 0.2,
                    reference_min_dice: float = 0.5,
                    reference_name: str = "the clean-label V-Net on the same budget") -> CollapseVerdict:
    """Flag a run whose predictions collapsed (see the module docstring).

    Args:
        summary: the run's validation summary with ``"dice"`` (0-1), ``"fg_pred"``, ``"fg_ref"``
            (mean foreground fractions of prediction and clean reference).
        reference: the clean-label baseline's summary on the same budget, if any.
        min_fg_ratio, max_fg_ratio, min_dice, reference_min_dice: thresholds.
        reference_name: how the reason names the reference run.

    Returns:
        :class:`CollapseVerdict`.

    Example:
        >>> detect_collapse({"dice": 0.01, "fg_pred": 0.0004, "fg_ref": 0.07}).reason
        'predicts background almost everywhere (0.04% foreground vs 7.00% in the clean labels)'
    """
    dice, fg_pred, fg_ref = float(summary["dice"]), float(summary["fg_pred"]), float(summary["fg_ref"])
    if fg_ref > 0 and fg_pred < min_fg_ratio * fg_ref:
        return CollapseVerdict(True, f"predicts background almost everywhere ({100 * fg_pred:.2f}% foreground vs "
                                     f"{100 * fg_ref:.2f}% in the clean labels)")
    if fg_pred > max(0.5, max_fg_ratio * fg_ref):
        return CollapseVerdict(True, f"predicts foreground almost everywhere ({100 * fg_pred:.1f}% foreground vs "
                                     f"{100 * fg_ref:.1f}% in the clean labels)")
    if reference is not None:
        ref_dice = float(reference["dice"])
        if ref_dice >= reference_min_dice and dice < min_dice:
            return CollapseVerdict(True, f"Dice {dice:.3f} while {reference_name} reaches {ref_dice:.3f}")
    return CollapseVerdict(False, "")
