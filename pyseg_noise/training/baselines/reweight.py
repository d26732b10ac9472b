"""Meta re-weighting of voxels (Mirikharaji, Yan & Hamarneh 2019; Ren et al. 2018's learning to re-weight).

Follows: Mirikharaji et al. 2019 (spatially adaptive re-weighting), which
applies Ren et al. 2018's online meta re-weighting to every pixel: a voxel's
weight is how much a small step on its loss would lower the loss on a small
set of cleanly labelled images. Per iteration, with per-voxel losses
``l_v(theta)`` on the noisy batch and the clean-set loss ``L_c``:

    theta'(eps) = theta - alpha * grad_theta sum_v eps_v l_v(theta)     (one virtual SGD step, eps = 0)
    w~_v        = max(-dL_c(theta'(eps)) / d eps_v, 0)  =  max(alpha * grad L_c(theta) . grad l_v(theta), 0)
    w_v         = w~_v / sum_u w~_u        (0 everywhere if every w~ is 0)
    L           = sum_v w_v l_v(theta)                                   (the real update)

The virtual step runs with :func:`torch.func.functional_call` on the
network's parameters; gradients reach ``eps`` by double backpropagation. The
virtual forward pass on the clean batch uses copies of the batch-norm buffers,
so only the real forward pass moves the running statistics. ``alpha`` is the
run's current learning rate (plain SGD in the virtual step, as Ren et al.).

Departures and choices: the weights are normalised over all voxels of the
(per-process) mini-batch, as Ren et al. normalise over the mini-batch; the
clean set is a few training cases whose clean labels are known
(``meta_cases``, or the first ``meta_num_cases`` cases that the noise manifest
of :func:`pyseg_noise.data.corrupt_dataset` or of ``reproduce``'s label folder
marks as not corrupted — on the synthetic set, "a few clean cases"); they stay in the noisy training set,
as their training labels are clean anyway. Each iteration draws
``meta_batch_size`` random crops of them (seeded by the run's seed and the
iteration, so a resumed run draws the same). DenseVoxNet's auxiliary loss
shares the weights and enters the virtual step with ``aux_weight``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from pyseg_noise.data import detect_layout, open_dataset, training_case_names

from ..config import ConfigError
from ..method import Method
from ..registry import register_method
from ..run_data import label_override_paths
from .backbone import aux_weight_of, build_backbone, check_backbone, main_and_aux

__all__ = ["meta_voxel_weights", "ReweightOptions", "MetaReweight", "clean_meta_cases"]


def _voxel_ce(logits: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(logits.float(), target.long(), reduction="none")


def meta_voxel_weights(model: nn.Module, image: Tensor, target: Tensor, clean_image: Tensor,
                       clean_target: Tensor, lr: float, *, aux_weight: float = 0.0
                       ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Per-voxel weights from one virtual SGD step (module docstring), and the real forward's losses.

    Args:
        model: the segmentation network (its current mode is used for both passes).
        image (Tensor[B, C_in, *S]), target (Tensor[B, *S]): the noisy batch.
        clean_image (Tensor[M, C_in, *S']), clean_target (Tensor[M, *S']): the clean batch.
        lr: ``alpha`` > 0, the virtual step size.
        aux_weight: weight of an auxiliary output's loss (DenseVoxNet) in the virtual step.

    Returns:
        ``(weights, ce, ce_aux)``: weights (Tensor[B, *S]) >= 0 summing to 1 (or all 0),
        no gradient; ``ce`` (Tensor[B, *S]) the per-voxel cross-entropy of the real
        forward pass, with gradient; ``ce_aux`` the aux head's (or None).

    Raises:
        ValueError: ``lr <= 0``.
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    main, aux = main_and_aux(model(image))
    ce = _voxel_ce(main, target)
    ce_aux = _voxel_ce(aux, target) if aux is not None else None
    eps = torch.zeros(ce.shape, dtype=ce.dtype, device=ce.device, requires_grad=True)
    per_voxel = ce + aux_weight * ce_aux if (ce_aux is not None and aux_weight) else ce
    grads = torch.autograd.grad((eps * per_voxel).sum(), list(params.values()), create_graph=True, allow_unused=True)
    virtual = {n: (p - lr * g if g is not None else p) for (n, p), g in zip(params.items(), grads)}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    clean_main, _ = main_and_aux(functional_call(model, {**virtual, **buffers}, (clean_image,)))
    clean_loss = _voxel_ce(clean_main, clean_target).mean()
    # retain_graph: the real loss still backpropagates through ce's graph afterwards
    (g_eps,) = torch.autograd.grad(clean_loss, eps, retain_graph=True)
    w = (-g_eps).clamp_min(0.0).detach()
    total = w.sum()
    weights = torch.where(total > 0, w / total.clamp_min(torch.finfo(w.dtype).tiny), torch.zeros_like(w))
    return weights, ce, ce_aux


def _manifest_path(root: Path, layout: str, suffix: str) -> Path:
    return root / (f"label_{suffix}_manifest.json" if layout == "h5" else f"labelsTr_{suffix}_manifest.json")


def clean_meta_cases(config, n: int) -> List[str]:
    """The first ``n`` training cases known to carry clean labels (module docstring).

    Raises:
        ConfigError: no way to tell which cases are clean (set ``method_options.meta_cases``).
    """
    d = config.data
    if d.root is None:
        raise ConfigError("reweight needs data.root to find its clean cases")
    root = Path(d.root)
    layout = d.layout or detect_layout(root)
    cases = training_case_names(root, layout, d.train_split)
    if d.noisy_labels:
        manifest = _manifest_path(root, layout, d.noisy_labels)
        if not manifest.is_file():
            raise ConfigError(f"reweight: no noise manifest {manifest} to tell the clean cases; set method_options.meta_cases")
        records = json.loads(manifest.read_text())["cases"]
        clean = {r["case"] for r in records if not r["noisy"]}
        cases = [c for c in cases if c in clean]
    if d.label_overrides:
        manifest = Path(d.label_overrides) / "manifest.json"
        meta = json.loads(manifest.read_text()) if manifest.is_file() else {}
        records = meta.get("records", meta.get("cases"))  # reproduce writes "records"
        if isinstance(records, list) and all(isinstance(r, dict) and "noisy" in r for r in records):
            # a noisy-label folder written by `reproduce` (every case, with its noise record)
            clean = {r["case"] for r in records if not r["noisy"]}
            cases = [c for c in cases if c in clean]
        else:  # other override files replace labels we cannot vouch for
            overridden = set(label_override_paths(d.label_overrides))
            cases = [c for c in cases if c not in overridden]
    if not cases:
        raise ConfigError("reweight: found no training case with clean labels; set method_options.meta_cases")
    return cases[:n]


@dataclass
class ReweightOptions:
    """Meta re-weighting's options.

    Attributes:
        backbone: ``"vnet"`` (PINT's comparison) or ``"densevoxnet"``.
        meta_cases: the clean cases (empty = :func:`clean_meta_cases`).
        meta_num_cases: how many clean cases to take when ``meta_cases`` is empty.
        meta_batch_size: clean crops per iteration (None = the size of this process's batch).
    """

    backbone: str = "vnet"
    meta_cases: List[str] = field(default_factory=list)
    meta_num_cases: int = 4
    meta_batch_size: Optional[int] = None


@register_method
class MetaReweight(Method):
    """Per-voxel meta re-weighting against a small clean set (module docstring)."""

    name = "reweight"
    description = "Meta re-weighting (Mirikharaji 2019): voxel weights from one virtual step on a clean set"
    Options = ReweightOptions

    @classmethod
    def validate_config(cls, config) -> None:
        o = config.method_options
        check_backbone(config, o.backbone)
        if o.meta_num_cases < 1:
            raise ConfigError(f"method_options.meta_num_cases must be >= 1, got {o.meta_num_cases}")
        if o.meta_batch_size is not None and o.meta_batch_size < 1:
            raise ConfigError(f"method_options.meta_batch_size must be >= 1 or null, got {o.meta_batch_size}")

    def build(self) -> None:
        self.model = build_backbone(self.config, self.options.backbone)
        self._meta_data = None  # opened on first use: build() must not need the data

    def networks(self) -> Dict[str, nn.Module]:
        return {"model": self.model}

    def meta_dataset(self):
        """The clean cases as a dataset of random crops with clean labels."""
        if self._meta_data is None:
            d = self.config.data
            cases = list(self.options.meta_cases) or clean_meta_cases(self.config, self.options.meta_num_cases)
            self._meta_data = open_dataset(
                d.root, d.train_split, layout=d.layout, cases=cases, crop_size=tuple(d.crop_size),
                augment=d.augment, seed=self.config.seed, num_classes=d.num_classes, cache=True,
            )
        return self._meta_data

    def meta_batch(self, iteration: int, size: int, device) -> Tuple[Tensor, Tensor]:
        """``size`` clean crops for ``iteration`` (a pure function of the seed and the iteration)."""
        data = self.meta_dataset()
        data.set_epoch(iteration)
        rng = np.random.default_rng([self.config.seed, int(iteration), 0x6D657461])
        items = [data[int(i)] for i in rng.integers(0, len(data), size=size)]
        image = torch.stack([it["image"] for it in items]).to(device)
        label = torch.stack([it["label"] for it in items]).to(device)
        return image, label

    def train_step(self, batch, iteration: int) -> Dict[str, Tensor]:
        size = self.options.meta_batch_size or batch.image.shape[0]
        clean_image, clean_label = self.meta_batch(iteration, size, batch.image.device)
        clean_image = clean_image.to(batch.image.dtype)
        w_aux = aux_weight_of(self.model)
        weights, ce, ce_aux = meta_voxel_weights(self.model, batch.image, batch.label, clean_image, clean_label,
                                                 self.lr_at(iteration), aux_weight=w_aux)
        main = (weights * ce).sum()
        loss, logs = main, {}
        if ce_aux is not None and w_aux > 0:
            aux = (weights * ce_aux).sum()
            loss = loss + w_aux * aux
            logs["loss_aux"] = aux.detach()
        return {"loss": loss, "loss_main": main.detach(), "weighted_fraction": (weights > 0).float().mean(),
                "plain_ce": ce.detach().mean(), **logs}

    def predict(self, x: Tensor) -> Tensor:
        return torch.softmax(main_and_aux(self.model(x))[0].float(), dim=1)
