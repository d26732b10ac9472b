"""The contract between a training method and the :class:`~pyseg_noise.training.Trainer`.

The Trainer owns everything a method should not have to think about: data,
devices, mixed precision, the optimizer and learning rate, gradient
synchronisation across processes, checkpoints, logs and plots. A method owns
its networks and its loss, in four parts:

* :meth:`Method.build` creates the networks (called under the run's seed);
  :meth:`Method.networks` names the trainable ones;
* :meth:`Method.train_step` computes the loss of one batch and returns it with
  any scalars worth logging — the Trainer runs backward and the optimizer;
* :meth:`Method.predict` gives class probabilities for validation and
  ``pyseg-noise predict``;
* :meth:`Method.state_dict` / :meth:`Method.load_state_dict` save what is not
  a trainable network (an EMA teacher, a queue, a counter).

Optional hooks: :meth:`after_step` (EMA updates), :meth:`lr_at` and
:meth:`total_iterations` (multi-phase schedules), :meth:`param_groups` (per-network
learning rates), :meth:`uncertainty` (the uncertainty panel of the case plot),
:meth:`validate_config` (checks of the method's options).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, Iterable, List, Optional

import torch
from torch import Tensor, nn

from .config import ConfigError, NoOptions, TrainConfig
from .keyed_random import keyed_normal
from .lr_schedule import learning_rate
from .speed import SpeedPlan, resolve_speed

__all__ = ["Batch", "Method", "check_vnet_crop"]


@dataclass
class Batch:
    """One process's share of a training batch, on the training device.

    Attributes:
        image (Tensor[b, C_in, X, Y, Z]): z-scored crops.
        label (Tensor[b, X, Y, Z]): int64 training labels (noisy or clean, as configured).
        cases: case names of the samples.
        positions: the samples' positions in the run's data stream (unique per
            sample draw; the same for a sample whatever the number of processes).
        seed: the run's seed.
    """

    image: Tensor
    label: Tensor
    cases: List[str]
    positions: List[int]
    seed: int

    def normal_like_image(self, stream: int) -> Tensor:
        """N(0, 1) noise of ``image``'s shape, keyed per sample by ``(seed, position, stream)``.

        Two processes holding halves of a batch draw exactly the halves of what one
        process holding the whole batch draws (see :mod:`pyseg_noise.training.keyed_random`).
        """
        return keyed_normal(
            self.positions, tuple(self.image.shape[1:]), seed=self.seed, stream=stream,
            device=self.image.device, dtype=torch.float32,
        ).to(self.image.dtype)


class Method:
    """Base class of a training method (register subclasses with ``@register_method``).

    Class attributes:
        name: the registry name (``pyseg-noise train NAME``).
        Options: dataclass of the method's own hyper-parameters, defaults = the paper's.
        description: one line for the command line's method list.

    Instance attributes set by the Trainer before :meth:`build`: ``config``
    (:class:`TrainConfig`), ``options`` (``config.method_options``), ``device``.

    Example (a complete method)::

        @register_method
        class PlainCE(Method):
            name = "plain_ce"
            description = "V-Net with cross-entropy"

            def build(self):
                self.model = VNet(self.config.data.in_channels, self.config.data.num_classes)

            def networks(self):
                return {"model": self.model}

            def train_step(self, batch, iteration):
                return {"loss": F.cross_entropy(self.model(batch.image), batch.label)}

            def predict(self, x):
                return self.model(x).softmax(1)
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    description: ClassVar[str] = ""

    def __init__(self, config: TrainConfig, device: torch.device | str = "cpu"):
        self.config = config
        self.options = config.method_options
        self.device = torch.device(device)
        self._speed: Optional[SpeedPlan] = None

    @property
    def speed(self) -> SpeedPlan:
        """How this run is made fast on :attr:`device` (resolved from the config on first use):
        ``with self.speed.teacher_passes(): ...`` around no-grad teacher passes."""
        if getattr(self, "_speed", None) is None:
            self._speed = resolve_speed(self.config, self.device)
        return self._speed

    # ------------------------------------------------------------------ required
    def build(self) -> None:
        """Create the networks (on CPU; the Trainer moves them to the device)."""
        raise NotImplementedError

    def networks(self) -> Dict[str, nn.Module]:
        """The trainable networks by name: optimized, synchronised across processes,
        checkpointed, and switched between train and eval mode by the Trainer."""
        raise NotImplementedError

    def train_step(self, batch: Batch, iteration: int) -> Dict[str, Tensor]:
        """The loss of one batch at 0-based ``iteration``.

        Returns:
            ``{"loss": Tensor[] with grad, **other scalars}``; the Trainer logs every
            entry, averaged over processes, and backpropagates ``"loss"``.
        """
        raise NotImplementedError

    def predict(self, x: Tensor) -> Tensor:
        """Class probabilities (Tensor[B, C, X, Y, Z]) of x (Tensor[B, C_in, X, Y, Z]); called under no_grad in eval mode."""
        raise NotImplementedError

    # ------------------------------------------------------------------ optional
    @classmethod
    def validate_config(cls, config: TrainConfig) -> None:
        """Raise :class:`ConfigError` if ``config`` cannot run with this method."""

    def total_iterations(self) -> int:
        """Optimizer steps of the whole run (default ``config.iterations``)."""
        return self.config.iterations

    def lr_at(self, iteration: int) -> float:
        """Learning rate of 0-based ``iteration`` (default: ``config.optim``'s policy)."""
        return learning_rate(self.config.optim, iteration, self.total_iterations())

    def param_groups(self) -> List[dict]:
        """Optimizer parameter groups; a group's ``"lr_scale"`` multiplies :meth:`lr_at`."""
        params: List[nn.Parameter] = []
        for net in self.networks().values():
            params.extend(p for p in net.parameters() if p.requires_grad)
        return [{"params": params}]

    def after_step(self, iteration: int) -> None:
        """Called after the optimizer step of ``iteration`` (e.g. an EMA teacher update)."""

    def uncertainty(self, x: Tensor) -> Optional[Tensor]:
        """A per-voxel uncertainty map (Tensor[B, X, Y, Z]) for the case plot, or None."""
        return None

    def state_dict(self) -> dict:
        """State beyond :meth:`networks` (e.g. an EMA teacher); tensors and plain values only."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ValueError(f"{type(self).__name__} keeps no extra state but the checkpoint holds {sorted(state)}")

    def train(self) -> None:
        """Put the trainable networks in train mode."""
        for net in self.networks().values():
            net.train()

    def eval(self) -> None:
        """Put the trainable networks in eval mode."""
        for net in self.networks().values():
            net.eval()

    def modules(self) -> Iterable[nn.Module]:
        """Every network the method holds (trainable ones; subclasses add teachers)."""
        return self.networks().values()


def check_vnet_crop(config: TrainConfig) -> None:
    """V-Net halves every size four times: crops must be multiples of 16.

    Raises:
        ConfigError: naming ``data.crop_size``.
    """
    crop = list(config.data.crop_size)
    if any(s % 16 for s in crop):
        raise ConfigError(f"data.crop_size must be multiples of 16 for V-Net (4 poolings), got {crop}")
