"""The published numbers that ``reproduce`` prints beside its own.

PINT (Shi & Wu, MICCAI 2021), Table 1: LA, 80 training / 20 test scans, the
training labels of 25 %, 50 % or 75 % of the training cases eroded or dilated
by 5-18 voxels; Dice (%) and ASD (voxels) against the clean test labels, mean
± std over 3 repetitions. The clean-label V-Net (§3.2 text: "the upper bound
of average Dice 91.14% and average ASD 1.52 voxels") has no std in the paper.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

__all__ = ["PINT_TABLE1", "PINT_CLEAN_VNET", "PINT_TABLE1_NAMES", "paper_entry"]

#: method -> noise rate -> (Dice % mean, Dice % std, ASD mean, ASD std)
PINT_TABLE1: Dict[str, Dict[float, Tuple[float, float, float, float]]] = {
    "vnet": {0.25: (86.34, 0.59, 2.72, 0.36), 0.50: (82.55, 0.26, 3.35, 0.01), 0.75: (72.76, 1.00, 5.48, 0.06)},
    "reweight": {0.25: (87.31, 0.28, 2.46, 0.35), 0.50: (83.24, 0.70, 3.20, 0.17), 0.75: (73.02, 0.32, 5.30, 0.12)},
    "trinet": {0.25: (87.92, 0.44, 2.37, 0.27), 0.50: (84.79, 0.44, 2.83, 0.16), 0.75: (73.88, 0.46, 5.22, 0.11)},
    "pickandlearn": {0.25: (88.47, 0.30, 1.92, 0.24), 0.50: (85.09, 0.56, 2.73, 0.20),
                     0.75: (73.30, 0.27, 5.11, 0.08)},
    "pnt": {0.25: (88.29, 0.43, 1.82, 0.11), 0.50: (86.16, 0.69, 2.43, 0.05), 0.75: (74.92, 0.19, 5.16, 0.01)},
    "int": {0.25: (89.24, 0.21, 1.75, 0.21), 0.50: (85.78, 0.55, 2.56, 0.12), 0.75: (74.42, 0.23, 5.20, 0.08)},
    "pint": {0.25: (90.49, 0.39, 1.60, 0.06), 0.50: (89.04, 0.71, 1.92, 0.17), 0.75: (76.25, 0.44, 4.56, 0.18)},
}

#: the clean-label V-Net: (Dice %, None, ASD, None)
PINT_CLEAN_VNET: Tuple[float, Optional[float], float, Optional[float]] = (91.14, None, 1.52, None)

#: the row names of Table 1
PINT_TABLE1_NAMES = {
    "vnet": "V-Net",
    "reweight": "Reweighting",
    "trinet": "Tri-network",
    "pickandlearn": "Pick-and-learn",
    "pnt": "PNT",
    "int": "INT",
    "pint": "PINT",
}


def paper_entry(method: str, noise_rate: Optional[float]):
    """Table 1's ``(dice, dice_std, asd, asd_std)`` for ``method`` at ``noise_rate`` (None = clean labels), or None."""
    if noise_rate is None or noise_rate == 0:
        return PINT_CLEAN_VNET if method == "vnet" else None
    row = PINT_TABLE1.get(method, {})
    for rate, entry in row.items():
        if abs(rate - noise_rate) < 1e-9:
            return entry
    return None
