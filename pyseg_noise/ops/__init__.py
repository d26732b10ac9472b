"""Fused ops of pyseg_noise (see SPEC.md). Every function takes ``*, backend=None``:
None picks by device (C++ on CPU, Triton on CUDA), "reference", "cpu" and
"triton" force one."""
from pyseg_noise.ops.checks import set_value_checks
from pyseg_noise.ops.dispatch import BACKENDS, HAS_CPU_EXTENSION, register_triton_for_cuda
from pyseg_noise.ops.ema import ema_update_
from pyseg_noise.ops.pint import (
    TeacherUncertaintyAccumulator,
    pint_image_loss,
    pint_pixel_loss,
    slice_uncertainty,
    teacher_uncertainty,
)
from pyseg_noise.ops.tsman import attended_cross_entropy, loss_attention, tsman_loss

register_triton_for_cuda()

__all__ = [
    "BACKENDS",
    "HAS_CPU_EXTENSION",
    "TeacherUncertaintyAccumulator",
    "attended_cross_entropy",
    "ema_update_",
    "loss_attention",
    "pint_image_loss",
    "pint_pixel_loss",
    "set_value_checks",
    "slice_uncertainty",
    "teacher_uncertainty",
    "tsman_loss",
]
