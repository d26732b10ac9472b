"""Sizes of a reproduction: ``paper`` (the papers' settings, for a GPU), ``cpu`` and ``smoke``.

:data:`SCALES` sizes ``reproduce pint``, :data:`TSMAN_SCALES` ``reproduce tsman``.

Only the *budget* changes between scales — crop, network width, iterations
and the amount of synthetic data; the learning rates (0.01) and the method's
own hyper-parameters (M = 4, gamma = 0.99, the input noise, soft pseudo
labels) stay the paper's. (A cpu-scale learning rate of 0.05 was tried: the
V-Net learns no better, and PINT's constant-rate phase 2 then ends on weights
that the eval-mode batch-norm statistics no longer match — it collapsed once.) Phase lengths keep the paper's proportions: the learning rate
is divided by 10 after 2500/6000 of phase 1, and PINT's image-level phase is
2000/6000 of it.

The ``cpu`` budget was chosen by measurement (``scripts/regime_sweep.py``, the
table in ``docs/REGIME.md``): the smallest budget of the sweep at which the plain
V-Net reaches >= 85 % Dice on the clean labels of the synthetic test set and the
noisy-label V-Net (50 % noise) is >= 6 points lower, the regime in which PINT's
claim is tested (paper: 91.1 -> 82.6). The former ``n_filters`` 4 / 450-iteration
budget reached 73.7 % on clean labels: below the regime.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

__all__ = ["Scale", "SCALES", "default_scale", "TSMANScale", "TSMAN_SCALES", "tsman_base_iterations"]


def _budget_overrides(scale, checkpoint_cap: int) -> Dict[str, Any]:
    """The training-config values every scale sets: iterations, batch, crop, strides, logging cadence."""
    return {
        "iterations": scale.iterations,
        "batch_size": scale.batch_size,
        "val_stride": list(scale.val_stride),
        "checkpoint_every": max(1, min(checkpoint_cap, scale.iterations // 4)),
        "log_every": max(1, min(20, scale.iterations // 50)),
        "data": {"crop_size": list(scale.crop_size), "cache": scale.cache, "num_workers": scale.num_workers},
    }


@dataclass(frozen=True)
class Scale:
    """One reproduction size.

    Attributes:
        name, summary: identification and a one-line description (printed with the table).
        shape, n_train, n_test: the synthetic dataset (used when no ``--data`` is given).
        crop_size, n_filters, batch_size, iterations, lr: the training budget.
        val_stride: sliding-window stride for the test volumes.
        noise_rates, repeats: defaults of ``--noise-rates`` / ``--repeats``.
        cache: keep volumes in memory (small data only).
        num_workers: DataLoader workers (the paper-scale GPU would otherwise wait for h5 reads).
    """

    name: str
    summary: str
    shape: Tuple[int, int, int]
    n_train: int
    n_test: int
    crop_size: Tuple[int, int, int]
    n_filters: int
    batch_size: int
    iterations: int
    lr: float
    val_stride: Tuple[int, int, int]
    noise_rates: Tuple[float, ...]
    repeats: int
    cache: bool
    num_workers: int = 0

    @property
    def lr_step(self) -> int:
        """Iterations between the divisions by 10 (paper: 2500 of 6000)."""
        return max(1, round(self.iterations * 2500 / 6000))

    @property
    def image_phase_iterations(self) -> int:
        """PINT's phase 2 (paper: 2000 after 6000)."""
        return max(1, round(self.iterations * 2000 / 6000))

    def config_overrides(self) -> Dict[str, Any]:
        """The training-config values of this scale (merged over the paper defaults)."""
        overrides = _budget_overrides(self, checkpoint_cap=500)
        overrides["model"] = {"n_filters": self.n_filters}
        overrides["optim"] = {"lr": self.lr, "lr_step": self.lr_step}
        return overrides

    def method_overrides(self, method: str) -> Dict[str, Any]:
        """Per-method option values of this scale (PINT's phase-2 length and learning rate)."""
        if method == "pint":
            return {"image_phase_iterations": self.image_phase_iterations, "image_phase_lr": self.lr}
        return {}


