"""The mean teacher's EMA update (SPEC 7) as one multi-tensor op.

``decay`` reaches the kernel as a 0-d tensor the kernel reads, never as a
compile-time constant: under ``torch.compile`` a decay that changes every
step (the warm-up schedule) recompiles nothing.
"""
from __future__ import annotations

import numbers
import operator
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from pyseg_noise.ops import checks, reference
from pyseg_noise.ops.dispatch import HAS_CPU_EXTENSION, op_runner, resolve_backend

__all__ = ["ema_update_"]


# The schemas exist with or without pyseg_noise._C (pyseg_noise.ops.schema defines them then).
@torch.library.register_fake("pyseg_noise::ema_update_")
def _(ema_tensors, tensors, decay):
    return None


def _check_lists(op: str, ema_tensors, tensors) -> None:
    for name, seq in (("ema_tensors", ema_tensors), ("tensors", tensors)):
        if isinstance(seq, Tensor) or not isinstance(seq, (list, tuple)):
            raise TypeError(f"{op}: {name} must be a list or tuple of tensors, got {type(seq).__name__}")
    if len(ema_tensors) != len(tensors):
        raise ValueError(
            f"{op}: ema_tensors has {len(ema_tensors)} tensors but tensors has {len(tensors)}; "
            "they must pair up one to one"
        )


def _check_pairs(op: str, ema_tensors, tensors) -> None:
    """Every pair: tensors, floating, same shape, one device (a few microseconds per pair)."""
    for i, (e, t) in enumerate(zip(ema_tensors, tensors)):
        checks.check_tensor(op, f"ema_tensors[{i}]", e)
        checks.check_tensor(op, f"tensors[{i}]", t)
        if not e.is_floating_point():
            raise TypeError(f"{op}: ema_tensors[{i}] must be floating point (an EMA of integers is not defined), got {e.dtype}")
        if not t.is_floating_point():
            raise TypeError(f"{op}: tensors[{i}] must be floating point, got {t.dtype}")
        if e.shape != t.shape:
            raise ValueError(
                f"{op}: ema_tensors[{i}] has shape {tuple(e.shape)} but tensors[{i}] has shape {tuple(t.shape)} "
                "(first mismatch)"
            )
        if t.device != e.device:
            raise ValueError(
                f"{op}: tensors[{i}] is on '{t.device}' but ema_tensors[{i}] is on '{e.device}'; "
                "put all of them on one device"
            )
        if e.device != ema_tensors[0].device:
            raise ValueError(
                f"{op}: ema_tensors[{i}] is on '{e.device}' but ema_tensors[0] is on '{ema_tensors[0].device}'; "
                "put all of them on one device"
            )


_is_cpu = operator.attrgetter("is_cpu")


def _all_on_cpu(ema_tensors, tensors) -> bool:
    """Whether both lists are non-empty and hold only CPU tensors (one attribute read each)."""
    if not ema_tensors:
        return False
    try:
        return all(map(_is_cpu, ema_tensors)) and all(map(_is_cpu, tensors))
    except AttributeError:  # not a tensor: the full checks name it
        return False


def _decay_tensor(op: str, decay, device: Optional[torch.device] = None) -> Tensor:
    if isinstance(decay, Tensor):
        if decay.numel() != 1 or decay.dim() > 1:
            raise ValueError(f"{op}: decay must be a float or a 0-d tensor, got a tensor of shape {tuple(decay.shape)}")
        if not decay.is_floating_point():
            raise TypeError(f"{op}: decay must be a floating point tensor, got {decay.dtype}")
        if decay.device.type == "meta" and device is not None and device.type != "meta":
            raise ValueError(f"{op}: decay is on 'meta' (a tensor without a value) but the tensors are on "
                             f"'{device}'; pass a float or a 0-d tensor that holds a value")
        # Reading the value synchronises with its device: an argument check the user can turn off.
        if checks.value_checks_enabled():
            value = float(decay)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{op}: decay must lie in [0, 1], got {value}")
        return decay.detach().reshape(())
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real):
        raise TypeError(f"{op}: decay must be a float or a 0-d tensor, got {type(decay).__name__}")
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"{op}: decay must lie in [0, 1], got {decay}")
    return torch.tensor(float(decay), dtype=torch.float64)


def ema_update_(
    ema_tensors: Sequence[Tensor],
    tensors: Sequence[Tensor],
    decay: Union[float, Tensor],
    *,
    backend: Optional[str] = None,
) -> None:
    """In place, for every pair: ``ema <- decay * ema + (1 - decay) * tensor`` (SPEC 7).

    One call updates a whole model's parameter list: the tensors may differ in size and in
    floating dtype (also between an ema tensor and its source; the update is computed in the ema
    tensor's math type, float32 for float16/bfloat16, as ``torch._foreach_lerp_`` with weight
    ``1 - decay``). Runs without recording gradients.

    Args:
        ema_tensors (list[Tensor]): the running averages, updated in place (same storage afterwards).
        tensors (list[Tensor]): the new values, one per ema tensor, of the same shape.
        decay: a float or a 0-d floating tensor in [0, 1]. Under ``torch.compile`` pass a 0-d
            tensor: its value is read by the kernel, so a changing decay recompiles nothing.
        backend: None (by device), "reference", "cpu" or "triton".

    Raises:
        TypeError: a list that is not a list, an integer (or other non-floating) tensor, a decay
            that is not a float or a floating tensor.
        ValueError: lists of different lengths, the first pair whose shapes differ (named by index,
            with both shapes), tensors on different devices, decay outside [0, 1].
        RuntimeError: the requested backend cannot run here.

    Example:
        >>> ema_update_(list(teacher.parameters()), list(student.parameters()), 0.99)
    """
    op = "ema_update_"
    _check_lists(op, ema_tensors, tensors)
    ema_tensors, tensors = list(ema_tensors), list(tensors)
    if (
        backend in (None, "cpu")
        and HAS_CPU_EXTENSION
        and not torch.compiler.is_compiling()  # traced once: the full checks cost nothing per step
        and _all_on_cpu(ema_tensors, tensors)
    ):
        # The C++ op checks every pair itself (floating, same shape), before it
        # changes anything: the per-pair Python checks (a few microseconds each,
        # as much as updating a small model's whole list) run only when it
        # refuses, to raise the error every backend raises, in the same order.
        try:
            decay_t = _decay_tensor(op, decay, ema_tensors[0].device)
            with torch.no_grad():
                torch.ops.pyseg_noise.ema_update_(ema_tensors, tensors, decay_t)
        except (RuntimeError, TypeError, ValueError):
            _check_pairs(op, ema_tensors, tensors)
            raise
        return
    _check_pairs(op, ema_tensors, tensors)
    decay_t = _decay_tensor(op, decay, ema_tensors[0].device if len(ema_tensors) else None)
    if len(ema_tensors) == 0:
        return
    which = resolve_backend(op, ema_tensors, backend)
    with torch.no_grad():
        if which == "reference":
            reference.ema_update_(ema_tensors, tensors, decay_t)
        else:
            op_runner(op, which)(ema_tensors, tensors, decay_t)
