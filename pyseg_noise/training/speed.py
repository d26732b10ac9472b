"""How a run is made fast: reduced-precision teacher passes, ``channels_last_3d``, ``torch.compile``.

Three settings of :class:`~pyseg_noise.training.TrainConfig` choose them; ``"auto"``
resolves by device and hardware into a :class:`SpeedPlan`, which the Trainer logs
(``log.jsonl``'s first record, the log's first line) and writes into
``eval/summary.json`` so a result always says how it was computed:

================  ======================================================================
setting           ``auto`` means
================  ======================================================================
``teacher_amp``   no-grad teacher passes (PINT's M perturbed passes) under
                  ``torch.inference_mode`` and autocast: bf16 on a CPU with AVX512-BF16
                  or AMX and on a CUDA GPU that supports it, fp16 on other CUDA GPUs,
                  fp32 (off) on other CPUs. The teacher only makes pseudo labels and
                  their entropy; the accumulator sums its softmax in fp32.
``channels_last`` networks and input batches in ``torch.channels_last_3d`` where it pays:
                  ``auto`` asks each network (``channels_last_pays``: V-Net yes, measured;
                  DenseVoxNet no at the reproduction's widths) and is on for CPU and for
                  CUDA under mixed precision (cuDNN's NDHWC kernels), off for CUDA in fp32;
                  ``on`` converts every network.
``compile``       ``"off"`` by default: on this project's CPU it did not pay (see the
                  README's training benchmark); ``"on"`` compiles every network in place
                  (``nn.Module.compile``, state-dict keys unchanged) with static shapes.
``cpu_allocator`` ``auto`` = ``cache`` when training on the CPU under glibc: freed memory stays
                  in the process heap (``mallopt``: no ``mmap`` per large block, no trimming)
                  instead of going back to the kernel, so the next step's tensors of the
                  same sizes do not page-fault their memory in again. On the development
                  VM every fresh page of a large tensor cost about as much as reading it
                  several times: a V-Net step took 3.4x as long with glibc's defaults.
                  ``system`` keeps glibc's defaults. What PyTorch's CPU-performance guide
                  gets from preloading jemalloc/tcmalloc, without a preload.
================  ======================================================================

Measured on the 2-core development CPU (AMD EPYC Zen 4, AVX512-BF16), one thread,
V-Net ``n_filters`` 8, batch 2, 64 x 64 x 32: a teacher pass (no grad, dropout on)
106 ms in fp32, 57 ms under bf16 autocast (1.84x), 82 ms in ``channels_last_3d`` fp32,
57 ms with both; the student's forward + backward 352 ms, 303 ms in
``channels_last_3d`` (1.16x); ``torch.compile`` of the bf16 teacher 56 ms (no gain,
~40 s to compile). ``python -m benchmarks --train`` measures whole steps.

Student training in reduced precision on the CPU is not switched on by ``auto``: it is
only an explicit ``amp: bf16`` (see :func:`amp_dtype`), until it is measured harmless.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator, Optional

import torch
from torch import nn

__all__ = ["SpeedPlan", "resolve_speed", "cpu_has_fast_bf16", "amp_dtype", "heap_cache", "TEACHER_AMP_CHOICES",
           "CHANNELS_LAST_CHOICES", "COMPILE_CHOICES", "CPU_ALLOCATOR_CHOICES"]

TEACHER_AMP_CHOICES = ("auto", "off", "bf16", "fp16")
CHANNELS_LAST_CHOICES = ("auto", "on", "off")
COMPILE_CHOICES = ("off", "on")
CPU_ALLOCATOR_CHOICES = ("auto", "cache", "system")

# glibc's mallopt parameters (malloc.h). Setting any of them switches off glibc's dynamic
# thresholds for good, so leaving the cache restores the values that adjustment converges to
# in a long-running process that has freed a large block (mmap threshold 32 MiB, the most
# it rises to on 64-bit; trim threshold twice that).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_STEADY_TRIM, _STEADY_MMAP_THRESHOLD, _DEFAULT_MMAP_MAX = 64 * 2**20, 32 * 2**20, 65536


@functools.lru_cache(maxsize=None)
def _glibc():
    """glibc as a ctypes library, or None (another C library, or not Linux); looked up once
    (``find_library`` runs ``ldconfig``), not per run or per step."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    return libc if version() else None


