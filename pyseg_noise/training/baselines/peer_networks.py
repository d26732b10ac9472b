"""Base class of the baselines that train several copies of one network side by side.

Decoupling and Co-teaching train two networks, Tri-network three. Each copy
starts from its own random weights (built one after another under the run's
seed). The test-time prediction is the mean of the copies' softmax outputs:
TSMAN compares its baselines that way ("we train two models for the other
methods, and the predictions are averaged"), and it makes every baseline's
prediction use all the networks it trained.
"""
from __future__ import annotations

from typing import ClassVar, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..method import Method
from .backbone import aux_weight_of, build_backbone, check_backbone, main_and_aux

__all__ = ["PeerNetworksMethod"]

_NAMES = "abcdefgh"


class PeerNetworksMethod(Method):
    """``num_networks`` copies of ``options.backbone``, named ``net_a``, ``net_b``, ...

    Subclasses set :attr:`num_networks`, an ``Options`` dataclass with a
    ``backbone`` field, and implement :meth:`train_step` with :meth:`forward_all`.
    """

    num_networks: ClassVar[int] = 2

    @classmethod
    def validate_config(cls, config) -> None:
        check_backbone(config, config.method_options.backbone)

    def build(self) -> None:
        self.nets = nn.ModuleList(build_backbone(self.config, self.options.backbone) for _ in range(self.num_networks))

    def networks(self) -> Dict[str, nn.Module]:
        return {f"net_{_NAMES[i]}": net for i, net in enumerate(self.nets)}

    def forward_all(self, x: Tensor) -> List[Tuple[Tensor, Optional[Tensor]]]:
        """``[(main logits, aux logits or None)]`` of every network on ``x``."""
        return [main_and_aux(net(x)) for net in self.nets]

    @property
    def aux_weight(self) -> float:
        """Weight of the auxiliary head's loss (DenseVoxNet; 0 for V-Net)."""
        return aux_weight_of(self.nets[0])

    def predict(self, x: Tensor) -> Tensor:
        probs = [torch.softmax(main_and_aux(net(x))[0].float(), dim=1) for net in self.nets]
        return torch.stack(probs).mean(dim=0)
