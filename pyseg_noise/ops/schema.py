"""The op schemas of ``csrc/ops.cpp``, for when ``pyseg_noise._C`` is not loaded.

The C++ extension declares every op once (``TORCH_LIBRARY(pyseg_noise, m)``).
Without it (a pure-Python install with ``PYSEG_NOISE_NO_EXTENSION=1``, or a
failed build) the same schemas are defined here with ``torch.library``, so the
Triton kernels can still register as the ops' CUDA implementation and the fake
functions and autograd formulas of ``pyseg_noise/ops/*.py`` attach to the same
ops. ``tests/ops/test_schema.py`` checks that these strings equal the C++ ones.
"""
from __future__ import annotations

import torch

__all__ = ["SCHEMAS", "define_schemas"]

SCHEMAS = (
    "teacher_uncertainty(Tensor teacher_logits) -> (Tensor prob, Tensor entropy)",
    "softmax_accumulate_(Tensor(a!) prob_sum, Tensor logits) -> ()",
    "prob_entropy(Tensor prob_sum, float scale) -> (Tensor prob, Tensor entropy)",
    "pint_pixel_loss(Tensor logits, Tensor target, Tensor teacher_prob, bool hard, bool normalize_entropy, "
    "str reduction) -> Tensor",
    "pint_pixel_loss_backward(Tensor grad, Tensor logits, Tensor target, Tensor teacher_prob, bool hard, "
    "bool normalize_entropy, str reduction) -> Tensor",
    "pint_pixel_loss_with_grad(Tensor logits, Tensor target, Tensor teacher_prob, bool hard, "
    "bool normalize_entropy, str reduction) -> (Tensor loss, Tensor grad_logits)",
    "slice_uncertainty(Tensor entropy, int slice_dim) -> Tensor",
    "pint_image_loss(Tensor logits, Tensor target, Tensor teacher_prob, bool hard, bool normalize_entropy, "
    "int slice_dim, str reduction) -> (Tensor loss, Tensor slice_alpha)",
    "pint_image_loss_backward(Tensor grad, Tensor logits, Tensor target, Tensor teacher_prob, "
    "Tensor slice_alpha, bool hard, int slice_dim, str reduction) -> Tensor",
    "loss_attention(Tensor logits_a, Tensor logits_b, float sigma2, int kernel_size, int spatial_dims, "
    "int slice_dim) -> Tensor",
    "attended_cross_entropy(Tensor logits, Tensor target, Tensor attention, str reduction) -> Tensor",
    "attended_cross_entropy_backward(Tensor grad, Tensor logits, Tensor target, Tensor attention, "
    "str reduction) -> Tensor",
    "tsman_loss(Tensor logits_a, Tensor logits_b, Tensor target, float sigma2, int kernel_size, "
    "int spatial_dims, int slice_dim, str reduction) -> (Tensor loss, Tensor attention)",
    "tsman_loss_backward(Tensor grad, Tensor logits_a, Tensor logits_b, Tensor target, Tensor attention, "
    "str reduction) -> (Tensor grad_a, Tensor grad_b)",
    "ema_update_(Tensor(a!)[] ema_tensors, Tensor[] tensors, Tensor decay) -> ()",
)

_LIBRARY = None


def define_schemas() -> None:
    """Define every schema of :data:`SCHEMAS` in the ``pyseg_noise`` namespace (once).

    Only for a process where ``pyseg_noise._C`` did not load: the extension
    defines the same names, and a second definition would be refused.
    """
    global _LIBRARY
    if _LIBRARY is not None:
        return
    lib = torch.library.Library("pyseg_noise", "DEF")  # noqa: TOR901 (kept alive below)
    for schema in SCHEMAS:
        lib.define(schema)
    _LIBRARY = lib