SCALES: Dict[str, Scale] = {
    "paper": Scale(
        name="paper",
        summary="the papers' settings: 112x112x80 crops, V-Net n_filters 16, batch 4, 6000 it (+2000 for PINT), "
                "SGD 0.01 /10 every 2500 (a GPU run)",
        shape=(128, 128, 96), n_train=80, n_test=20,
        crop_size=(112, 112, 80), n_filters=16, batch_size=4, iterations=6000, lr=0.01,
        val_stride=(18, 18, 4), noise_rates=(0.25, 0.5, 0.75), repeats=3, cache=False, num_workers=4,
    ),
    "cpu": Scale(
        name="cpu",
        summary="scaled for a 2-core CPU: 48x48x32 crops, V-Net n_filters 8, batch 4, 600 it (+200 for PINT), "
                "SGD 0.01 /10 every 250 (PINT phase 2 at 0.01)",
        shape=(64, 64, 48), n_train=16, n_test=16,
        crop_size=(48, 48, 32), n_filters=8, batch_size=4, iterations=600, lr=0.01,
        val_stride=(16, 16, 8), noise_rates=(0.5,), repeats=1, cache=True,
    ),
    "smoke": Scale(
        name="smoke",
        summary="a few iterations on tiny volumes, to check the pipeline (numbers meaningless)",
        shape=(32, 32, 32), n_train=4, n_test=2,
        crop_size=(32, 32, 16), n_filters=2, batch_size=2, iterations=3, lr=0.01,
        val_stride=(16, 16, 16), noise_rates=(0.5,), repeats=1, cache=True,
    ),
}


#: TSMAN's schedule ("Implementation Details"): the retrained TSMAN runs 35,000 iterations, the three base
#: models of the distillation 10,000 / 15,000 / 20,000
TSMAN_ITERATIONS = 35000
TSMAN_BASE_ITERATIONS = (10000, 15000, 20000)


def tsman_base_iterations(iterations: int) -> Tuple[int, ...]:
    """The base models' iterations for a final run of ``iterations``, in TSMAN's proportions (10k/15k/20k of 35k).

    Example:
        >>> tsman_base_iterations(35000), tsman_base_iterations(700)
        ((10000, 15000, 20000), (200, 300, 400))
    """
    return tuple(max(1, round(iterations * b / TSMAN_ITERATIONS)) for b in TSMAN_BASE_ITERATIONS)


@dataclass(frozen=True)
class TSMANScale:
    """One size of ``reproduce tsman``.

    TSMAN trains DenseVoxNet streams "following the settings in (Yu et al.
    2017a)" for 35,000 iterations: SGD, lr 0.05 with the poly policy of power
    0.9, momentum 0.9, weight decay 5e-4, 64^3 crops, batch 3 (DenseVoxNet's
    values as its re-implementations list them; TSMAN's text names none of
    them). As for PINT, only the budget changes
    between scales (crop, DenseVoxNet's widths, iterations, data); the
    optimizer and the loss stay the paper's, and the base models keep the
    10k/15k/20k-of-35k proportions (:func:`tsman_base_iterations`).

    Sizing of ``cpu`` (measured on this 2-core machine while it ran other
    jobs, so as CPU time): one training step of these streams on a batch of
    3 crops of 48x48x32 costs 0.63 CPU-s, one 48x48x32 window of inference
    0.085 CPU-s. The reproduction trains 3 x (86 + 129 + 171) base-model
    iterations (three labelled fractions) and 5 x 300 for Table 2 (~2660
    steps), and distils 14 unlabelled 64x64x48 cases with 3 models x 12
    transforms x 8 windows: ~28 + 6 minutes on one thread. Measured on
    2 cores: one labelled fraction (3 base runs + distillation) takes ~6.5
    minutes, so the whole scale ~35 minutes (2026-12-03, base runs 47/64/86 s,
    distillation 169 s). A 300-step plain-CE run on
    clean labels reached Dice 0.68 on the 10 test cases; the smoke sizes
    were still all background after 120 steps.

    Attributes:
        name, summary: identification and a one-line description (printed with the tables).
        shape, n_train, n_test: the synthetic dataset (used when no ``--data`` is given).
        crop_size, batch_size, iterations, lr: the budget of the retrained TSMAN runs.
        stem_channels, growth_rate, n_layers, up_channels: DenseVoxNet's sizes (paper: 16, 12, 12 + 12, 128/64).
        val_stride: sliding-window stride for the test volumes and the distillation.
        labelled_fractions: Table 1's ``xi`` values (defaults of ``--labelled-fractions``).
        ablation_fraction: the ``xi`` of Table 2's retraining (default of ``--ablation-fraction``).
        repeats, cache, num_workers: as :class:`Scale`.
    """

    name: str
    summary: str
    shape: Tuple[int, int, int]
    n_train: int
    n_test: int
    crop_size: Tuple[int, int, int]
    batch_size: int
    iterations: int
    lr: float
    stem_channels: int
    growth_rate: int
    n_layers: Tuple[int, int]
    up_channels: Tuple[int, int]
    val_stride: Tuple[int, int, int]
    labelled_fractions: Tuple[float, ...]
    ablation_fraction: float
    repeats: int
    cache: bool
    num_workers: int = 0

    def config_overrides(self) -> Dict[str, Any]:
        """The training-config values of this scale (merged over the library defaults, which are PINT's)."""
        overrides = _budget_overrides(self, checkpoint_cap=1000)
        overrides["optim"] = {"name": "sgd", "lr": self.lr, "momentum": 0.9, "weight_decay": 5e-4,
                              "lr_policy": "poly", "poly_power": 0.9}
        return overrides

    def method_overrides(self) -> Dict[str, Any]:
        """TSMAN's network sizes of this scale (the attention switches are set per Table 2 row)."""
        return {"subnet": "densevoxnet", "stem_channels": self.stem_channels, "growth_rate": self.growth_rate,
                "n_layers": list(self.n_layers), "up_channels": list(self.up_channels)}


