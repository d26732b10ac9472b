"""The published numbers that ``reproduce`` prints beside its own.

TSMAN (Min et al., AAAI 2019) is at the end of this file.

PINT (Shi & Wu, MICCAI 2021), Table 1: LA, 80 training / 20 test scans, the
training labels of 25 %, 50 % or 75 % of the training cases eroded or dilated
by 5-18 voxels; Dice (%) and ASD (voxels) against the clean test labels, mean
± std over 3 repetitions. The clean-label V-Net (§3.2 text: "the upper bound
of average Dice 91.14% and average ASD 1.52 voxels") has no std in the paper.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

__all__ = ["PINT_TABLE1", "PINT_CLEAN_VNET", "PINT_TABLE1_NAMES", "paper_entry", "TSMAN_TABLE1",
           "TSMAN_TABLE1_ROWS", "TSMAN_TABLE2", "TSMAN_TABLE2_ROWS", "TSMAN_METRIC_NOTE"]

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


# ----------------------------------------------------------------------------- TSMAN
#: what TSMAN's Tables 1 and 2 report: not Dice, but HVSMR 2016's "overall score"
TSMAN_METRIC_NOTE = (
    "the paper's Tables 1 and 2 report only HVSMR 2016's overall score (the challenge platform's combination "
    "of Dice, ADB and HDD over myocardium and blood pool; higher is better), not Dice/ASD/HD; the score sits "
    "beside our numbers to compare the ranking of the rows, not the values"
)

#: Table 1 rows, in the paper's order: key -> name. ``model<t>``: base model A/B/C alone; ``md``: model
#: distillation over A, B, C; ``dd<t>``: data distillation of one base model (the "(DD)" rows); ``hd``:
#: hierarchical distillation (the "(DD)" row's MD column)
TSMAN_TABLE1_ROWS: Dict[str, str] = {
    "model0": "A", "model1": "B", "model2": "C", "md": "MD (A+B+C)",
    "dd0": "DD(A)", "dd1": "DD(B)", "dd2": "DD(C)", "hd": "HD (DD + MD)",
}

#: Table 1 (HVSMR 2016, overall score): labelled fraction xi -> row key -> score
TSMAN_TABLE1: Dict[float, Dict[str, float]] = {
    0.3: {"model0": 0.005, "model1": 0.154, "model2": 0.171, "md": 0.184,
          "dd0": 0.104, "dd1": 0.163, "dd2": 0.168, "hd": 0.191},
    0.5: {"model0": 0.136, "model1": 0.279, "model2": 0.350, "md": 0.359,
          "dd0": 0.196, "dd1": 0.330, "dd2": 0.356, "hd": 0.387},
    0.8: {"model0": 0.743, "model1": 0.764, "model2": 0.797, "md": 0.771,
          "dd0": 0.785, "dd1": 0.775, "dd2": 0.806, "hd": 0.810},
}

#: Table 2 rows (attentions added from the loss layer back, as in the paper): key -> (name,
#: attention_points, loss_attention); f1, f2 channel attention, f3 spatial attention, f4 loss attention
TSMAN_TABLE2_ROWS: Dict[str, Tuple[str, Tuple[str, ...], bool]] = {
    "baseline": ("Baseline (no attention)", (), False),
    "f4": ("f4 (LA)", (), True),
    "f3+f4": ("f3 + f4 (SA, LA)", ("f3",), True),
    "f2+f3+f4": ("f2 + f3 + f4 (CA, SA, LA)", ("f2", "f3"), True),
    "tsman": ("f1 + f2 + f3 + f4 (TSMAN)", ("f1", "f2", "f3"), True),
}

#: Table 2 (HVSMR 2016, overall score; xi not stated): row key -> score
TSMAN_TABLE2: Dict[str, float] = {
    "baseline": -1.167, "f4": -0.737, "f3+f4": -0.601, "f2+f3+f4": -0.576, "tsman": -0.561,
}
