"""Co-teaching (Han et al., NeurIPS 2018) and Tri-network (Zhang et al., MICCAI 2020), per voxel.

**Co-teaching** follows Han et al. 2018, Algorithm 1: two networks; in each
mini-batch each network ranks the samples by its own loss and keeps the
``R(t)`` share with the smallest loss, and its *peer* is updated on them:

    R(t)  = 1 - min(t / T_k, 1) * tau                     (Eq. (1); tau = noise rate)
    S_a   = the floor(R(t) * N) smallest-loss voxels of network a (N = voxels of the batch)
    L     = CE_{S_b}(a) + CE_{S_a}(b)                      (mean over the selected voxels)

Departures: a sample is a voxel and the ranking runs over all voxels of the
(per-process) mini-batch; ``t`` and ``T_k`` count iterations, not epochs
(Han: ``T_k`` = 10 epochs; 10 LA epochs of 80 cases at batch 4 are 200
iterations, the default); ``tau`` defaults to the actual voxel noise rate of
the training labels when they are simulated (:func:`label_noise_rate`: the
share of training voxels whose noisy label differs from the clean one; Han
also assume tau known), else it must be given.

**Tri-network** follows our reading of Zhang et al. 2020 ("each pair of
networks alternatively select informative samples for the third network
learning, according to the consensus and difference between their
predictions"): three networks; for each network ``k`` with peers ``i, j``:

    A_k   = {v : argmax i_v == argmax j_v}                (the peers' consensus)
    S_k   = the floor(R(t) * |A_k|) voxels of A_k with the smallest ce_i + ce_j
    L     = sum_k CE_{S_k}(k)

Departures: all three networks are updated in every iteration (rather than one
pair-to-third assignment per iteration), and the small-loss share uses
Co-teaching's schedule on the consensus set; the paper's exact ranking rule is
not in the texts we have.

Both: DenseVoxNet's auxiliary heads use their network's selection, weighted by
``aux_weight``; the prediction is the mean softmax of all networks
(:mod:`.peer_networks`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from pyseg_noise.data import LA_FILE_NAME, detect_layout, la_case_root, read_dataset_json, training_case_names
from pyseg_noise.data.nifti import split_dirs
from pyseg_noise.data.volume_io import read_h5, read_volume

from ..config import ConfigError
from ..registry import register_method
from ..run_data import label_override_paths
from .peer_networks import PeerNetworksMethod
from .voxel_selection import NORMALIZATIONS, keep_rate, masked_cross_entropy, small_loss_mask, voxel_cross_entropy

__all__ = [
    "CoteachingOptions",
    "Coteaching",
    "TriNetwork",
    "coteaching_loss",
    "trinetwork_masks",
    "trinetwork_loss",
    "label_noise_rate",
]


# ----------------------------------------------------------------------------- the losses
def coteaching_loss(logits_a: Tensor, logits_b: Tensor, target: Tensor, rate: float, *,
                    normalize: str = "selected") -> Tuple[Tensor, Tensor, Tensor]:
    """Co-teaching's exchanged small-loss update of two networks.

    Args:
        logits_a, logits_b (Tensor[B, C, *S]), target (Tensor[B, *S]).
        rate: ``R(t)``, the share of voxels each network keeps.
        normalize: ``"selected"`` (mean over the selected voxels, Han) or ``"all"``.

    Returns:
        ``(loss, selected_by_a, selected_by_b)``: ``loss = CE_{S_b}(a) + CE_{S_a}(b)`` and
        the two selections (Tensor[B, *S] bool); ``selected_by_a`` trains network b.
    """
    sel_a = small_loss_mask(voxel_cross_entropy(logits_a, target), rate)
    sel_b = small_loss_mask(voxel_cross_entropy(logits_b, target), rate)
    loss = (masked_cross_entropy(logits_a, target, sel_b, normalize=normalize)
            + masked_cross_entropy(logits_b, target, sel_a, normalize=normalize))
    return loss, sel_a, sel_b


def trinetwork_masks(logits: Sequence[Tensor], target: Tensor, rate: float) -> List[Tensor]:
    """Tri-network's selection for each of three networks (module docstring).

    Args:
        logits: three Tensor[B, C, *S].
        target (Tensor[B, *S]).
        rate: ``R(t)``.

    Returns:
        three Tensor[B, *S] bool: ``masks[k]`` trains network ``k``.
    """
    if len(logits) != 3:
        raise ValueError(f"trinetwork_masks expects the logits of 3 networks, got {len(logits)}")
    with torch.no_grad():
        ce = [voxel_cross_entropy(z, target) for z in logits]
        pred = [z.argmax(dim=1) for z in logits]
        masks = []
        for k in range(3):
            i, j = [m for m in range(3) if m != k]
            consensus = pred[i] == pred[j]
            masks.append(small_loss_mask(ce[i] + ce[j], rate, among=consensus))
    return masks


def trinetwork_loss(logits: Sequence[Tensor], target: Tensor, rate: float, *,
                    normalize: str = "selected") -> Tuple[Tensor, List[Tensor]]:
    """``(sum_k CE_{S_k}(network k), masks)`` of Tri-network."""
    masks = trinetwork_masks(logits, target, rate)
    loss = sum(masked_cross_entropy(z, target, m, normalize=normalize) for z, m in zip(logits, masks))
    return loss, masks


# ----------------------------------------------------------------------------- tau from the data
def label_noise_rate(root, noisy_labels: Optional[str] = None, *, label_overrides=None,
                     layout: Optional[str] = None, split: str = "train") -> float:
    """Share of training voxels whose training label differs from the clean one.

    The training label of a case is its file in ``label_overrides`` if there is
    one (``<case>.h5`` dataset ``label`` or ``<case>.nii.gz``), else the noisy
    label ``label_<noisy_labels>`` (h5) / ``labelsTr_<noisy_labels>/`` (NIfTI),
    else the clean label (rate 0). Counted over all voxels of all training cases.

    Raises:
        FileNotFoundError, ValueError: missing or unreadable files (named).
    """
    root = Path(root)
    layout = detect_layout(root) if layout is None else layout
    overrides = label_override_paths(label_overrides) if label_overrides else {}
    cases = training_case_names(root, layout, split)
    if layout == "h5":
        case_root = la_case_root(root, cases)
    else:
        ending = read_dataset_json(root)["file_ending"]
        label_dir = root / split_dirs(split)[1]
    flipped = total = 0
    for case in cases:
        if layout == "h5":
            path = case_root / case / LA_FILE_NAME
            clean = read_h5(path, "label", what="LA h5 file")
        else:
            clean = read_volume(label_dir / f"{case}{ending}")
        override = overrides.get(case)
        if override is not None:
            train = read_volume(override, key="label")
        elif noisy_labels:
            train = (read_h5(path, f"label_{noisy_labels}", what="LA h5 file") if layout == "h5"
                     else read_volume(root / f"{split_dirs(split)[1]}_{noisy_labels}" / f"{case}{ending}"))
        else:
            train = clean
        if train.shape != clean.shape:
            raise ValueError(f"training label of case {case!r} has shape {train.shape}, clean label {clean.shape}")
        flipped += int(np.count_nonzero(np.asarray(train) != np.asarray(clean)))
        total += clean.size
    return flipped / max(total, 1)


# ----------------------------------------------------------------------------- the methods
@dataclass
class CoteachingOptions:
    """Options of Co-teaching and Tri-network.

    Attributes:
        backbone: ``"vnet"`` (PINT's comparison) or ``"densevoxnet"``.
        forget_rate: ``tau``; None = :func:`label_noise_rate` of the configured training labels.
        num_gradual: ``T_k`` in iterations (200 = Han's 10 epochs on LA).
        normalize: ``"selected"`` or ``"all"`` (see :func:`masked_cross_entropy`).
    """

    backbone: str = "vnet"
    forget_rate: Optional[float] = None
    num_gradual: int = 200
    normalize: str = "selected"


class _SmallLossMethod(PeerNetworksMethod):
    Options = CoteachingOptions

    @classmethod
    def validate_config(cls, config) -> None:
        super().validate_config(config)
        o = config.method_options
        if o.forget_rate is not None and not 0.0 <= o.forget_rate < 1.0:
            raise ConfigError(f"method_options.forget_rate must be in [0, 1) or null, got {o.forget_rate}")
        if o.num_gradual < 1:
            raise ConfigError(f"method_options.num_gradual must be >= 1, got {o.num_gradual}")
        if o.normalize not in NORMALIZATIONS:
            raise ConfigError(f"method_options.normalize must be one of {', '.join(NORMALIZATIONS)}, got {o.normalize!r}")

    def build(self) -> None:
        super().build()
        # tau is read from the data on first use, not here: a trained model loaded for
        # prediction (its tau restored from the checkpoint) must not need the training data
        self._forget_rate = None if self.options.forget_rate is None else float(self.options.forget_rate)

    @property
    def forget_rate(self) -> float:
        """``tau``: the option, or :func:`label_noise_rate` of the configured training labels."""
        if self._forget_rate is None:
            d = self.config.data
            if d.root is None:
                raise ConfigError("method_options.forget_rate is null (estimate it from the data) but data.root is not set")
            self._forget_rate = label_noise_rate(d.root, d.noisy_labels, label_overrides=d.label_overrides,
                                                 layout=d.layout, split=d.train_split)
        return self._forget_rate

    def rate(self, iteration: int) -> float:
        """``R(t)`` at 0-based ``iteration``."""
        return keep_rate(iteration, self.forget_rate, self.options.num_gradual)

    def state_dict(self) -> dict:
        return {"forget_rate": self.forget_rate}

    def load_state_dict(self, state: dict) -> None:
        if "forget_rate" in state:  # the resumed run keeps the tau it started with
            self._forget_rate = float(state["forget_rate"])


@register_method
class Coteaching(_SmallLossMethod):
    """Two networks exchanging their small-loss voxels (module docstring)."""

    name = "coteaching"
    description = "Co-teaching (Han 2018): two networks train each other on small-loss voxels"
    num_networks = 2

    def train_step(self, batch, iteration: int) -> Dict[str, Tensor]:
        (a, aux_a), (b, aux_b) = self.forward_all(batch.image)
        y, rate, norm = batch.label, self.rate(iteration), self.options.normalize
        main, sel_a, sel_b = coteaching_loss(a, b, y, rate, normalize=norm)
        loss, logs = main, {}
        if aux_a is not None and self.aux_weight > 0:
            aux = (masked_cross_entropy(aux_a, y, sel_b, normalize=norm)
                   + masked_cross_entropy(aux_b, y, sel_a, normalize=norm))
            loss = loss + self.aux_weight * aux
            logs["loss_aux"] = aux.detach()
        agree = (sel_a & sel_b).float().sum() / sel_a.float().sum().clamp_min(1.0)
        return {"loss": loss, "loss_main": main.detach(), "keep_rate": torch.tensor(rate, device=y.device),
                "selection_overlap": agree, **logs}


@register_method
class TriNetwork(_SmallLossMethod):
    """Three networks; each pair's agreed small-loss voxels train the third (module docstring)."""

    name = "trinet"
    description = "Tri-network (Zhang 2020): each pair's agreed small-loss voxels train the third"
    num_networks = 3

    def train_step(self, batch, iteration: int) -> Dict[str, Tensor]:
        outs = self.forward_all(batch.image)
        y, rate, norm = batch.label, self.rate(iteration), self.options.normalize
        main, masks = trinetwork_loss([o[0] for o in outs], y, rate, normalize=norm)
        loss, logs = main, {}
        if outs[0][1] is not None and self.aux_weight > 0:
            aux = sum(masked_cross_entropy(o[1], y, m, normalize=norm) for o, m in zip(outs, masks))
            loss = loss + self.aux_weight * aux
            logs["loss_aux"] = aux.detach()
        selected = torch.stack([m.float().mean() for m in masks]).mean()
        return {"loss": loss, "loss_main": main.detach(), "keep_rate": torch.tensor(rate, device=y.device),
                "selected_fraction": selected, **logs}