TSMAN_SCALES: Dict[str, TSMANScale] = {
    "paper": TSMANScale(
        name="paper",
        summary="TSMAN's settings: DenseVoxNet streams (16, 12, 12+12 layers), 64^3 crops, batch 3, 35000 it "
                "(base models 10000/15000/20000), SGD 0.05 poly 0.9, wd 5e-4 (a GPU run)",
        shape=(128, 128, 96), n_train=10, n_test=10,
        crop_size=(64, 64, 64), batch_size=3, iterations=35000, lr=0.05,
        stem_channels=16, growth_rate=12, n_layers=(12, 12), up_channels=(128, 64),
        val_stride=(32, 32, 32), labelled_fractions=(0.3, 0.5, 0.8), ablation_fraction=0.5, repeats=1,
        cache=False, num_workers=4,
    ),
    "cpu": TSMANScale(
        name="cpu",
        summary="scaled for a 2-core CPU: 48x48x32 crops, DenseVoxNet streams (stem 8, growth 4, 3+3 layers, "
                "up 32/16), batch 3, 300 it (base models 86/129/171), SGD 0.05 poly 0.9",
        shape=(64, 64, 48), n_train=10, n_test=10,
        crop_size=(48, 48, 32), batch_size=3, iterations=300, lr=0.05,
        stem_channels=8, growth_rate=4, n_layers=(3, 3), up_channels=(32, 16),
        val_stride=(16, 16, 16), labelled_fractions=(0.3, 0.5, 0.8), ablation_fraction=0.5, repeats=1, cache=True,
    ),
    "smoke": TSMANScale(
        name="smoke",
        summary="a few iterations on tiny volumes, to check the pipeline (numbers meaningless: the networks "
                "predict all foreground or all background, where ASD/HD are inf)",
        shape=(32, 32, 32), n_train=4, n_test=2,
        crop_size=(32, 32, 16), batch_size=2, iterations=4, lr=0.05,
        stem_channels=4, growth_rate=2, n_layers=(1, 1), up_channels=(4, 4),
        val_stride=(16, 16, 16), labelled_fractions=(0.5,), ablation_fraction=0.5, repeats=1, cache=True,
    ),
}


def default_scale(cuda_available: Optional[bool] = None) -> str:
    """``"paper"`` when a GPU is present, else ``"cpu"``."""
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    return "paper" if cuda_available else "cpu"
