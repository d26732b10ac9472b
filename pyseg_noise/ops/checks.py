"""Argument validation shared by every backend, with messages that name the
argument and what was expected.

Shape, dtype and device checks read only metadata. Value checks (labels in
range, no NaN in teacher probabilities) read the data. The C++ kernels do them
inside their single pass and raise after it; the Triton kernels do them inside
their single pass too, into an error buffer that :func:`run_checked` reads once
per call (one small device-to-host read); the passes over the data here
(:func:`check_target_values`, :func:`check_teacher_prob_values`) serve only the
eager reference. ``set_value_checks(False)`` turns the Triton read and those
passes off (the kernels then give NaN for a bad label, never a clamped one);
under ``torch.compile`` they are off too.
"""
from __future__ import annotations

import functools
import math
import numbers
import os

import torch

_VALUE_CHECKS = True


def set_value_checks(enabled: bool) -> None:
    """Turns the data-reading checks (label range, NaN) of non-CPU backends on or off."""
    global _VALUE_CHECKS
    _VALUE_CHECKS = bool(enabled)


def value_checks_enabled() -> bool:
    return _VALUE_CHECKS and not torch.compiler.is_compiling()


REDUCTIONS = ("mean", "sum", "none")


def check_reduction(op: str, reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def check_tensor(op: str, name: str, x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(x).__name__}")


def check_float(op: str, name: str, x: torch.Tensor) -> None:
    check_tensor(op, name, x)
    if not x.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating point tensor (float16/bfloat16/float32/float64), got {x.dtype}")


_INT64_MAX = 2**63 - 1


@functools.lru_cache(maxsize=None)
def _host_memory_bytes() -> int:
    """Physical memory of this machine (0 where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 0


def _device_memory_bytes(device: torch.device) -> int:
    if device.type == "cpu":
        return _host_memory_bytes()
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(device).total_memory)
    return 0  # meta and other devices: no memory bound (the 64-bit bound still applies)


def check_size(op: str, name: str, x: torch.Tensor) -> None:
    """Refuse, before any allocation, a tensor whose op results cannot exist.

    The results (outputs, gradients, contiguous or float32 working copies) of every op
    are at most ``x.numel()`` elements of ``max(x.element_size(), 4)`` bytes. A dense
    tensor always passes (it is in memory already); an expanded or otherwise
    overlapping view can describe far more elements than its storage holds. Refused
    when that byte count overflows a 64-bit size, or exceeds the memory of the
    tensor's device (CPU: physical memory; CUDA: the device's total memory).
    """
    if torch.compiler.is_compiling():  # symbolic shapes: no guards on sizes
        return
    elements = math.prod(int(s) for s in x.shape)
    itemsize = max(x.element_size(), 4)
    needed = elements * itemsize  # a Python int: cannot overflow
    shape = tuple(x.shape)
    if needed > _INT64_MAX:
        raise ValueError(
            f"{op}: {name} of shape {shape} is too large: results of {elements} elements x {itemsize} bytes "
            "overflow a 64-bit size; refused before allocating"
        )
    memory = _device_memory_bytes(x.device)
    if memory and needed > memory:
        raise ValueError(
            f"{op}: {name} of shape {shape} is too large: its results need {needed / 2**30:.1f} GiB "
            f"({elements} elements x {itemsize} bytes) but device '{x.device}' has {memory / 2**30:.1f} GiB of "
            "memory; refused before allocating (an expanded tensor? pass only the part you need)"
        )


def check_logits(op: str, name: str, x: torch.Tensor, *, class_dim: int = 1) -> None:
    """x (Tensor[..., C, *S]) with 1-3 spatial axes, C >= 2, non-empty, results that fit (:func:`check_size`)."""
    check_float(op, name, x)
    n_spatial = x.dim() - class_dim - 1
    if n_spatial < 1 or n_spatial > 3:
        lead = "M, B" if class_dim == 2 else "B"
        raise ValueError(
            f"{op}: {name} must be [{lead}, C, *S] with 1 to 3 spatial axes, got shape {tuple(x.shape)}"
        )
    if x.shape[class_dim] < 2:
        raise ValueError(f"{op}: {name} needs at least C=2 classes on axis {class_dim}, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{op}: {name} is empty (shape {tuple(x.shape)}); every axis needs at least one element")
    check_size(op, name, x)


def check_same_device(op: str, **tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    first_name, first = next(iter(devices.items()))
    for name, dev in devices.items():
        if dev != first:
            raise ValueError(f"{op}: {name} is on '{dev}' but {first_name} is on '{first}'; move them to one device")


def check_target(op: str, target, logits: torch.Tensor) -> None:
    check_tensor(op, "target", target)
    if target.is_floating_point() or target.is_complex():
        raise TypeError(f"{op}: target must be an integer tensor of class indices, got {target.dtype}")
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"{op}: target must be [B, *S] = {expected} to match logits {tuple(logits.shape)}, got {tuple(target.shape)}"
        )


def check_target_values(op: str, target: torch.Tensor, n_classes: int) -> None:
    if not value_checks_enabled():
        return
    lo, hi = int(target.min()), int(target.max())
    if lo < 0 or hi >= n_classes:
        raise _label_error(op, lo if lo < 0 else hi, n_classes)


def check_teacher_prob(op: str, teacher_prob, logits: torch.Tensor) -> None:
    check_float(op, "teacher_prob", teacher_prob)
    if teacher_prob.shape != logits.shape:
        raise ValueError(
            f"{op}: teacher_prob must have the shape of logits {tuple(logits.shape)}, got {tuple(teacher_prob.shape)}"
        )


def check_teacher_prob_values(op: str, teacher_prob: torch.Tensor) -> None:
    if value_checks_enabled() and bool(torch.isnan(teacher_prob).any()):
        raise ValueError(f"{op}: teacher_prob contains NaN")


def _label_error(op: str, bad: int, n_classes: int) -> ValueError:
    return ValueError(
        f"{op}: target has value {bad} but logits have C={n_classes} classes (valid labels are 0..{n_classes - 1})"
    )


TRITON_BACKENDS = ("triton", "triton-interpreter")


def run_checked(op: str, which: str, n_classes: int, fn, *args):
    """``fn(*args)``; on the Triton backend with value checks on, the kernels check labels (and
    teacher probabilities) in their own pass, and this raises what they found after one read.

    Raises:
        ValueError: a label outside [0, n_classes) or a NaN teacher probability.
    """
    if which not in TRITON_BACKENDS or not value_checks_enabled():
        return fn(*args)
    from pyseg_noise.kernels import value_errors

    with value_errors.collect() as box:
        out = fn(*args)
    bad, nan = box.read()
    if bad:
        raise _label_error(op, bad, n_classes)
    if nan:
        raise ValueError(f"{op}: teacher_prob contains NaN")
    return out


def check_choice(op: str, name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{op}: {name} must be one of {tuple(choices)}, got {value!r}")


def normalize_slice_dim(op: str, slice_dim, n_spatial: int) -> int:
    if isinstance(slice_dim, bool) or not isinstance(slice_dim, int):
        raise TypeError(f"{op}: slice_dim must be an int (a spatial axis), got {type(slice_dim).__name__}")
    if n_spatial == 3 and not -3 <= slice_dim < 3:
        raise ValueError(f"{op}: slice_dim must index one of the 3 spatial axes (-3..2), got {slice_dim}")
    return slice_dim


def check_smoothing(op: str, sigma2, kernel_size, spatial_dims, slice_dim, n_spatial: int) -> int:
    """The Gaussian of loss_attention (SPEC 5): odd kernel_size >= 1, sigma2 > 0, spatial_dims 2 or 3
    (3 only for 3D input). Returns slice_dim."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int):
        raise TypeError(f"{op}: kernel_size must be an int, got {type(kernel_size).__name__}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"{op}: kernel_size must be an odd integer >= 1, got {kernel_size}")
    if isinstance(sigma2, bool) or not isinstance(sigma2, numbers.Real):
        raise TypeError(f"{op}: sigma2 (the Gaussian's variance) must be a float, got {type(sigma2).__name__}")
    if not (math.isfinite(sigma2) and sigma2 > 0):
        raise ValueError(f"{op}: sigma2 (the Gaussian's variance) must be > 0, got {sigma2}")
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise ValueError(f"{op}: spatial_dims must be 2 (in-plane) or 3 (volumetric), got {spatial_dims!r}")
    if spatial_dims == 3 and n_spatial != 3:
        raise ValueError(f"{op}: spatial_dims=3 needs 3D input [B, C, X, Y, Z]; for 2D input use spatial_dims=2")
    return normalize_slice_dim(op, slice_dim, n_spatial)
