"""Sizes of a reproduction: ``paper`` (the papers' settings, for a GPU), ``cpu`` and ``smoke``.

Only the *budget* changes between scales — crop, network width, iterations
and the amount of synthetic data; the learning rates (0.01) and the method's
own hyper-parameters (M = 4, gamma = 0.99, the input noise, soft pseudo
labels) stay the paper's. (A cpu-scale learning rate of 0.05 was tried: the
V-Net learns no better, and PINT's constant-rate phase 2 then ends on weights
that the eval-mode batch-norm statistics no longer match — it collapsed once.) Phase lengths keep the paper's proportions: the learning rate
is divided by 10 after 2500/6000 of phase 1, and PINT's image-level phase is
2000/6000 of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

__all__ = ["Scale", "SCALES", "default_scale"]


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
        return {
            "iterations": self.iterations,
            "batch_size": self.batch_size,
            "val_stride": list(self.val_stride),
            "checkpoint_every": max(1, min(500, self.iterations // 4)),
            "log_every": max(1, min(20, self.iterations // 50)),
            "data": {"crop_size": list(self.crop_size), "cache": self.cache, "num_workers": self.num_workers},
            "model": {"n_filters": self.n_filters},
            "optim": {"lr": self.lr, "lr_step": self.lr_step},
        }

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
        summary="scaled for a 2-core CPU: 48x48x32 crops, V-Net n_filters 4, batch 4, 450 it (+150 for PINT), "
                "SGD 0.01 /10 after 188 (PINT phase 2 at 0.01)",
        shape=(64, 64, 48), n_train=16, n_test=16,
        crop_size=(48, 48, 32), n_filters=4, batch_size=4, iterations=450, lr=0.01,
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


def default_scale(cuda_available: Optional[bool] = None) -> str:
    """``"paper"`` when a GPU is present, else ``"cpu"``."""
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    return "paper" if cuda_available else "cpu"
