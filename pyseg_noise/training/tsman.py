"""TSMAN training (Min et al., AAAI 2019): two streams, mutual attention, loss attention.

The network is :class:`pyseg_noise.models.TSMAN` — two DenseVoxNet streams
linked by channel attention (f1, f2) and spatial attention (f3). The loss is
TSMAN Eq. (6) with the loss attention f4 of Eq. (7) (SPEC 5-6), computed by
the fused op :func:`pyseg_noise.ops.tsman_loss`:

    att  = omega * (argmax a XOR argmax b)                  (3x3 in-plane Gaussian, sigma^2 = 0.5)
    L    = mean_v att_v ce_v(a) + mean_v att_v ce_v(b)
    L   += aux_weight * [CE(aux_a) + CE(aux_b)]             (DenseVoxNet's plain deep supervision)

**Two stages: TSMAN fine-tunes CE-trained streams.** The paper ignores the
agreed voxels "in back-propagation for model fine-tuning", and its schedule
trains base models first (10k/15k/20k iterations) and TSMAN after (35k); its
Table 2 "Baseline" is the network without any attention. Trained from random
weights under f4 the streams collapse: "both streams agree everywhere" (on
background, early on) is a fixed point of ``att * CE`` with zero gradient.
So a run has two stages:

1. **stage 1** — the two streams, with their different random
   initialisations, are trained as two independent DenseVoxNets with plain CE
   and deep supervision (no mutual attention, no f4). The SA/CA modules are
   not used and so receive no gradient: they start stage 2 fresh (at their
   initialisation).
2. **stage 2** — attended fine-tuning: the mutual attentions of
   ``attention_points`` and f4 (if ``loss_attention``).

Stage 1's length is ``stage1_fraction`` of the run's iterations. Its default
(None) is the paper's proportion: a base model trains 15,000 iterations (the
mean of 10k/15k/20k) before TSMAN's 35,000, so stage 1 is
15,000 / (15,000 + 35,000) = **0.3** of a run, and 0 when ``init_streams``
names two trained runs (the streams then already are CE-trained networks, as
in the self-training: :mod:`pyseg_noise.training.self_training` fine-tunes
from its base models A and B). The learning-rate policy restarts at the
boundary (stage 1 over its own length, stage 2 over the rest), as two
separate trainings would; the optimizer's momentum carries over.

``init_streams: [run_a, run_b]``: two *different* run folders (or checkpoint
files) of :mod:`plain DenseVoxNet runs <pyseg_noise.training.densevoxnet>`
with this run's sizes and classes, loaded into stream a and b before the
first iteration (the paper's "different initializations"). A resumed or
reloaded run reads its own checkpoint instead.

**Auxiliary heads.** DenseVoxNet's aux heads keep their plain deep
supervision (``aux_loss: ce``): the paper gates only the final loss. The
opt-in ``aux_loss: attended`` gates them with *their own* attention map
(from the two aux heads' disagreement).

**Opt-in departures** (each is listed by :func:`tsman_departures` and printed
by ``reproduce tsman``):

* ``warmup_fraction > 0``: the former fixed-fraction warm-up — the full
  network (mutual attentions on) with f4 off for that share of the run, f4
  after, one learning-rate schedule; no stage 1 (``stage1_fraction`` must
  then be 0 or unset).
* ``stage_switch: criterion``: stage 1 ends early, after the first
  iteration at which the streams disagree on at least
  ``switch_min_disagreement`` (1 %) of the batch's voxels and each stream's
  predicted foreground is within a factor ``switch_fg_factor`` (2) of the
  labels' (values averaged over processes); at the latest after
  ``stage1_fraction``. The switch iteration is kept in the checkpoint.
* ``aux_loss: attended`` (above); ``subnet: vnet``.

Switching f4 off (``loss_attention: false``, Table 2's rows without f4) uses
the plain cross-entropy of both streams in stage 2: with every attention off,
TSMAN is two independent networks trained with CE. The test-time prediction
is the mean of the two streams' softmax.

Table 2 of the paper, as options (``attention_points`` lists the mutual
attentions in the network; f1 and f2 are channel attention, f3 spatial):

===============  ======================  ================
row              attention_points        loss_attention
===============  ======================  ================
Baseline         []                      false
f4               []                      true
f3 + f4          [f3]                    true
f2 + f3 + f4     [f2, f3]                true
f1..f4 (TSMAN)   [f1, f2, f3]            true
===============  ======================  ================

The paper's schedule (DenseVoxNet's settings with 35,000 iterations) is not
this library's default (PINT's); a TSMAN run as published sets
``iterations: 50000`` (15,000 of stage 1 + 35,000) or fine-tunes two trained
DenseVoxNet runs with ``iterations: 35000, method_options: {init_streams: [A, B]}``,
with ``optim: {lr: 0.05, lr_policy: poly, poly_power: 0.9, weight_decay: 0.0005}``
and ``data: {crop_size: [64, 64, 64]}`` (DenseVoxNet's 64^3 crops, batch size as
the GPU allows).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyseg_noise.models import TSMAN, VNet
from pyseg_noise.ops import tsman_loss as _tsman_loss_op

from . import distributed as ddp
from .checkpoint import checkpoint_path, load_checkpoint
from .config import ConfigError, config_from_dict
from .densevoxnet import DENSEVOXNET_SIZE_KEYS, check_densevoxnet_options, densevoxnet_kwargs
from .lr_schedule import learning_rate
from .method import Method
from .registry import register_method

__all__ = ["TSMANOptions", "TSMANMethod", "tsman_pair_loss", "tsman_training_loss", "tsman_departures",
           "ATTENTION_POINTS", "PAPER_STAGE1_FRACTION", "AUX_LOSSES", "STAGE_SWITCHES"]

#: the network's mutual attention points: f1, f2 channel attention, f3 spatial attention
ATTENTION_POINTS = ("f1", "f2", "f3")

#: stage 1's share of a run in the paper's proportions: a 15,000-iteration base model (the mean of
#: 10k/15k/20k) before TSMAN's 35,000 -> 15 / (15 + 35)
PAPER_STAGE1_FRACTION = 15000 / (15000 + 35000)

#: ``aux_loss`` values: DenseVoxNet's plain deep supervision (the paper) or attended by the aux pair's own map
AUX_LOSSES = ("ce", "attended")

#: ``stage_switch`` values: after ``stage1_fraction`` (the paper's proportions) or by the opt-in criterion
STAGE_SWITCHES = ("fixed", "criterion")


def tsman_pair_loss(logits_a: Tensor, logits_b: Tensor, target: Tensor, *, loss_attention: bool = True,
                    sigma2: float = 0.5, kernel_size: int = 3, spatial_dims: int = 2,
                    slice_dim: int = -1) -> Tuple[Tensor, Optional[Tensor]]:
    """The loss of one pair of stream outputs: TSMAN Eq. (6)-(7), or plain CE of both without f4.

    Args:
        logits_a, logits_b (Tensor[B, C, *S]): the two streams' logits.
        target (Tensor[B, *S]): integer labels.
        loss_attention: use f4; False = ``CE(a) + CE(b)`` (means over all voxels).
        sigma2, kernel_size, spatial_dims, slice_dim: the Gaussian of Eq. (7) (SPEC 5).

    Returns:
        ``(loss, attention)``: the scalar loss and the attention map (Tensor[B, *S]), None without f4.
    """
    if not loss_attention:
        loss = F.cross_entropy(logits_a.float(), target.long()) + F.cross_entropy(logits_b.float(), target.long())
        return loss, None
    kw = dict(sigma2=sigma2, kernel_size=kernel_size, spatial_dims=spatial_dims, slice_dim=slice_dim)
    return _tsman_loss_op(logits_a, logits_b, target, return_attention=True, **kw)


def tsman_training_loss(outputs, target: Tensor, *, loss_attention: bool = True, aux_weight: float = 0.33,
                        aux_loss: str = "ce", **smoothing) -> Tuple[Tensor, Dict[str, Tensor]]:
    """TSMAN's training loss from the train-mode outputs ``(a, b, aux_a, aux_b)`` of :class:`~pyseg_noise.models.TSMAN`.

    ``loss = pair(a, b) + aux_weight * aux`` with :func:`tsman_pair_loss`; ``aux`` is
    ``CE(aux_a) + CE(aux_b)`` (``aux_loss="ce"``, DenseVoxNet's deep supervision, the
    paper) or ``pair(aux_a, aux_b)`` with the aux pair's own attention map
    (``"attended"``; plain CE too without f4). The aux term is skipped for
    sub-networks without aux heads or ``aux_weight == 0``.

    Returns:
        ``(loss, logs)``; ``logs`` holds detached scalars: ``loss_main``, ``loss_aux``,
        ``disagreement`` (share of voxels where the streams' argmax differ), ``fg_pred``
        (the streams' mean share of voxels predicted as foreground, class > 0), ``fg_label``
        (the labels' share) and, with f4, ``attention_mean``.

    Raises:
        ValueError: unknown ``aux_loss``.
    """
    if aux_loss not in AUX_LOSSES:
        raise ValueError(f"aux_loss must be one of {', '.join(AUX_LOSSES)}, got {aux_loss!r}")
    a, b, aux_a, aux_b = outputs
    main, att = tsman_pair_loss(a, b, target, loss_attention=loss_attention, **smoothing)
    loss = main
    with torch.no_grad():
        pa, pb = a.argmax(1), b.argmax(1)
        logs = {"loss_main": main.detach(), "disagreement": (pa != pb).float().mean(),
                "fg_pred": 0.5 * ((pa > 0).float().mean() + (pb > 0).float().mean()),
                "fg_label": (target > 0).float().mean()}
        if att is not None:
            logs["attention_mean"] = att.float().mean()
    if aux_a is not None and aux_b is not None and aux_weight > 0:
        aux, _ = tsman_pair_loss(aux_a, aux_b, target, loss_attention=loss_attention and aux_loss == "attended",
                                 **smoothing)
        loss = loss + aux_weight * aux
        logs["loss_aux"] = aux.detach()
    return loss, logs


@dataclass
class TSMANOptions:
    """TSMAN's options (defaults: the paper's network, loss and schedule; module docstring).

    Attributes:
        subnet: ``"densevoxnet"`` (the paper's) or ``"vnet"`` (V-Net from ``config.model``).
        stem_channels, growth_rate, n_layers, dropout_rate, up_channels: DenseVoxNet's
            sizes (16, 12, 12 + 12 layers, 0.2, 128/64).
        aux_weight: weight of the aux heads' loss; None = DenseVoxNet's 0.33.
        attention_points: which mutual attentions the network has: f1, f2 (channel), f3 (spatial).
        loss_attention: f4 (Eq. (7)) in stage 2; false = plain CE of both streams.
        stage1_fraction: share of the iterations in stage 1 (two independent streams, plain
            CE); None = :data:`PAPER_STAGE1_FRACTION` (0.3), or 0 with ``init_streams``.
        init_streams: two different run folders / checkpoint files of ``densevoxnet`` runs
            to start the streams from (None = random initialisations).
        aux_loss: ``"ce"`` (DenseVoxNet's deep supervision, the paper) or ``"attended"`` (opt-in).
        stage_switch: ``"fixed"`` (after ``stage1_fraction``) or ``"criterion"`` (opt-in).
        switch_min_disagreement, switch_fg_factor: the criterion (0.01, 2.0).
        warmup_fraction: opt-in former warm-up: share of the run trained through the full
            network with f4 off, no stage 1 (0 = off).
        channel_reduction: reduction of the channel attention's MLP.
        sigma2, kernel_size, spatial_dims: f4's Gaussian (0.5, 3, in-plane).
    """

    subnet: str = "densevoxnet"
    stem_channels: int = 16
    growth_rate: int = 12
    n_layers: List[int] = field(default_factory=lambda: [12, 12])
    dropout_rate: float = 0.2
    up_channels: List[int] = field(default_factory=lambda: [128, 64])
    aux_weight: Optional[float] = None
    attention_points: List[str] = field(default_factory=lambda: list(ATTENTION_POINTS))
    loss_attention: bool = True
    stage1_fraction: Optional[float] = None
    init_streams: Optional[List[str]] = None
    aux_loss: str = "ce"
    stage_switch: str = "fixed"
    switch_min_disagreement: float = 0.01
    switch_fg_factor: float = 2.0
    warmup_fraction: float = 0.0
    channel_reduction: int = 8
    sigma2: float = 0.5
    kernel_size: int = 3
    spatial_dims: int = 2


def tsman_departures(options: TSMANOptions) -> List[str]:
    """One line per opt-in departure from the paper that ``options`` switch on (empty: the paper's TSMAN)."""
    out = []
    if options.subnet != "densevoxnet":
        out.append(f"sub-network {options.subnet} instead of DenseVoxNet (method_options.subnet)")
    if options.warmup_fraction > 0:
        out.append(f"fixed warm-up instead of fine-tuning CE-trained streams: the first "
                   f"{100 * options.warmup_fraction:.0f}% of the iterations run the full network (mutual "
                   "attentions on) with f4 off (method_options.warmup_fraction)")
    if options.stage_switch == "criterion":
        out.append(f"stage 1 ends by a criterion: once the streams disagree on >= "
                   f"{100 * options.switch_min_disagreement:g}% of a batch's voxels and predict foreground within "
                   f"a factor {options.switch_fg_factor:g} of the labels' (method_options.stage_switch)")
    if options.aux_loss == "attended":
        out.append("the aux heads' loss is gated by their own loss attention (the paper gates only the final "
                   "loss; method_options.aux_loss)")
    return out


def _resolve_checkpoint(path: str) -> Path:
    p = Path(path)
    return checkpoint_path(p) if p.is_dir() else p


@register_method
class TSMANMethod(Method):
    """Two-stream mutual attention network: CE-trained streams fine-tuned with loss attention (module docstring)."""

    name = "tsman"
    description = "TSMAN (Min 2019): two DenseVoxNet streams, CE stage then mutual + loss attention fine-tuning"
    Options = TSMANOptions

    @classmethod
    def validate_config(cls, config) -> None:
        o = config.method_options
        if o.subnet not in ("densevoxnet", "vnet"):
            raise ConfigError(f"method_options.subnet must be densevoxnet or vnet, got {o.subnet!r}")
        if o.subnet == "densevoxnet":
            check_densevoxnet_options(config)
        else:
            crop = list(config.data.crop_size)
            if any(s % VNet.size_divisor for s in crop):
                raise ConfigError(f"data.crop_size must be multiples of {VNet.size_divisor} for TSMAN with vnet, "
                                  f"got {crop}")
            if o.aux_weight is not None and o.aux_weight < 0:
                raise ConfigError(f"method_options.aux_weight must be >= 0 or null, got {o.aux_weight}")
        bad = [p for p in o.attention_points if p not in ATTENTION_POINTS]
        if bad or len(set(o.attention_points)) != len(o.attention_points):
            raise ConfigError(f"method_options.attention_points must be distinct names from "
                              f"{list(ATTENTION_POINTS)}, got {list(o.attention_points)}")
        if o.channel_reduction < 1:
            raise ConfigError(f"method_options.channel_reduction must be >= 1, got {o.channel_reduction}")
        if o.stage1_fraction is not None and not 0.0 <= o.stage1_fraction < 1.0:
            raise ConfigError(f"method_options.stage1_fraction must be in [0, 1) or null, got {o.stage1_fraction}")
        if not 0.0 <= o.warmup_fraction < 1.0:
            raise ConfigError(f"method_options.warmup_fraction must be in [0, 1), got {o.warmup_fraction}")
        if o.warmup_fraction > 0 and o.stage1_fraction:
            raise ConfigError("method_options.warmup_fraction replaces stage 1: set method_options.stage1_fraction "
                              f"to 0 or null with it, got {o.stage1_fraction}")
        if o.aux_loss not in AUX_LOSSES:
            raise ConfigError(f"method_options.aux_loss must be one of {', '.join(AUX_LOSSES)}, got {o.aux_loss!r}")
        if o.stage_switch not in STAGE_SWITCHES:
            raise ConfigError(f"method_options.stage_switch must be one of {', '.join(STAGE_SWITCHES)}, "
                              f"got {o.stage_switch!r}")
        if not 0.0 < o.switch_min_disagreement < 1.0:
            raise ConfigError(f"method_options.switch_min_disagreement must be in (0, 1), "
                              f"got {o.switch_min_disagreement}")
        if not o.switch_fg_factor >= 1.0:
            raise ConfigError(f"method_options.switch_fg_factor must be >= 1, got {o.switch_fg_factor}")
        if o.init_streams is not None:
            runs = list(o.init_streams)
            if len(runs) != 2 or not all(isinstance(r, str) and r for r in runs):
                raise ConfigError(f"method_options.init_streams must be two run folders or checkpoint files, "
                                  f"got {o.init_streams!r}")
            if Path(runs[0]).resolve() == Path(runs[1]).resolve():
                raise ConfigError(f"method_options.init_streams must name two different runs (the streams' "
                                  f"different initialisations), got {runs[0]!r} twice")
            if o.subnet != "densevoxnet":
                raise ConfigError("method_options.init_streams needs method_options.subnet: densevoxnet, "
                                  f"got {o.subnet!r}")
        if not o.sigma2 > 0:
            raise ConfigError(f"method_options.sigma2 must be > 0, got {o.sigma2}")
        if o.kernel_size < 1 or o.kernel_size % 2 == 0:
            raise ConfigError(f"method_options.kernel_size must be an odd int >= 1, got {o.kernel_size}")
        if o.spatial_dims not in (2, 3):
            raise ConfigError(f"method_options.spatial_dims must be 2 or 3, got {o.spatial_dims}")

    def build(self) -> None:
        o, d = self.options, self.config.data
        if o.subnet == "densevoxnet":
            kwargs = densevoxnet_kwargs(o)
        else:
            m = self.config.model
            kwargs = dict(n_filters=m.n_filters, has_dropout=m.dropout, dropout_rate=m.dropout_rate)
        points = set(o.attention_points)
        self.model = TSMAN(d.in_channels, d.num_classes, subnet=o.subnet, subnet_kwargs=kwargs,
                           spatial_attention="f3" in points, channel_attention=bool(points & {"f1", "f2"}),
                           loss_attention=o.loss_attention, channel_reduction=o.channel_reduction)
        # the network switches f1 and f2 together; drop the one not asked for (an absent point passes through)
        for name in [n for n in list(self.model.attention.keys()) if n not in points]:
            del self.model.attention[name]
        self.aux_weight = self.model.aux_weight if o.aux_weight is None else float(o.aux_weight)
        self.switched_at: Optional[int] = None  # the criterion switch's first stage-2 iteration
        self.streams_loaded = False

    def networks(self) -> Dict[str, nn.Module]:
        return {"model": self.model}

    # ------------------------------------------------------------------ the two stages
    @property
    def warmup_iterations(self) -> int:
        """Iterations of the opt-in warm-up (full network, f4 off); 0 unless ``warmup_fraction`` is set."""
        return int(round(self.options.warmup_fraction * self.total_iterations()))

    @property
    def stage1_iterations(self) -> int:
        """Planned length of stage 1 (module docstring); the criterion switch may end it earlier."""
        o = self.options
        if o.warmup_fraction > 0:
            return 0
        fraction = o.stage1_fraction
        if fraction is None:
            fraction = 0.0 if o.init_streams else PAPER_STAGE1_FRACTION
        return int(round(fraction * self.total_iterations()))

    @property
    def stage2_start(self) -> int:
        """The first iteration of stage 2 (as far as known: the planned one until the criterion fires)."""
        planned = self.stage1_iterations
        return planned if self.switched_at is None else min(self.switched_at, planned)

    def stage_at(self, iteration: int) -> int:
        """1 or 2: the stage of 0-based ``iteration``."""
        return 1 if iteration < self.stage2_start else 2

    def lr_at(self, iteration: int) -> float:
        """The configured policy over stage 1's planned length, restarted over stage 2's."""
        total, start = self.total_iterations(), self.stage2_start
        if start <= 0:
            return learning_rate(self.config.optim, iteration, total)
        if iteration < start:
            return learning_rate(self.config.optim, iteration, self.stage1_iterations)
        return learning_rate(self.config.optim, iteration - start, total - start)

    def _load_init_streams(self) -> None:
        """Copy the weights of ``init_streams`` into the streams (module docstring)."""
        o, d = self.options, self.config.data
        for stream, run in zip((self.model.stream_a, self.model.stream_b), o.init_streams):
            file = _resolve_checkpoint(run)
            if not file.is_file():
                raise ConfigError(f"method_options.init_streams: no checkpoint at {file}")
            state = load_checkpoint(file)
            cfg = config_from_dict(state["config"])
            theirs = {k: getattr(cfg.method_options, k, None) for k in DENSEVOXNET_SIZE_KEYS}
            ours = {k: getattr(o, k) for k in DENSEVOXNET_SIZE_KEYS}
            if cfg.method != "densevoxnet" or theirs != ours or (cfg.data.in_channels, cfg.data.num_classes) != (
                    d.in_channels, d.num_classes):
                raise ConfigError(
                    f"method_options.init_streams: {file} is a {cfg.method!r} run with sizes {theirs}, "
                    f"{cfg.data.in_channels} input channel(s), {cfg.data.num_classes} classes; this run's streams "
                    f"need a 'densevoxnet' run with {ours}, {d.in_channels}, {d.num_classes}")
            stream.load_state_dict(state["networks"]["model"])
        self.streams_loaded = True

    def _criterion_met(self, logs: Dict[str, Tensor]) -> bool:
        o = self.options
        values = torch.stack([logs["disagreement"], logs["fg_pred_a"], logs["fg_pred_b"], logs["fg_label"]]).float()
        disagreement, fg_a, fg_b, fg_label = ddp.all_reduce_mean(values).tolist()
        if disagreement < o.switch_min_disagreement or fg_label <= 0:
            return False
        return all(fg_label / o.switch_fg_factor <= fg <= fg_label * o.switch_fg_factor for fg in (fg_a, fg_b))

    def train_step(self, batch, iteration: int) -> Dict[str, Tensor]:
        o = self.options
        if o.init_streams and iteration == 0 and not self.streams_loaded:
            # here rather than in build(): a resumed run and load_trained() read the run's own checkpoint,
            # so they must not need the base runs' folders
            self._load_init_streams()
        smoothing = dict(sigma2=o.sigma2, kernel_size=o.kernel_size, spatial_dims=o.spatial_dims)
        stage = self.stage_at(iteration)
        if stage == 1:
            # two independent networks: no mutual attention, plain CE with deep supervision
            outs = []
            for stream in (self.model.stream_a, self.model.stream_b):
                out = stream(batch.image)
                outs.append(out if isinstance(out, (tuple, list)) else (out, None))
            outputs = (outs[0][0], outs[1][0], outs[0][1], outs[1][1])
            loss, logs = tsman_training_loss(outputs, batch.label, loss_attention=False,
                                             aux_weight=self.aux_weight, **smoothing)
            if o.stage_switch == "criterion":
                with torch.no_grad():
                    logs["fg_pred_a"] = (outputs[0].argmax(1) > 0).float().mean()
                    logs["fg_pred_b"] = (outputs[1].argmax(1) > 0).float().mean()
                if self._criterion_met(logs):
                    self.switched_at = iteration + 1
        else:
            use_f4 = o.loss_attention and iteration >= self.warmup_iterations
            loss, logs = tsman_training_loss(self.model(batch.image), batch.label, loss_attention=use_f4,
                                             aux_weight=self.aux_weight, aux_loss=o.aux_loss, **smoothing)
        return {"loss": loss, "stage": torch.tensor(float(stage)), **logs}

    def state_dict(self) -> dict:
        """The stage plan: the criterion's switch iteration (-1: none), whether the init streams were loaded."""
        return {"switched_at": -1 if self.switched_at is None else int(self.switched_at),
                "streams_loaded": bool(self.streams_loaded), "stage2_start": int(self.stage2_start)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (an empty state: a checkpoint written before the stages existed)."""
        if not state:
            return
        unknown = set(state) - {"switched_at", "streams_loaded", "stage2_start"}
        if unknown:
            raise ValueError(f"TSMAN method state holds unknown entries {sorted(unknown)}")
        switched = int(state.get("switched_at", -1))
        self.switched_at = None if switched < 0 else switched
        self.streams_loaded = bool(state.get("streams_loaded", False))
        if "stage2_start" in state and int(state["stage2_start"]) != self.stage2_start:
            raise ValueError(f"the checkpoint's stage 2 starts at iteration {int(state['stage2_start'])}, this "
                             f"config's at {self.stage2_start} (method_options.stage1_fraction or iterations "
                             "changed)")

    def predict(self, x: Tensor) -> Tensor:
        return self.model.predict(x)

    def uncertainty(self, x: Tensor) -> Optional[Tensor]:
        """Where the streams disagree (the unsmoothed XOR of Eq. (7)), for the case plot."""
        a, b = self.model(x, return_aux=False)
        return (a.argmax(1) != b.argmax(1)).float()
