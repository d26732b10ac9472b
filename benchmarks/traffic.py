"""The fewest bytes each op must read and write: the numerator of "achieved bandwidth".

One table, ``MIN_BYTES[op][mode](inputs) -> bytes``, over the inputs a benchmark
made (so an int64 target counts 8 bytes per voxel, a bfloat16 logit 2). It counts
each input read once and each output written once — what any implementation,
however fused, has to move — and nothing a particular kernel adds (halo re-reads,
intermediates between passes, see docs/KERNELS.md for those).

Rules shared by the rows:

* A loss with ``reduction="mean"`` writes one scalar in the forward; its backward
  reads the same inputs again (the upstream gradient is only known then) and
  writes a gradient the size of each differentiated input. ``fwdbwd`` is the sum
  of the two.
* Teacher inputs (``teacher_prob``, the attention) are read, never differentiated.
* ``TeacherUncertaintyAccumulator`` sees one pass at a time: each ``add`` reads the
  pass and reads and writes the running sum (kept in float32), then ``compute``
  reads the sum and writes prob and entropy.
* ``ema_update_`` reads the EMA tensor and the new value and writes the EMA back:
  12 bytes per float32 element.
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping

import torch

__all__ = ["MIN_BYTES", "min_bytes", "nbytes"]


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _voxel_map(logits: torch.Tensor) -> int:
    """Bytes of a Tensor[B, *S] in the logits' dtype."""
    return logits.numel() // logits.shape[1] * logits.element_size()


def _accumulator_bytes(like: torch.Tensor) -> int:
    # The running sum is float32 (float64 for float64 passes).
    return like.numel() * (8 if like.dtype == torch.float64 else 4)


def _pint_loss_fwd(x) -> int:
    return nbytes(x["logits"]) + nbytes(x["target"]) + nbytes(x["teacher_prob"]) + x["logits"].element_size()


def _pint_loss_bwd(x) -> int:
    return nbytes(x["logits"]) + nbytes(x["target"]) + nbytes(x["teacher_prob"]) + nbytes(x["logits"])


def _attended_ce_fwd(x) -> int:
    return nbytes(x["logits"]) + nbytes(x["target"]) + nbytes(x["attention"]) + x["logits"].element_size()


def _attended_ce_bwd(x) -> int:
    return nbytes(x["logits"]) + nbytes(x["target"]) + nbytes(x["attention"]) + nbytes(x["logits"])


def _tsman_fwd(x) -> int:
    a, b = x["logits_a"], x["logits_b"]
    # the attention map the backward needs is an output too
    return nbytes(a) + nbytes(b) + nbytes(x["target"]) + _voxel_map(a) + a.element_size()


def _tsman_bwd(x) -> int:
    a, b = x["logits_a"], x["logits_b"]
    return nbytes(a) + nbytes(b) + nbytes(x["target"]) + _voxel_map(a) + nbytes(a) + nbytes(b)


def _with_fwdbwd(table: Dict[str, Callable]) -> Dict[str, Callable]:
    fwd, bwd = table["fwd"], table["bwd"]
    return {**table, "fwdbwd": lambda x: fwd(x) + bwd(x)}


def _teacher_uncertainty(x) -> int:
    t = x["teacher_logits"]
    first = t[0]
    return nbytes(t) + nbytes(first) + _voxel_map(first)


def _accumulator(x) -> int:
    passes = x["passes"]
    acc = _accumulator_bytes(passes[0])
    adds = sum(nbytes(p) + 2 * acc for p in passes)
    return adds + acc + nbytes(passes[0]) + _voxel_map(passes[0])


def _slice_uncertainty(x) -> int:
    e = x["entropy"]
    n_slices = 1 if e.dim() == 3 else e.shape[-1]
    return nbytes(e) + e.shape[0] * n_slices * e.element_size()


def _loss_attention(x) -> int:
    a, b = x["logits_a"], x["logits_b"]
    return nbytes(a) + nbytes(b) + _voxel_map(a)


def _ema(x) -> int:
    return sum(2 * nbytes(e) + nbytes(s) for e, s in zip(x["ema"], x["src"]))


#: op -> mode -> inputs -> the fewest bytes the op reads + writes.
MIN_BYTES: Mapping[str, Mapping[str, Callable[[dict], int]]] = {
    "teacher_uncertainty": {"fwd": _teacher_uncertainty},
    "TeacherUncertaintyAccumulator": {"fwd": _accumulator},
    "pint_pixel_loss": _with_fwdbwd({"fwd": _pint_loss_fwd, "bwd": _pint_loss_bwd}),
    "slice_uncertainty": {"fwd": _slice_uncertainty},
    "pint_image_loss": _with_fwdbwd({"fwd": _pint_loss_fwd, "bwd": _pint_loss_bwd}),
    "loss_attention": {"fwd": _loss_attention},
    "attended_cross_entropy": _with_fwdbwd({"fwd": _attended_ce_fwd, "bwd": _attended_ce_bwd}),
    "tsman_loss": _with_fwdbwd({"fwd": _tsman_fwd, "bwd": _tsman_bwd}),
    "ema_update_": {"fwd": _ema},
}


def min_bytes(op: str, mode: str, inputs: dict):
    """The fewest bytes ``op`` moves in ``mode`` on ``inputs``; None where the idea does
    not apply (the metrics: their cost is search, not streaming)."""
    table = MIN_BYTES.get(op)
    if table is None or mode not in table:
        return None
    return int(table[mode](inputs))
