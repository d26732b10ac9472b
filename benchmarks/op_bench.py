"""What one op's benchmark declares, and how a provider and a mode become a timed call.

A benchmark (one subclass of :class:`OpBench` per op, in ``bench_<family>.py``)
says how to build the op's inputs for a :class:`~benchmarks.sizes.Size`, how to
call one implementation on them (:meth:`OpBench.call`), which inputs receive
gradients, and which modes make sense. Everything else — turning a provider
into an implementation and a mode into a ``run``/``setup`` pair — is shared here.

Modes:

* ``fwd``: the forward, with autograd recording when an input requires grad
  (as in training: saving what the backward needs is part of the cost).
* ``bwd``: only ``torch.autograd.grad`` of the loss; the forward runs untimed
  before each call.
* ``fwdbwd``: forward then ``torch.autograd.grad``, one step's worth of the loss.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch

from . import providers as prov
from . import traffic
from .sizes import Size

__all__ = ["MODES", "OpBench", "Workload", "ProviderUnavailable"]

MODES = ("fwd", "bwd", "fwdbwd")


class ProviderUnavailable(RuntimeError):
    """A provider cannot run this op here; the message says why."""


class Workload(NamedTuple):
    """``run(setup())`` is one timed call; ``setup`` (may be None) is untimed."""

    run: Callable[[Any], Any]
    setup: Optional[Callable[[], Any]]


class OpBench:
    """One op's benchmark. Subclasses set the class attributes and the four methods
    marked "subclass" below.

    Attributes:
        name: the op, as ``pyseg_noise.ops`` (or ``pyseg_noise.metrics``) names it.
        family: "pint", "tsman", "ema" or "metrics" (``--ops`` accepts it for all its ops).
        modes: the modes that apply (ops without gradients only have "fwd").
        variants: settings measured as separate rows ("" when there is one).
        providers: the provider names this op has, in report order.
        baseline: the provider the "x eager" column divides by.
        memory_method: "torch" or "tracemalloc" (see ``measure.peak_extra_bytes``).
        kernel: the Triton kernel name whose presence the "triton" provider needs.
    """

    name = ""
    family = ""
    modes: Sequence[str] = ("fwd",)
    variants: Sequence[str] = ("",)
    providers: Sequence[str] = prov.STANDARD
    baseline = "reference"
    memory_method = "torch"
    kernel: Optional[str] = None

    # ---- subclass ------------------------------------------------------------------

    def sizes(self, which: str) -> List[Size]:
        """The sizes of the size set ``which`` ("smoke", "paper" or "sweep")."""
        raise NotImplementedError

    def inputs(self, size: Size, device: torch.device, dtype: torch.dtype, generator: torch.Generator) -> dict:
        """The op's inputs at ``size``, made once and shared by every provider and mode."""
        raise NotImplementedError

    def call(self, fn: Callable, x: dict, variant: str) -> Any:
        """One forward of implementation ``fn`` (the reference's signature, or the
        public op's with ``backend`` bound) on inputs ``x``; returns the loss (or outputs)."""
        raise NotImplementedError

    def grad_inputs(self, x: dict) -> List[torch.Tensor]:
        """The inputs that receive gradients (empty for ops without a backward)."""
        return []

    # ---- shared ----------------------------------------------------------------------

    def reference_fn(self) -> Callable:
        from pyseg_noise.ops import reference

        return getattr(reference, self.name)

    def public_fn(self) -> Callable:
        import pyseg_noise.ops

        return getattr(pyseg_noise.ops, self.name)

    def extra_implementation(self, provider: str, variant: str) -> Callable[[dict], Any]:
        """Implementations of providers beyond the standard four (subclasses add)."""
        raise ProviderUnavailable(f"{self.name} has no provider {provider!r}")

    def implementation(self, provider: str, variant: str, device: torch.device) -> Callable[[dict], Any]:
        """``f(inputs)`` running one forward of ``provider``.

        Raises:
            ProviderUnavailable: the provider cannot run here (message says why).
        """
        if provider not in self.providers:
            raise ProviderUnavailable(f"{self.name} has no provider {provider!r} (it has {', '.join(self.providers)})")
        if provider == "reference":
            fn = self.reference_fn()
        elif provider == "compile":
            fn = prov.compiled(self.reference_fn())
        elif provider in prov.FUSED:
            problem = prov.fused_problem(provider, self.kernel or self.name, device)
            if problem:
                raise ProviderUnavailable(problem)
            fn = functools.partial(self.public_fn(), backend=provider)
        else:
            return self.extra_implementation(provider, variant)
        return lambda x: self.call(fn, x, variant)

    def workload(self, provider: str, variant: str, mode: str, x: dict, device: torch.device) -> Workload:
        if mode not in self.modes:
            raise ValueError(f"{self.name} has no mode {mode!r} (it has {', '.join(self.modes)})")
        f = self.implementation(provider, variant, device)
        if mode == "fwd":
            return Workload(lambda _: f(x), None)
        grads = self.grad_inputs(x)
        if mode == "bwd":
            return Workload(lambda loss: torch.autograd.grad(loss, grads), lambda: f(x))
        return Workload(lambda _: torch.autograd.grad(f(x), grads), None)

    def min_bytes(self, x: dict, mode: str) -> Optional[int]:
        return traffic.min_bytes(self.name, mode, x)

    def work_note(self, provider: str, mode: str) -> Tuple[str, bool]:
        """(note, bandwidth applies) for a provider whose work in `mode` is not what the mode's
        minimum traffic assumes (e.g. a gradient computed in the forward): the note goes into the
        row; where the bandwidth does not apply, the row gets none and no bandwidth target."""
        return "", True

    def grad_bytes(self, x: dict) -> int:
        """Bytes of the gradients the backward returns (the memory target's unit)."""
        return sum(traffic.nbytes(t) for t in self.grad_inputs(x))
