"""Pseudo labels for unlabelled volumes: model, data and hierarchical distillation (TSMAN Eq. (8)-(10)).

TSMAN's self-training labels the unlabelled part ``U`` of the training set with
models trained on the labelled part ``L``:

* **model distillation (MD)**, Eq. (8): ``T`` models (different seeds and
  iteration counts) each predict the volume; ``P^MD = g({f_t(I)})``
  (:func:`model_distillation`).
* **data distillation (DD)**, Eq. (9): one model predicts ``K`` geometric
  transforms ``h_k`` of the volume; each prediction is mapped back with
  ``h_k^{-1}``; ``P^DD = g({h_k^{-1}(f(h_k(I)))})`` (:func:`data_distillation`).
* **hierarchical distillation (HD)**, Eq. (10): ``P^HD = g({P^DD_t})``, the
  voting function applied to the ``T`` models' DD results, nested as the
  paper writes it (:func:`hierarchical_distillation`) — not one flat vote over
  the ``T * K`` predictions, which can give another label (a model whose 12
  views agree outvotes two models whose views are split 8:4 in a flat vote,
  but not in the nested one).

**The voting function g** (:func:`vote`), one for all three: the majority of
hard labels. Each input casts one vote per voxel for its label (a model's
prediction: its argmax; a DD result: its own vote); the class with the most
votes wins. Ties go to the tied class with the highest mean softmax over the
inputs (for a DD result, its mean over its ``K`` views, so HD's tie-break is
the mean over all ``T * K`` predictions), and a remaining tie (equal in
floating point) to the lowest class index (the library's argmax convention,
SPEC "Conventions"). The paper calls g "the voting function" without saying
more; a majority of hard labels is what "voting" reads as, and it is the only
choice under which Eq. (10)'s nesting matters (with g = mean softmax, HD
would equal a flat mean over all ``T * K`` predictions). With two inputs a
majority is a tie wherever they differ, so g then falls back to the mean
softmax: MD of two models is the argmax of their mean softmax.

**The K = 12 transforms.** The paper uses "combinations of four rotations and
three flips". Here (default :data:`DD_TRANSFORMS`): rotate by ``k * 90°``,
``k = 0..3``, in the acquisition plane (spatial axes X, Y; the slice axis Z is
never moved, as in training augmentation, so every transformed volume looks
like a training crop), then apply one of {no flip, flip X, flip Y}. Inverse:
undo the flip, then rotate by ``-k * 90°``. These are 12 transforms but only
8 distinct ones: ``flip Y ∘ rot k`` equals ``flip X ∘ rot (k + 2)``, so each of
the 4 in-plane reflections appears twice and each pure rotation once. We keep
the paper's count (and so its weighting) rather than silently dropping to 8;
``data_distillation_transforms(flip_axes=(None, 0, 2))`` gives 12 distinct
transforms (the third "flip" mirrors the slice axis) for data where that is a
plausible view.

**Whole volumes or tensor batches.** Every function takes ``x (Tensor[B, C_in, X, Y, Z])``
and either runs the model on it directly (``patch_size=None``: a batch of
crops whose sizes the network accepts) or through
:func:`pyseg_noise.inference.sliding_window_inference` (``patch_size=(px, py, pz)``:
whole volumes of any size, LA convention). A "model" is an ``nn.Module`` or a
callable, handled as :func:`~pyseg_noise.inference.sliding_window_inference`
handles it: one with a ``predict`` method (TSMAN) returns probabilities,
otherwise logits are expected (see ``output``).

**On disk.** :func:`distill_dataset` labels whole volumes of a dataset folder;
reading their images and storing the labels in the dataset's layout (inside it,
or as a folder of per-case files for ``data.label_overrides``) is
:mod:`pyseg_noise.data.pseudo_labels`'s (:func:`~pyseg_noise.data.read_case_image`,
:func:`~pyseg_noise.data.write_pseudo_labels`). ``pyseg-noise distill {md,dd,hd}``
runs both from trained run folders.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pyseg_noise.data import detect_layout, read_case_image
from pyseg_noise.inference import sliding_window_inference

# pseudo-label I/O lives in pyseg_noise.data; these names stay importable from here for older code
from pyseg_noise.data import training_case_names, write_pseudo_labels  # noqa: F401

__all__ = [
    "GeometricTransform",
    "data_distillation_transforms",
    "DD_TRANSFORMS",
    "predict_probs",
    "model_distillation",
    "data_distillation",
    "hierarchical_distillation",
    "Vote",
    "vote",
    "majority_vote",
    "distill",
    "distillation_variants",
    "DISTILLATION_METHODS",
    "distill_dataset",
]

PathLike = Union[str, Path]
Model = Union[nn.Module, Callable[[Tensor], Tensor]]

#: names accepted by :func:`distill` and :func:`distill_dataset`
DISTILLATION_METHODS = ("md", "dd", "hd")

_AXIS_NAMES = "XYZ"


@dataclass(frozen=True)
class GeometricTransform:
    """One DD transform: rotate ``k`` quarter turns in ``plane``, then flip spatial axis ``flip``.

    Axes are spatial axes of a volume (0 = X, 1 = Y, 2 = Z); the rotation is
    ``torch.rot90(x, k, dims=plane)`` (``numpy.rot90``'s direction: from the
    first axis of the plane towards the second). The flip is applied to the
    rotated volume.

    Attributes:
        k: quarter turns, 0..3.
        flip: spatial axis flipped after the rotation, or None.
        plane: the two spatial axes of the rotation plane. Default (0, 1) (X, Y).

    Example:
        >>> t = GeometricTransform(k=1, flip=0)
        >>> x = torch.randn(1, 2, 4, 6, 3)
        >>> t.apply(x).shape
        torch.Size([1, 2, 6, 4, 3])
        >>> torch.equal(t.invert(t.apply(x)), x)
        True
    """

    k: int
    flip: Optional[int] = None
    plane: tuple[int, int] = (0, 1)

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 0 <= self.k <= 3:
            raise ValueError(f"GeometricTransform: k must be an int in 0..3, got {self.k!r}")
        if self.flip is not None and (isinstance(self.flip, bool) or self.flip not in (0, 1, 2)):
            raise ValueError(f"GeometricTransform: flip must be None or a spatial axis 0, 1 or 2, got {self.flip!r}")
        plane = tuple(self.plane)
        if len(plane) != 2 or any(a not in (0, 1, 2) for a in plane) or plane[0] == plane[1]:
            raise ValueError(f"GeometricTransform: plane must be two different spatial axes in 0..2, got {self.plane!r}")
        object.__setattr__(self, "plane", plane)

    @property
    def name(self) -> str:
        """e.g. ``"rot90x1+flipX"`` (``"identity"`` for k=0 without flip)."""
        parts = [f"rot90x{self.k}"] if self.k else []
        if self.flip is not None:
            parts.append(f"flip{_AXIS_NAMES[self.flip]}")
        return "+".join(parts) or "identity"

    @staticmethod
    def _dims(x: Tensor, axes: Sequence[int]) -> list[int]:
        if x.ndim < 3:
            raise ValueError(f"GeometricTransform: expected Tensor[..., X, Y, Z], got shape {tuple(x.shape)}")
        return [x.ndim - 3 + a for a in axes]

    def apply(self, x: Tensor) -> Tensor:
        """``h_k(x)`` for ``x (Tensor[..., X, Y, Z])`` (leading batch/channel dims untouched)."""
        y = torch.rot90(x, self.k, dims=self._dims(x, self.plane)) if self.k else x
        if self.flip is not None:
            y = torch.flip(y, dims=self._dims(y, (self.flip,)))
        return y

    def invert(self, y: Tensor) -> Tensor:
        """``h_k^{-1}(y)``: undo the flip, then rotate back."""
        if self.flip is not None:
            y = torch.flip(y, dims=self._dims(y, (self.flip,)))
        return torch.rot90(y, -self.k, dims=self._dims(y, self.plane)) if self.k else y


def data_distillation_transforms(flip_axes: Sequence[Optional[int]] = (None, 0, 1),
                                 plane: Sequence[int] = (0, 1)) -> list[GeometricTransform]:
    """The DD transforms: ``k = 0..3`` quarter turns in ``plane`` x the flips ``flip_axes``.

    Order: rotations outer, flips inner (``[rot0, rot0+flipX, rot0+flipY, rot1, ...]``).

    Args:
        flip_axes: flips to combine with each rotation; None = no flip. Default
            (None, 0, 1): the paper's 4 x 3 = 12 (8 distinct, see the module docstring).
        plane: rotation plane (two spatial axes). Default (0, 1).

    Raises:
        ValueError: an empty or repeated ``flip_axes`` entry, or a bad axis.
    """
    flips = list(flip_axes)
    if not flips or len(set(flips)) != len(flips):
        raise ValueError(f"flip_axes must be non-empty without repeats, got {flip_axes!r}")
    return [GeometricTransform(k, f, tuple(plane)) for k in range(4) for f in flips]


#: the default 12 DD transforms (4 in-plane rotations x {none, flip X, flip Y})
DD_TRANSFORMS: tuple[GeometricTransform, ...] = tuple(data_distillation_transforms())


# ----------------------------------------------------------------------------- one prediction
def _check_batch(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 5 or x.numel() == 0:
        raise ValueError(f"{name} must be a non-empty Tensor[B, C_in, X, Y, Z], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {x.dtype}")


def _model_device(model) -> Optional[torch.device]:
    """Where the model's weights live: an nn.Module's parameters, or a training Method's ``device``."""
    if isinstance(model, nn.Module):
        for t in model.parameters():
            return t.device
        return None
    device = getattr(model, "device", None)
    return torch.device(device) if isinstance(device, (str, torch.device)) else None


