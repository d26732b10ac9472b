"""Which backend runs an op: loading the C++ extension, the Triton kernels, and
the rules of ``backend=``.

``backend=None`` picks by device: CPU tensors run the fused C++ kernels, CUDA
tensors the Triton kernels (both registered on the same ``torch.library`` ops,
so autograd, fake tensors and ``torch.compile`` are shared), anything else the
eager reference. ``"reference"``, ``"cpu"`` and ``"triton"`` force one and
raise a ``RuntimeError`` that says why when it cannot run.

Without the C++ extension (``PYSEG_NOISE_NO_EXTENSION=1``, honoured at import
too, or a failed build) the schemas are defined from Python
(:mod:`pyseg_noise.ops.schema`) and CUDA tensors still run the Triton kernels;
only CPU tensors fall back to the eager reference, with one warning saying so.

``backend="triton"`` on CPU tensors runs the same Triton kernels in Triton's
interpreter when ``TRITON_INTERPRET=1`` was set before Triton was imported:
that is how CI checks the GPU kernels' numbers on machines without a GPU.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable, Optional, Sequence

import torch

BACKENDS = ("reference", "cpu", "triton")

_EXTENSION_ERROR: Optional[BaseException] = None
if os.environ.get("PYSEG_NOISE_NO_EXTENSION") == "1":
    # The pure-Python mode: also honoured at run time, so an installed extension can be
    # left out (CI checks the Triton path this way).
    HAS_CPU_EXTENSION = False
    _EXTENSION_ERROR = ImportError("PYSEG_NOISE_NO_EXTENSION=1 is set")
else:
    try:
        from pyseg_noise import _C  # noqa: F401  (loading it registers the ops)

        HAS_CPU_EXTENSION = True
    except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
        HAS_CPU_EXTENSION = False
        _EXTENSION_ERROR = exc

if not HAS_CPU_EXTENSION:
    # The schemas of csrc/ops.cpp, defined from Python: the Triton kernels, fake functions
    # and autograd formulas register on the same ops as with the extension.
    from pyseg_noise.ops.schema import define_schemas

    define_schemas()

_warned_fallback: set = set()


def cpu_capability() -> Optional[str]:
    """The SIMD level pyseg_noise._C was compiled for ("AVX512", "AVX2", "DEFAULT"), None without it."""
    if not HAS_CPU_EXTENSION:
        return None
    return getattr(_C, "CPU_CAPABILITY", None)


def _triton_impls() -> dict:
    try:
        from pyseg_noise.kernels import IMPLS
    except ImportError:
        return {}
    return IMPLS


def triton_interpreter_enabled() -> bool:
    """Whether the Triton kernels were built for the interpreter (TRITON_INTERPRET=1
    was set when pyseg_noise.kernels was first imported)."""
    try:
        from pyseg_noise import kernels
    except ImportError:
        return False
    return bool(kernels.INTERPRETED)


def _triton_error() -> str:
    try:
        from pyseg_noise import kernels
    except ImportError as exc:
        return repr(exc)
    return kernels.TRITON_ERROR or "pyseg_noise.kernels has no launcher for this op"


def fallback_reason(op: str, device: torch.device) -> str:
    """Why ``op`` on ``device`` runs the eager reference under ``backend=None``, in words."""
    if device.type == "cpu":
        why = (f"the C++ extension pyseg_noise._C is not loaded ({_EXTENSION_ERROR}): "
               "CPU tensors fall back to the eager reference")
        if op in _triton_impls():
            return why + "; CUDA tensors still use the Triton kernels"
        return why + f"; CUDA tensors too, the Triton kernels being unavailable ({_triton_error()})"
    if device.type == "cuda":
        return f"the Triton kernels are unavailable ({_triton_error()}): CUDA tensors fall back to the eager reference"
    return f"no fused kernel exists for device '{device.type}': it falls back to the eager reference"


def _warn_fallback(op: str, device: torch.device) -> None:
    if device.type in _warned_fallback:
        return
    _warned_fallback.add(device.type)
    warnings.warn(
        f"pyseg_noise: {fallback_reason(op, device)} (slow, more memory; first met in {op}). "
        "Rebuild with `pip install --no-build-isolation -e .` (C++) or install `triton` (CUDA) to get the "
        "fused kernels.",
        RuntimeWarning,
        stacklevel=4,
    )


def resolve_backend(op: str, tensors: Sequence[torch.Tensor], backend: Optional[str]) -> str:
    """The backend that runs ``op`` on ``tensors`` given the user's ``backend=`` choice."""
    device = tensors[0].device
    if backend is None:
        if device.type == "cpu" and HAS_CPU_EXTENSION:
            return "cpu"
        if device.type == "cuda" and op in _triton_impls():
            return "triton"
        _warn_fallback(op, device)
        return "reference"
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be None or one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return backend
    if backend == "cpu":
        if not HAS_CPU_EXTENSION:
            raise RuntimeError(
                f"{op}: backend='cpu' needs the C++ extension pyseg_noise._C, which failed to load: "
                f"{_EXTENSION_ERROR}. Reinstall with `pip install --no-build-isolation .`"
            )
        if device.type != "cpu":
            raise RuntimeError(f"{op}: backend='cpu' needs CPU tensors, got tensors on '{device}'")
        return backend
    # triton
    impls = _triton_impls()
    if op not in impls:
        raise RuntimeError(
            f"{op}: backend='triton' needs the `triton` package (pip install triton) and its kernels in "
            "pyseg_noise.kernels, which could not be imported"
        )
    if device.type == "cuda":
        return backend
    if device.type == "cpu":
        if not triton_interpreter_enabled():
            raise RuntimeError(
                f"{op}: backend='triton' needs CUDA tensors; on CPU tensors it runs only in Triton's "
                "interpreter, which is off (set TRITON_INTERPRET=1 before pyseg_noise is imported)"
            )
        return "triton-interpreter"
    raise RuntimeError(f"{op}: backend='triton' cannot run on device '{device}'")