@contextlib.contextmanager
def heap_cache(enabled: bool = True) -> Iterator[bool]:
    """Keep freed memory in the process heap while inside (glibc only); yields whether it is on.

    Sets ``M_MMAP_MAX = 0`` (large blocks from the heap, not from their own ``mmap``) and a
    trim threshold above any heap, so memory freed by one training step is reused by the next
    without page faults. On leaving, ``mmap`` for blocks of 32 MiB and more and a 64 MiB trim
    threshold are restored (what glibc's own adjustment reaches in a long-running process) and
    the heap's free memory is returned to the kernel (``malloc_trim``). A no-op yielding False
    where glibc is absent.
    """
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield True
    finally:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_MMAP_THRESHOLD, _STEADY_MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _STEADY_TRIM)
        libc.malloc_trim(0)

_DTYPE_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def cpu_has_fast_bf16() -> bool:
    """True if this CPU computes bf16 natively (AVX512-BF16 or AMX), so bf16 autocast pays."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if check is not None)


def _cuda_bf16(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of the *student's* training steps (``TrainConfig.amp``), or None for fp32.

    ``auto``: bf16 on a CUDA GPU that has it, else fp16 on CUDA; fp32 on the CPU. An explicit
    ``bf16`` also applies on the CPU (opt-in: not measured harmless for the result yet); ``fp16``
    is CUDA only.
    """
    if amp == "off":
        return None
    if device.type == "cuda":
        if amp == "bf16" or (amp == "auto" and _cuda_bf16(device)):
            return torch.bfloat16
        return torch.float16
    if device.type == "cpu" and amp == "bf16":
        return torch.bfloat16
    return None


def _teacher_dtype(setting: str, device: torch.device) -> tuple:
    if setting == "off":
        return None, "teacher_amp: off"
    if device.type == "cuda":
        if setting == "bf16" or (setting == "auto" and _cuda_bf16(device)):
            return torch.bfloat16, f"teacher_amp: {setting} on CUDA"
        return torch.float16, f"teacher_amp: {setting} on CUDA"
    if device.type != "cpu":
        return None, f"teacher_amp: {setting}, but device {device.type} has no autocast here"
    if setting == "fp16":
        return None, "teacher_amp: fp16 is CUDA only; fp32 on the CPU"
    if setting == "bf16":
        return torch.bfloat16, "teacher_amp: bf16 (asked)"
    if cpu_has_fast_bf16():
        return torch.bfloat16, "teacher_amp: auto, the CPU has AVX512-BF16/AMX"
    return None, "teacher_amp: auto, the CPU has no native bf16"


def _channels_last(setting: str, device: torch.device, student_dtype: Optional[torch.dtype]) -> tuple:
    if setting in ("on", "off"):
        return setting == "on", f"channels_last: {setting}"
    if device.type == "cuda" and student_dtype is None:
        return False, "channels_last: auto, off for CUDA in fp32"
    return True, f"channels_last: auto, on for {device.type}"