def predict_probs(model: Model, x: Tensor, *, patch_size: Union[int, Sequence[int], None] = None,
                  stride: Union[int, Sequence[int], None] = None, batch_size: int = 1,
                  output: Optional[str] = None) -> Tensor:
    """Class probabilities of ``model`` on ``x``, without gradients.

    Args:
        model: an ``nn.Module``, a callable, or a trained
            :class:`~pyseg_noise.training.Method` (put it in eval mode first;
            :func:`~pyseg_noise.training.load_trained` returns it so). ``output=None``:
            a ``predict`` method is used and returns probabilities (TSMAN, a
            Method), otherwise the call returns logits; ``"logits"`` / ``"probs"``
            force one reading. The input goes to the model's device (its
            parameters', or a Method's ``device``); the result comes back.
        x (Tensor[B, C_in, X, Y, Z]): crops (``patch_size=None``) or whole volumes.
        patch_size: None runs the model on ``x`` directly (an ``nn.Module`` in
            ``eval()`` mode, restored afterwards); 3 ints (or one) run
            :func:`~pyseg_noise.inference.sliding_window_inference` with that window.
        stride: window stride; default half the patch (rounded up).
        batch_size: windows per model call (sliding window only).
        output: None, ``"logits"`` or ``"probs"``.

    Returns:
        probs (Tensor[B, C, X, Y, Z]), float32 (float64 for a float64 model), on ``x``'s device.

    Raises:
        TypeError / ValueError: bad ``x``, ``output`` or window settings, or a
            model output of the wrong shape.
    """
    _check_batch(x)
    if output not in (None, "logits", "probs"):
        raise ValueError(f'output must be None, "logits" or "probs", got {output!r}')
    device = _model_device(model)
    xin = x.to(device) if device is not None else x
    if patch_size is not None:
        if stride is None:
            p = (patch_size,) * 3 if isinstance(patch_size, int) else tuple(patch_size)
            stride = tuple(max(1, (int(s) + 1) // 2) for s in p)
        target, how = model, output
        if not isinstance(model, nn.Module) and output is None and callable(getattr(model, "predict", None)):
            target, how = model.predict, "probs"  # a training Method: not callable itself
        probs = sliding_window_inference(xin, target, patch_size=patch_size, stride=stride, batch_size=batch_size,
                                         output=how)
        return probs.to(x.device)
    use_predict = output is None and callable(getattr(model, "predict", None))
    fn = model.predict if use_predict else model
    was_training = model.training if isinstance(model, nn.Module) else None
    if was_training:
        model.eval()
    try:
        with torch.no_grad():
            out = fn(xin)
    finally:
        if was_training:
            model.train()
    if not isinstance(out, Tensor):
        raise TypeError(f"the model returned {type(out).__name__}, expected a Tensor[B, C, X, Y, Z]")
    if out.ndim != 5 or out.shape[0] != x.shape[0] or out.shape[2:] != x.shape[2:]:
        raise ValueError(f"the model returned shape {tuple(out.shape)} for input {tuple(x.shape)}; "
                         f"expected [{x.shape[0]}, C, {', '.join(map(str, x.shape[2:]))}]")
    acc = torch.float64 if out.dtype == torch.float64 else torch.float32
    out = out.to(acc)
    probs = out if (use_predict or output == "probs") else torch.softmax(out, dim=1)
    return probs.to(x.device)


def _models_list(models) -> list:
    if isinstance(models, (list, tuple, nn.ModuleList)):
        models = list(models)
    elif callable(models) or callable(getattr(models, "predict", None)):
        models = [models]
    else:
        raise TypeError(f"models must be a model, a callable or a sequence of them, got {type(models).__name__}")
    if not models:
        raise ValueError("models must hold at least one model")
    return models


def _transforms_list(transforms) -> list[GeometricTransform]:
    transforms = list(DD_TRANSFORMS if transforms is None else transforms)
    if not transforms:
        raise ValueError("transforms must hold at least one GeometricTransform")
    for t in transforms:
        if not isinstance(t, GeometricTransform):
            raise TypeError(f"transforms must hold GeometricTransform objects, got {type(t).__name__}")
    return transforms


# ----------------------------------------------------------------------------- the voting function g
def majority_vote(votes: Tensor, mean_probs: Optional[Tensor] = None) -> Tensor:
    """Per-voxel majority of hard votes; ties broken by ``mean_probs``, then the lowest class index.

    Args:
        votes (Tensor[B, C, *S]): number of votes per class (any real or integer dtype).
        mean_probs (Tensor[B, C, *S] or None): tie-breaker among the classes
            with the most votes; None = lowest index only.

    Returns:
        labels (Tensor[B, *S]) int64.

    Example:
        >>> votes = torch.tensor([[[2.], [2.], [1.]]])      # B=1, C=3, one voxel: classes 0 and 1 tie
        >>> majority_vote(votes).tolist(), majority_vote(votes, torch.tensor([[[.3], [.5], [.2]]])).tolist()
        ([[0]], [[1]])
    """
    if votes.ndim < 2:
        raise ValueError(f"votes must be Tensor[B, C, *S], got shape {tuple(votes.shape)}")
    top = votes.max(dim=1, keepdim=True).values
    tied = votes == top
    if mean_probs is None:
        # argmax returns the first maximal index: the lowest tied class
        return tied.to(torch.uint8).argmax(dim=1)
    if mean_probs.shape != votes.shape:
        raise ValueError(f"mean_probs shape {tuple(mean_probs.shape)} must equal votes shape {tuple(votes.shape)}")
    key = torch.where(tied, mean_probs.to(torch.float64), torch.full_like(mean_probs, -1.0, dtype=torch.float64))
    return key.argmax(dim=1)


@dataclass
class Vote:
    """One result of the voting function g (module docstring).

    Attributes:
        labels (Tensor[B, *S] int64): the winning class per voxel.
        probs (Tensor[B, C, *S]): the mean softmax of the inputs (g's tie-breaker, and the
            value an enclosing vote averages).
        votes (Tensor[B, C, *S] int64): the number of inputs that voted for each class.
    """

    labels: Tensor
    probs: Tensor
    votes: Tensor


class _Ballot:
    """Streaming form of g: add the inputs one at a time, so they never sit in memory together."""

    def __init__(self):
        self.votes: Optional[Tensor] = None
        self.prob_sum: Optional[Tensor] = None
        self.n = 0

    def add(self, item: Union[Tensor, Vote]) -> None:
        probs, labels = (item.probs, item.labels) if isinstance(item, Vote) else (item, item.argmax(dim=1))
        if self.votes is None:
            self.votes = torch.zeros(probs.shape, dtype=torch.int64, device=probs.device)
            self.prob_sum = torch.zeros_like(probs)
        elif probs.shape != self.votes.shape:
            raise ValueError(f"vote: every input must have shape {tuple(self.votes.shape)}, got {tuple(probs.shape)}")
        self.votes.scatter_add_(1, labels.unsqueeze(1), torch.ones_like(self.votes[:, :1]))
        self.prob_sum.add_(probs)
        self.n += 1

    def result(self) -> Vote:
        if self.n == 0:
            raise ValueError("vote needs at least one prediction")
        mean = self.prob_sum / self.n
        return Vote(majority_vote(self.votes, mean), mean, self.votes)


def vote(predictions: Sequence[Union[Tensor, Vote]]) -> Vote:
    """The voting function g of TSMAN Eq. (8)-(10): majority of hard labels, ties by the mean softmax.

    Args:
        predictions: class probabilities (Tensor[B, C, *S]; the vote is their argmax,
            ties to the lowest class) or earlier :class:`Vote` results (the vote is
            their ``labels``, their ``probs`` enter the mean), all of one shape.

    Returns:
        :class:`Vote`: ``labels`` by :func:`majority_vote` of the counts with the
        mean of the inputs' probabilities as tie-breaker.

    Example (a 2:1 majority beats a more confident single vote)::

        >>> p = lambda *v: torch.tensor(v).reshape(1, 2, 1)
        >>> vote([p(.6, .4), p(.6, .4), p(.0, 1.)]).labels.tolist()
        [[0]]
    """
    ballot = _Ballot()
    for item in predictions:
        ballot.add(item)
    return ballot.result()


# ----------------------------------------------------------------------------- the three distillations
def model_distillation(models: Union[Model, Sequence[Model]], x: Tensor, *, return_vote: bool = False,
                       **inference):
    """MD, TSMAN Eq. (8): ``g`` over the ``T`` models' predictions.

    Args:
        models: one model or a sequence of ``T`` models.
        x (Tensor[B, C_in, X, Y, Z]).
        return_vote: return the whole :class:`Vote` instead of the labels.
        **inference: ``patch_size``, ``stride``, ``batch_size``, ``output`` of :func:`predict_probs`.

    Returns:
        labels (Tensor[B, X, Y, Z] int64), or the :class:`Vote`.

    Example:
        >>> labels = model_distillation([net_a, net_b, net_c], volume[None], patch_size=(112, 112, 80))  # doctest: +SKIP
    """
    ballot = _Ballot()
    for model in _models_list(models):
        ballot.add(predict_probs(model, x, **inference))
    result = ballot.result()
    return result if return_vote else result.labels


def _views(model: Model, x: Tensor, transforms: Sequence[GeometricTransform], inference: dict):
    """The model's probabilities on each transform of ``x``, mapped back to ``x``'s frame (one at a time)."""
    for t in transforms:
        yield t, t.invert(predict_probs(model, t.apply(x).contiguous(), **inference))


def data_distillation(model: Model, x: Tensor, transforms: Optional[Sequence[GeometricTransform]] = None, *,
                      return_vote: bool = False, **inference):
    """DD, TSMAN Eq. (9): ``g`` over the ``K`` transforms' predictions, each mapped back to ``x``'s frame.

    Args:
        model: one model.
        x (Tensor[B, C_in, X, Y, Z]).
        transforms: default :data:`DD_TRANSFORMS` (12).
        return_vote: return the whole :class:`Vote` instead of the labels.
        **inference: see :func:`predict_probs`. With ``patch_size=None`` the
            model must accept the rotated sizes (odd ``k`` swaps X and Y).

    Returns:
        labels (Tensor[B, X, Y, Z] int64), or the :class:`Vote`.
    """
    ballot = _Ballot()
    for _, p in _views(model, x, _transforms_list(transforms), inference):
        ballot.add(p)
    result = ballot.result()
    return result if return_vote else result.labels


def hierarchical_distillation(models: Union[Model, Sequence[Model]], x: Tensor,
                              transforms: Optional[Sequence[GeometricTransform]] = None, *,
                              return_vote: bool = False, **inference):
    """HD, TSMAN Eq. (10): ``g`` over the ``T`` models' DD results (nested, module docstring).

    Args:
        models: ``T`` models (one model = DD).
        x (Tensor[B, C_in, X, Y, Z]).
        transforms: default :data:`DD_TRANSFORMS` (``[GeometricTransform(0)]`` = MD).
        return_vote: return the whole :class:`Vote` (``votes`` counts the DD results) instead of the labels.
        **inference: see :func:`predict_probs`.

    Returns:
        labels (Tensor[B, X, Y, Z] int64), or the :class:`Vote`.
    """
    transforms = _transforms_list(transforms)
    ballot = _Ballot()
    for model in _models_list(models):
        ballot.add(data_distillation(model, x, transforms, return_vote=True, **inference))
    result = ballot.result()
    return result if return_vote else result.labels


def distill(method: str, models: Union[Model, Sequence[Model]], x: Tensor,
            transforms: Optional[Sequence[GeometricTransform]] = None, **inference) -> Tensor:
    """Pseudo labels (Tensor[B, X, Y, Z] int64) of ``x`` by ``"md"``, ``"dd"`` or ``"hd"``.

    ``"dd"`` uses the first model only (TSMAN's Table 1 runs DD once per base model).

    Raises:
        ValueError: unknown ``method``.
    """
    if method not in DISTILLATION_METHODS:
        raise ValueError(f"method must be one of {DISTILLATION_METHODS}, got {method!r}")
    if method == "md":
        return model_distillation(models, x, **inference)
    if method == "dd":
        return data_distillation(_models_list(models)[0], x, transforms, **inference)
    return hierarchical_distillation(models, x, transforms, **inference)


def distillation_variants(models: Union[Model, Sequence[Model]], x: Tensor,
                          transforms: Optional[Sequence[GeometricTransform]] = None,
                          **inference) -> dict[str, Tensor]:
    """Every pseudo label of TSMAN's Table 1 from one pass of ``T`` models x ``K`` transforms.

    Table 1 compares, per labelled fraction, each base model alone, MD over the
    ``T`` models, DD of each model, and HD (g over the DD results). Running
    :func:`distill` for each would predict the volume ``T + T + T*K + T*K``
    times; here each model predicts each transform once and the ballots of all
    variants are filled from that pass, in the same order as the single
    functions (so the labels are identical to theirs).

    Args:
        models: the ``T`` base models.
        x (Tensor[B, C_in, X, Y, Z]).
        transforms: the DD transforms (default :data:`DD_TRANSFORMS`); when the
            identity is not among them, each model predicts ``x`` once more.
        **inference: see :func:`predict_probs`.

    Returns:
        labels (Tensor[B, X, Y, Z] int64) keyed ``"model<t>"`` (``predict_probs(models[t], x).argmax(1)``),
        ``"md"`` (:func:`model_distillation`), ``"dd<t>"`` (:func:`data_distillation` with ``models[t]``)
        and ``"hd"`` (:func:`hierarchical_distillation`), ``t = 0 .. T-1``.
    """
    models = _models_list(models)
    transforms = _transforms_list(transforms)
    out: dict[str, Tensor] = {}
    md, hd = _Ballot(), _Ballot()
    for m, model in enumerate(models):
        dd, plain = _Ballot(), None
        for t, p in _views(model, x, transforms, inference):
            if plain is None and t.k == 0 and t.flip is None:
                plain = p.clone()
            dd.add(p)
        if plain is None:
            plain = predict_probs(model, x, **inference)
        dd_result = dd.result()
        out[f"model{m}"] = plain.argmax(dim=1)
        out[f"dd{m}"] = dd_result.labels
        md.add(plain)
        hd.add(dd_result)
    out["md"] = md.result().labels
    out["hd"] = hd.result().labels
    return out


# ----------------------------------------------------------------------------- whole volumes of a dataset folder
def distill_dataset(models: Union[Model, Sequence[Model]], root: PathLike, cases: Sequence[str], *,
                    method: str = "hd", layout: Optional[str] = None, split: str = "train",
                    transforms: Optional[Sequence[GeometricTransform]] = None,
                    patch_size: Union[int, Sequence[int]] = (112, 112, 80),
                    stride: Union[int, Sequence[int]] = (18, 18, 4), batch_size: int = 1,
                    progress: bool = False) -> dict[str, np.ndarray]:
    """Pseudo labels of whole volumes ``cases`` of a dataset folder (sliding-window inference).

    The images are read by :func:`pyseg_noise.data.read_case_image`; store the result with
    :func:`pyseg_noise.data.write_pseudo_labels`.

    Args:
        models: the ``T`` base models (``"dd"`` uses the first).
        root: dataset folder (LA h5, either public layout, or NIfTI).
        cases: the unlabelled cases to label.
        method: ``"md"``, ``"dd"`` or ``"hd"`` (TSMAN's default: ``"hd"``).
        layout: ``"h5"``, ``"nifti"`` or None (detected).
        split: the split the cases belong to (NIfTI: ``imagesTr`` for ``"train"``).
        transforms: DD transforms (default :data:`DD_TRANSFORMS`).
        patch_size, stride, batch_size: sliding window (LA defaults).
        progress: a progress bar over the cases.

    Returns:
        ``{case: ndarray[X, Y, Z] uint8}`` (int16 when there are more than 255 classes).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if method not in DISTILLATION_METHODS:
        raise ValueError(f"method must be one of {DISTILLATION_METHODS}, got {method!r}")
    if layout not in (None, "h5", "nifti"):
        raise ValueError(f"layout must be 'h5', 'nifti' or None, got {layout!r}")
    models = _models_list(models)
    layout = layout or detect_layout(root)
    it = tqdm(cases, desc=f"distill ({method})", unit="case") if progress else list(cases)
    out: dict[str, np.ndarray] = {}
    for case in it:
        image = torch.from_numpy(read_case_image(root, case, layout=layout, split=split))[None]
        labels = distill(method, models, image, transforms, patch_size=patch_size, stride=stride,
                         batch_size=batch_size)[0].cpu().numpy()
        out[case] = labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.int16)
    return out
