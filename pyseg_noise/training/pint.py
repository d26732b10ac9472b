"""PINT (Shi & Wu, MICCAI 2021): pixel-wise and image-level noise-tolerant learning.

One training step, as in the paper (§2, Fig. 1)::

    f      = student(X)                                       # V-Net, dropout on (train mode)
    for m in 1..M:                                            # M = 4 perturbed teacher passes
        p_m = softmax(teacher(X + clamp(0.1 N(0, 1), -0.2, 0.2), dropout on))
    p_hat  = mean_m p_m ;  u = entropy(p_hat)                 # Eq. (1), streamed: one pass in memory
    phase 1 (pixel, "PNT"):  L = mean_v [ e^{-u_v} CE(f_v, y_v) + (1 - e^{-u_v}) MSE(f_v, p_hat_v) ]   Eq. (2)-(3)
    phase 2 (image, "INT"):  L = mean_i [ e^{-U_i} CE_i + (1 - e^{-U_i}) MSE_i ],  U_i = mean_{v in slice i} u_v   Eq. (4)-(5)
    SGD step on the student; teacher <- EMA(student), decay min(1 - 1/(t+1), 0.99)

Schedules (§3.1): phase 1 runs ``iterations`` (6000) steps at lr 0.01 divided
by 10 every 2500; phase 2 runs ``image_phase_iterations`` (2000) steps at the
"high" constant lr 0.01. The registered variants:

========  ==============================================  =====================================
name      phases                                          Table 1 row
========  ==============================================  =====================================
``pnt``   pixel-wise for ``iterations``                   PNT
``int``   image-wise for ``iterations`` (phase-1 schedule)  INT
``pint``  pixel-wise, then image-wise                      PINT
========  ==============================================  =====================================

The paper does not give INT's schedule; INT here gets PNT's, so the two
single-level variants have the same budget.

Choices the paper leaves open, with the default taken:

* the teacher's M passes run as in the mean-teacher and UA-MT code bases PINT
  builds on: the teacher network in train mode, so batch norm normalises with
  the statistics of the (perturbed) batch itself, and dropout on
  (``VNet(..., dropout=True)``); dropout and input noise are its
  perturbations. Only the weights are averaged; batch-norm running statistics
  are not averaged (the EMA helper copies the student's, used only when the
  teacher predicts in eval mode). ``teacher_batchnorm: running`` runs the
  teacher in eval mode instead, on those copied running statistics: they
  belong to the *current* student, not to the averaged weights, and in short
  runs (where the weights still move fast) that mismatch drives the teacher to
  predict background everywhere — see the collapse notes in the README;
* the input noise ``clamp(0.1 N(0,1), -0.2, 0.2)`` is the UA-MT code base's,
  which PINT's teacher set-up follows; it is drawn per sample from a generator
  keyed by the sample's stream position (the same with any number of processes);
* pseudo labels are soft (``p_hat``), the entropy un-normalised (``alpha >= 0.5``
  for two classes);
* the optimizer (and its momentum) carries over from phase 1 to phase 2;
* prediction uses the student (the "main network").

Not in the paper, default off: ``ce_warmup_iterations`` trains the first
iterations with plain cross-entropy (the teacher still follows by EMA), a
remedy for the collapse of short runs (see :mod:`pyseg_noise.training.collapse`);
``reproduce`` reports whenever it is on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyseg_noise.ops import TeacherUncertaintyAccumulator, pint_image_loss, pint_pixel_loss, slice_uncertainty

from .config import ConfigError, TrainConfig
from .ema import EMATeacher
from .lr_schedule import learning_rate
from .method import Batch, Method, check_vnet_crop
from .registry import register_method
from .speed import SpeedPlan
from .step_parts import part
from .vnet import build_vnet

__all__ = ["PINTOptions", "PINTMethod", "PNT", "INT", "PINT", "perturbed_teacher_uncertainty"]


@dataclass
class PINTOptions:
    """PINT's hyper-parameters (defaults: the paper's, §3.1, and the UA-MT teacher it follows).

    Attributes:
        ema_decay: gamma of the EMA teacher (0.99), warmed up as ``min(1 - 1/(t+1), gamma)``.
        passes: M, teacher passes per step (4).
        noise_std: sigma of the Gaussian input perturbation (0.1).
        noise_clip: the perturbation is clamped to [-clip, clip] (0.2).
        teacher_dropout: teacher passes with dropout on (the stochastic forward passes of §2.1).
        teacher_batchnorm: ``"batch"`` (teacher in train mode: batch norm on each pass's own
            batch statistics, as the mean-teacher / UA-MT code) or ``"running"`` (eval mode, the
            running statistics copied from the student).
        pseudo_label: ``"soft"`` (p_hat) or ``"hard"`` (its one-hot argmax).
        normalize_entropy: divide u by log C (SPEC 2 option; the paper does not).
        slice_dim: spatial axis cutting a volume into the "images" of §2.2 (-1: Z, the axial slices).
        image_phase_iterations: phase 2 length for ``pint`` (2000).
        image_phase_lr: phase 2's constant "high" learning rate (0.01).
        ce_warmup_iterations: NOT in the paper (0 = off): plain CE for the first N iterations.
        predict_with: ``"student"`` (the paper's main network) or ``"teacher"``.
    """

    ema_decay: float = 0.99
    passes: int = 4
    noise_std: float = 0.1
    noise_clip: float = 0.2
    teacher_dropout: bool = True
    teacher_batchnorm: str = "batch"
    pseudo_label: str = "soft"
    normalize_entropy: bool = False
    slice_dim: int = -1
    image_phase_iterations: int = 2000
    image_phase_lr: float = 0.01
    ce_warmup_iterations: int = 0
    predict_with: str = "student"


def perturbed_teacher_uncertainty(teacher: nn.Module, image: Tensor, noise, *, passes: int, noise_std: float,
                                  noise_clip: float, dropout: bool,
                                  speed: Optional[SpeedPlan] = None) -> Tuple[Tensor, Tensor]:
    """PINT Eq. (1): mean softmax and entropy of ``passes`` teacher passes on perturbed inputs.

    The passes are streamed into a :class:`~pyseg_noise.ops.TeacherUncertaintyAccumulator`, so only
    one pass's logits are ever in memory.

    Args:
        teacher: the EMA network (called as ``teacher(x, dropout=dropout)``).
        image (Tensor[B, C_in, X, Y, Z]): the batch.
        noise: ``noise(m) -> Tensor like image`` of N(0, 1) values for pass ``m``.
        passes: M.
        noise_std, noise_clip: the perturbation is ``clamp(noise_std * noise(m), -clip, clip)``.
        dropout: teacher dropout on.
        speed: the run's :class:`~pyseg_noise.training.speed.SpeedPlan`: the passes run in its
            :meth:`~pyseg_noise.training.speed.SpeedPlan.teacher_passes` context
            (``inference_mode``, bf16/fp16 autocast where resolved). None: ``no_grad`` in the
            ambient precision.

    Returns:
        (p_hat (Tensor[B, C, X, Y, Z]), u (Tensor[B, X, Y, Z])), float32 (float64 for float64 logits).
    """
    acc = TeacherUncertaintyAccumulator()
    with (speed.teacher_passes() if speed is not None else torch.no_grad()):
        for m in range(passes):
            perturbation = (noise(m) * noise_std).clamp_(-noise_clip, noise_clip)
            acc.add(teacher(image + perturbation, dropout=dropout))
    # outside inference mode: the results are ordinary tensors the loss may save for backward
    with torch.no_grad():
        return acc.compute()


class PINTMethod(Method):
    """Shared machinery of ``pnt``, ``int`` and ``pint``; subclasses set :attr:`phases`."""

    Options = PINTOptions
    #: loss per phase, in order: "pixel" and/or "image"
    phases: Tuple[str, ...] = ()

    @classmethod
    def validate_config(cls, config: TrainConfig) -> None:
        check_vnet_crop(config)
        o: PINTOptions = config.method_options
        if o.passes < 1:
            raise ConfigError(f"method_options.passes (M) must be >= 1, got {o.passes}")
        if not 0.0 <= o.ema_decay <= 1.0:
            raise ConfigError(f"method_options.ema_decay must be in [0, 1], got {o.ema_decay}")
        if o.noise_std < 0 or o.noise_clip <= 0:
            raise ConfigError(f"method_options.noise_std must be >= 0 and noise_clip > 0, got {o.noise_std}, "
                              f"{o.noise_clip}")
        if o.pseudo_label not in ("soft", "hard"):
            raise ConfigError(f"method_options.pseudo_label must be soft or hard, got {o.pseudo_label!r}")
        if o.teacher_batchnorm not in ("batch", "running"):
            raise ConfigError(f"method_options.teacher_batchnorm must be batch or running, got {o.teacher_batchnorm!r}")
        if o.predict_with not in ("student", "teacher"):
            raise ConfigError(f"method_options.predict_with must be student or teacher, got {o.predict_with!r}")
        if o.teacher_dropout and not config.model.dropout:
            raise ConfigError("method_options.teacher_dropout needs model.dropout: true (the V-Net's dropout layers)")
        if o.ce_warmup_iterations < 0:
            raise ConfigError(f"method_options.ce_warmup_iterations must be >= 0, got {o.ce_warmup_iterations}")
        if "image" in cls.phases and len(cls.phases) > 1:
            if o.image_phase_iterations < 1:
                raise ConfigError(f"method_options.image_phase_iterations must be >= 1, got {o.image_phase_iterations}")
            if o.image_phase_lr <= 0:
                raise ConfigError(f"method_options.image_phase_lr must be > 0, got {o.image_phase_lr}")
        if not -3 <= o.slice_dim <= 2:
            raise ConfigError(f"method_options.slice_dim must index a spatial axis (-3..2), got {o.slice_dim}")

    # ------------------------------------------------------------------ networks
    def build(self) -> None:
        self.student = build_vnet(self.config)
        self.ema = EMATeacher(self.student, self.options.ema_decay)
        self.ema.teacher.eval()

    def networks(self) -> Dict[str, nn.Module]:
        return {"student": self.student}

    def modules(self) -> List[nn.Module]:
        return [self.student, self.ema.teacher]

    def state_dict(self) -> dict:
        return {"ema": self.ema.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.ema.load_state_dict(state["ema"])
        self.ema.teacher.eval()

    # ------------------------------------------------------------------ schedule
    def total_iterations(self) -> int:
        extra = self.options.image_phase_iterations if len(self.phases) > 1 else 0
        return self.config.iterations + extra

    def phase_at(self, iteration: int) -> str:
        """``"ce"`` (warm-up, off by default), ``"pixel"`` or ``"image"``."""
        if iteration < self.options.ce_warmup_iterations:
            return "ce"
        return self.phases[0] if iteration < self.config.iterations else self.phases[-1]

    def lr_at(self, iteration: int) -> float:
        if iteration < self.config.iterations:
            return learning_rate(self.config.optim, iteration, self.config.iterations)
        return self.options.image_phase_lr

    # ------------------------------------------------------------------ one step
    def _teacher_for_passes(self) -> nn.Module:
        teacher = self.ema.teacher
        teacher.train(self.options.teacher_batchnorm == "batch")
        return teacher

    def teacher_uncertainty(self, batch: Batch) -> Tuple[Tensor, Tensor]:
        o = self.options
        try:
            return perturbed_teacher_uncertainty(self._teacher_for_passes(), batch.image, batch.normal_like_image,
                                                 passes=o.passes, noise_std=o.noise_std, noise_clip=o.noise_clip,
                                                 dropout=o.teacher_dropout, speed=self.speed)
        finally:
            self.ema.teacher.eval()

    def train_step(self, batch: Batch, iteration: int) -> Dict[str, Tensor]:
        o = self.options
        phase = self.phase_at(iteration)
        with part("student_forward"):
            logits = self.student(batch.image)
        if phase == "ce":
            return {"loss": F.cross_entropy(logits.float(), batch.label), "phase": torch.tensor(0.0)}
        with part("teacher_passes"):
            prob, entropy = self.teacher_uncertainty(batch)
        kwargs = dict(pseudo_label=o.pseudo_label, normalize_entropy=o.normalize_entropy)
        with part("loss"):
            if phase == "pixel":
                loss = pint_pixel_loss(logits, batch.label, prob, **kwargs)
            else:
                loss = pint_image_loss(logits, batch.label, prob, slice_dim=o.slice_dim, **kwargs)
        if phase == "pixel":
            alpha = torch.exp(-entropy.float()).mean()
        else:
            alpha = torch.exp(-slice_uncertainty(entropy.float(), slice_dim=o.slice_dim)).mean()
        with torch.no_grad():
            teacher_fg = (prob.argmax(1) > 0).float().mean()
            student_fg = (logits.argmax(1) > 0).float().mean()
        return {
            "loss": loss.float(),
            "uncertainty": entropy.float().mean(),
            "alpha": alpha,
            "teacher_fg": teacher_fg,
            "student_fg": student_fg,
            "phase": torch.tensor(1.0 if phase == "pixel" else 2.0),
        }

    def after_step(self, iteration: int) -> None:
        self.ema.update(self.student, iteration)

    # ------------------------------------------------------------------ inference
    def predict(self, x: Tensor) -> Tensor:
        net = self.student if self.options.predict_with == "student" else self.ema.teacher
        return net(x, dropout=False).float().softmax(1)

    def uncertainty(self, x: Tensor) -> Optional[Tensor]:
        o = self.options
        gen = torch.Generator(device=x.device).manual_seed(self.config.seed)
        noise = lambda m: torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)  # noqa: E731
        try:
            _, entropy = perturbed_teacher_uncertainty(self._teacher_for_passes(), x, noise, passes=o.passes,
                                                       noise_std=o.noise_std, noise_clip=o.noise_clip,
                                                       dropout=o.teacher_dropout, speed=self.speed)
        finally:
            self.ema.teacher.eval()
        return entropy


@register_method
class PNT(PINTMethod):
    """PINT with pixel-wise noise-tolerant learning only (Table 1 "PNT")."""

    name = "pnt"
    description = "PINT phase 1 only: pixel-wise uncertainty-weighted CE + MSE to the EMA teacher"
    phases = ("pixel",)


@register_method
class INT(PINTMethod):
    """PINT with image-level noise-tolerant learning only (Table 1 "INT")."""

    name = "int"
    description = "PINT image-level learning only: slice-wise uncertainty-weighted CE + MSE"
    phases = ("image",)


@register_method
class PINT(PINTMethod):
    """The full two-phase PINT: pixel-wise, then image-level (Table 1 "PINT")."""

    name = "pint"
    description = "PINT: pixel-wise phase (6000 it), then image-level phase (2000 it at lr 0.01)"
    phases = ("pixel", "image")