@dataclass(frozen=True)
class SpeedPlan:
    """What a run does for speed, resolved from the config for one device.

    Attributes:
        device: the training device's type (``"cpu"``, ``"cuda"``).
        student_dtype: autocast dtype of the student's steps (None: fp32).
        teacher_dtype: autocast dtype of no-grad teacher passes (None: fp32).
        channels_last: networks that gain from it (``channels_last_pays``), and their
            batches, in ``torch.channels_last_3d``.
        compile: networks compiled with ``torch.compile``.
        heap_cache: training keeps freed memory in the heap (:func:`heap_cache`).
        channels_last_everywhere: ``channels_last: on``: every network, whatever it prefers.
        reasons: one line per decision, for the log.
    """

    device: str = "cpu"
    student_dtype: Optional[torch.dtype] = None
    teacher_dtype: Optional[torch.dtype] = None
    channels_last: bool = False
    compile: bool = False
    heap_cache: bool = False
    channels_last_everywhere: bool = False
    reasons: tuple = ()

    def as_dict(self) -> dict:
        """Plain values for ``log.jsonl`` and ``eval/summary.json``."""
        d = asdict(self)
        d["student_dtype"] = _DTYPE_NAMES[self.student_dtype]
        d["teacher_dtype"] = _DTYPE_NAMES[self.teacher_dtype]
        d["reasons"] = list(self.reasons)
        return d

    def describe(self) -> str:
        """One line: ``student fp32, teacher passes bf16, channels_last_3d on, compile off (...)``."""
        return (f"student {_DTYPE_NAMES[self.student_dtype]}, teacher passes {_DTYPE_NAMES[self.teacher_dtype]}, "
                f"channels_last_3d {'on' if self.channels_last else 'off'}, compile {'on' if self.compile else 'off'}, "
                f"heap cache {'on' if self.heap_cache else 'off'} ({'; '.join(self.reasons)})")

    @contextlib.contextmanager
    def teacher_passes(self) -> Iterator[None]:
        """Context of no-grad teacher passes: ``inference_mode`` and, if resolved, autocast.

        Tensors made inside are inference tensors: use them as inputs of later ops (they
        cannot be modified in place or saved for backward outside).
        """
        with torch.inference_mode():
            if self.teacher_dtype is None:
                with torch.autocast(self.device, enabled=False):
                    yield
            else:
                with torch.autocast(self.device, dtype=self.teacher_dtype):
                    yield

    def uses_channels_last(self, module: nn.Module) -> bool:
        """Whether ``module`` runs in ``channels_last_3d`` under this plan."""
        return self.channels_last and (self.channels_last_everywhere or bool(getattr(module, "channels_last_pays", False)))

    def prepare_input(self, x: torch.Tensor, modules: Iterable[nn.Module] = ()) -> torch.Tensor:
        """``x`` (a 5-D batch) in ``channels_last_3d`` if any of ``modules`` runs in it (if none
        are given: if the plan converts networks at all)."""
        modules = list(modules)
        wanted = any(self.uses_channels_last(m) for m in modules) if modules else self.channels_last
        if wanted and x.dim() == 5:
            return x.contiguous(memory_format=torch.channels_last_3d)
        return x

    def apply(self, modules: Iterable[nn.Module]) -> None:
        """Put ``modules`` in their memory format and compile them, in place."""
        for module in modules:
            if self.uses_channels_last(module):
                module.to(memory_format=torch.channels_last_3d)
            if self.compile and not getattr(module, "_compiled_call_impl", None):
                module.compile(dynamic=False)

    def training(self) -> contextlib.AbstractContextManager:
        """Context of the training loop: :func:`heap_cache` where the plan has it."""
        return heap_cache(self.heap_cache)


def resolve_speed(config, device: torch.device) -> SpeedPlan:
    """The :class:`SpeedPlan` of ``config`` (``amp``, ``teacher_amp``, ``channels_last``, ``compile``,
    ``cpu_allocator``) on ``device``."""
    device = torch.device(device)
    student = amp_dtype(config.amp, device)
    teacher, why_teacher = _teacher_dtype(config.teacher_amp, device)
    channels_last, why_cl = _channels_last(config.channels_last, device, student)
    compiled = config.compile == "on"
    heap = device.type == "cpu" and config.cpu_allocator != "system" and _glibc() is not None
    why_heap = (f"cpu_allocator: {config.cpu_allocator}" + ("" if heap or device.type != "cpu" or
                config.cpu_allocator == "system" else ", no glibc"))
    return SpeedPlan(device=device.type, student_dtype=student, teacher_dtype=teacher, channels_last=channels_last,
                     compile=compiled, heap_cache=heap, channels_last_everywhere=config.channels_last == "on",
                     reasons=(why_teacher, why_cl, f"compile: {config.compile}", why_heap))