class _TritonNamespace:
    """Looks like ``torch.ops.pyseg_noise`` but calls the Triton launchers directly."""

    def __getattr__(self, name: str) -> Callable:
        return _triton_impls()[name]


TRITON_OPS = _TritonNamespace()


def autograd_op(name: str, setup_context: Callable, backward: Callable) -> Callable:
    """Runs the Triton launcher of ``name`` with the op's own autograd formula.

    Used for CPU tensors under the Triton interpreter, where the dispatcher would
    pick the C++ kernel. ``backward`` finds its backward op as ``ctx.ops``.
    """
    impl = _triton_impls()[name]

    class _Op(torch.autograd.Function):
        @staticmethod
        def forward(*args):
            return impl(*args)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.ops = TRITON_OPS
            setup_context(ctx, inputs, output)

        @staticmethod
        def backward(ctx, *grads):
            return backward(ctx, *grads)

    _Op.__name__ = f"{name}_triton_interpreted"
    return _Op.apply


def ops_of(ctx) -> object:
    """The namespace a backward formula calls: the dispatcher's, or the interpreter's."""
    return getattr(ctx, "ops", None) or torch.ops.pyseg_noise


def register_triton_for_cuda() -> None:
    """Registers every Triton launcher as the "cuda" kernel of its op (on the schemas of
    pyseg_noise._C, or of :mod:`pyseg_noise.ops.schema` without it)."""
    for name, fn in _triton_impls().items():
        torch.library.register_kernel(f"pyseg_noise::{name}", "cuda", fn)


_interpreted_ops: dict = {}


def op_runner(name: str, backend: str, setup_context: Optional[Callable] = None,
              backward: Optional[Callable] = None) -> Callable:
    """The callable that runs op ``name`` on a resolved ``backend``.

    The dispatcher's op (``torch.ops.pyseg_noise.<name>``: C++ on CPU, Triton on
    CUDA, with the autograd registered on it), or under Triton's interpreter the
    launcher itself, wrapped with the op's autograd when ``backward`` is given.
    """
    if backend != "triton-interpreter":
        return getattr(torch.ops.pyseg_noise, name)
    if name not in _interpreted_ops:
        if backward is None:
            _interpreted_ops[name] = getattr(TRITON_OPS, name)
        else:
            _interpreted_ops[name] = autograd_op(name, setup_context, backward)
    return _interpreted_ops[name]
