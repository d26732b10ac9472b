"""Problem sizes: the papers' settings, a sweep over volume size, and a smoke size.

* ``paper``: the setting a paper trains with (PINT: B=4, C=2, 112x112x80 crops,
  M=4 teacher passes; TSMAN: B=4, C=3, 64^3 patches; the EMA: VNet and
  DenseVoxNet parameter lists; metrics: one 112x112x80 LA-sized mask pair).
* ``sweep``: the paper's B, C and M over volumes from 32^3 to 128x128x96, so a
  log-log plot shows how cost grows with voxels. It contains the PINT paper size
  (112x112x80), so the PINT targets are judged in a sweep run too.
* ``smoke``: a few thousand voxels, for tests and debugging.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["Size", "SIZE_SETS", "SWEEP_VOLUMES", "SMOKE_VOLUME", "volume_sizes"]

SIZE_SETS = ("smoke", "paper", "sweep")
SWEEP_VOLUMES: Tuple[Tuple[int, int, int], ...] = (
    (32, 32, 32),
    (64, 64, 64),
    (96, 96, 64),
    (112, 112, 80),
    (128, 128, 96),
)
SMOKE_VOLUME = (16, 16, 8)


@dataclass(frozen=True)
class Size:
    """One problem size.

    Attributes:
        label: how the report names it, e.g. ``"B4 C2 112x112x80 M4"``.
        dims: the numbers the inputs are built from (``B``, ``C``, ``S``, ``M``, ...).
        voxels: the x axis of the scaling plot: B * prod(S) (elements for the EMA).
        paper: whether this is the paper's setting (targets are judged there).
    """

    label: str
    dims: Dict[str, object] = field(hash=False, compare=False)
    voxels: int
    paper: bool = False


def _volume_label(B: int, C: int, S: Sequence[int], M: Optional[int]) -> str:
    label = f"B{B} C{C} " + "x".join(str(s) for s in S)
    return label + (f" M{M}" if M is not None else "")


def volume_sizes(
    which: str,
    *,
    B: int,
    C: int,
    paper_volume: Tuple[int, ...],
    M: Optional[int] = None,
) -> List[Size]:
    """The sizes of ``which`` (one of ``SIZE_SETS``) for an op on volumes ``Tensor[B, C, *S]``.

    The smoke size uses B=1 (and M=2) so that a test runs in milliseconds.

    Raises:
        ValueError: ``which`` is not a known size set.
    """
    if which == "smoke":
        volumes, b, m = [SMOKE_VOLUME], 1, (2 if M is not None else None)
    elif which == "paper":
        volumes, b, m = [paper_volume], B, M
    elif which == "sweep":
        volumes, b, m = list(SWEEP_VOLUMES), B, M
    else:
        raise ValueError(f"sizes must be one of {SIZE_SETS}, got {which!r}")
    out = []
    for S in volumes:
        dims = {"B": b, "C": C, "S": tuple(S)}
        if m is not None:
            dims["M"] = m
        paper = b == B and tuple(S) == tuple(paper_volume) and m == M
        out.append(Size(_volume_label(b, C, S, m), dims, b * math.prod(S), paper))
    return out
