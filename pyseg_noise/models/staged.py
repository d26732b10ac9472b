"""The staged-forward protocol that lets TSMAN run two sub-networks in lockstep.

TSMAN's attention models read *both* streams' features at the same depth and
gate each stream before it goes on (TSMAN §"Two-Stream Architecture"), so the
two sub-networks cannot simply be called one after the other. A sub-network
that can sit in a :class:`~pyseg_noise.models.TSMAN` therefore exposes

* ``attention_channels: dict[str, int]`` — the attention points in the order the
  forward pass reaches them, each with the channel count of its features;
* ``forward_stages(x, **kwargs)`` — a generator that runs the network, and at
  each attention point yields ``(name, features)`` and continues with the
  features it is sent back (gated, or the same tensor). It finishes by
  yielding ``("output", (logits, aux))`` (``aux`` is ``None`` for a network
  without an auxiliary head). The result is yielded rather than returned so that
  the drivers never need ``StopIteration.value``, which ``torch.compile``
  (Dynamo) cannot trace with ``fullgraph=True``; plain ``send`` loops it can.

A single network's ``forward`` drives its own generator with :func:`run_stages`
(sending every feature map back unchanged), so the single-network and the
two-stream code paths are the same code.
"""
from __future__ import annotations

from collections.abc import Generator

import torch

#: the name of the generator's last item, which carries ``(logits, aux)``
OUTPUT = "output"

StageGenerator = Generator[tuple[str, object], torch.Tensor, None]


def run_stages(stages: StageGenerator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Drive a ``forward_stages`` generator without touching its features.

    Args:
        stages: the generator returned by ``net.forward_stages(x)``.

    Returns:
        ``(logits, aux)``, the payload of the generator's ``"output"`` item.
    """
    name, value = next(stages)
    while name != OUTPUT:
        name, value = stages.send(value)
    return value
