"""Triton kernels of pyseg_noise (installed as ``pyseg_noise.kernels``).

``IMPLS`` maps every op name of ``csrc/ops.cpp`` to its launcher, which takes
exactly the schema's positional arguments and returns exactly its outputs;
``pyseg_noise.ops`` registers them as the ops' "cuda" kernels and calls them
directly for CPU tensors under Triton's interpreter. Without a usable
``triton`` this package still imports: ``IMPLS`` is empty and
``TRITON_ERROR`` says why.

The kernels are built for the interpreter when ``TRITON_INTERPRET=1`` is set
before this package is first imported (``INTERPRETED``); otherwise they need
CUDA tensors.

Example:
    >>> from pyseg_noise.kernels import IMPLS  # doctest: +SKIP
    >>> loss = IMPLS["pint_pixel_loss"](logits, target, teacher_prob, False, False, "mean")  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

IMPLS: Dict[str, Callable] = {}
TRITON_ERROR: Optional[str] = None
INTERPRETED = False

try:
    import triton  # noqa: F401
    import triton.language  # noqa: F401
except Exception as exc:  # ImportError, or a broken install failing at import
    TRITON_ERROR = f"triton could not be imported: {exc!r}"
else:
    from . import ema, pint, tsman
    from .launch import INTERPRETED

    IMPLS = {
        "teacher_uncertainty": pint.teacher_uncertainty,
        "softmax_accumulate_": pint.softmax_accumulate_,
        "prob_entropy": pint.prob_entropy,
        "slice_uncertainty": pint.slice_uncertainty,
        "pint_pixel_loss": pint.pint_pixel_loss,
        "pint_pixel_loss_backward": pint.pint_pixel_loss_backward,
        "pint_pixel_loss_with_grad": pint.pint_pixel_loss_with_grad,
        "pint_image_loss": pint.pint_image_loss,
        "pint_image_loss_backward": pint.pint_image_loss_backward,
        "loss_attention": tsman.loss_attention,
        "attended_cross_entropy": tsman.attended_cross_entropy,
        "attended_cross_entropy_backward": tsman.attended_cross_entropy_backward,
        "tsman_loss": tsman.tsman_loss,
        "tsman_loss_backward": tsman.tsman_loss_backward,
        "ema_update_": ema.ema_update_,
    }


def require_triton() -> None:
    """Raise a clear ImportError when the Triton kernels are unavailable."""
    if TRITON_ERROR is not None:
        raise ImportError(
            f"pyseg_noise.kernels needs the `triton` package (pip install 'pyseg-noise[triton]'): {TRITON_ERROR}"
        )


__all__ = ["IMPLS", "TRITON_ERROR", "INTERPRETED", "require_triton"]
