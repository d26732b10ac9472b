"""Whole-volume inference by overlapping patches, in the convention of the LA code bases.

The LA semi-/noisy-supervised code bases (UA-MT and its descendants, which PINT
follows) evaluate a network trained on 112 x 112 x 80 patches by sliding that
patch over the whole volume with strides 18 (x, y) and 4 (z), averaging the
softmax where windows overlap. Per axis, with volume length ``L``, patch ``P``
and stride ``s``, the windows start at ``min(i * s, L - P)`` for
``i = 0 .. ceil((L - P) / s)``, so the last window touches the far border. A
volume smaller than the patch along an axis is zero-padded, half before and
half after (the extra voxel after), and the result is cropped back.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F


def _triple(value, name: str) -> tuple[int, int, int]:
    vals = (value,) * 3 if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(vals) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in vals):
        raise ValueError(f"{name} must be a positive int or 3 positive ints, got {value!r}")
    return vals


def window_starts(length: int, patch: int, stride: int) -> list[int]:
    """Start indices of the windows along one axis (``length >= patch``), LA convention.

    Example:
        >>> window_starts(100, 80, 18)
        [0, 18, 20]
    """
    n = math.ceil((length - patch) / stride) + 1
    return [min(i * stride, length - patch) for i in range(n)]


def _model_device_dtype(model) -> tuple[torch.device | None, torch.dtype | None]:
    if isinstance(model, nn.Module):
        for t in model.parameters():
            return t.device, t.dtype
        for t in model.buffers():
            return t.device, (t.dtype if t.is_floating_point() else None)
    return None, None


def sliding_window_inference(volume: torch.Tensor,
                             model_or_fn: nn.Module | Callable[[torch.Tensor], torch.Tensor],
                             patch_size: int | Sequence[int] = (112, 112, 80),
                             stride: int | Sequence[int] = (18, 18, 4),
                             n_classes: int | None = None, progress: bool = False,
                             batch_size: int = 1, output: str | None = None) -> torch.Tensor:
    """Class probabilities of a whole volume, averaged over overlapping patches.

    The patches follow the LA convention (module docstring); the model sees
    ``Tensor[k * B, C_in, *patch_size]`` (``k <= batch_size`` windows of all ``B``
    volumes at once). The function runs under ``torch.no_grad()``; an
    ``nn.Module`` is put in ``eval()`` mode for the call (its mode is restored
    afterwards) and fed on its own device and dtype. A plain callable is called
    as it is, on the volume's device.

    What the model returns (``output``):

    * ``None`` (default): if ``model_or_fn`` has a ``predict`` method (e.g.
      :class:`~pyseg_noise.models.TSMAN`), ``predict(patch)`` is used and taken
      as probabilities; otherwise ``model_or_fn(patch)`` is taken as logits.
    * ``"logits"``: ``model_or_fn(patch)`` returns logits; softmax over dim 1 is applied.
    * ``"probs"``: ``model_or_fn(patch)`` already returns probabilities.

    Args:
        volume (Tensor[C_in, X, Y, Z] or Tensor[B, C_in, X, Y, Z]): the image; an
            unbatched volume is treated as ``B = 1``.
        model_or_fn: a network or a callable ``Tensor[N, C_in, *patch] ->
            Tensor[N, C, *patch]``.
        patch_size: the window, an int or 3 ints. Default (112, 112, 80) (LA).
        stride: the step between windows, an int or 3 ints, each at most the
            patch size. Default (18, 18, 4) (LA's ``stride_xy=18, stride_z=4``).
        n_classes: expected ``C``; ``None`` takes it from the first output.
        progress: show a tqdm progress bar over the windows.
        batch_size: windows per model call. Default 1.
        output: ``None`` | ``"logits"`` | ``"probs"``, see above.

    Returns:
        probabilities (Tensor[B, C, X, Y, Z]), float32 (float64 for a float64
        model), on the volume's device. The label map is ``probs.argmax(dim=1)``
        (``Tensor[B, X, Y, Z]``; take ``[0]`` for an unbatched volume).

    Raises:
        TypeError: if ``volume`` is not a tensor or the model's output is not a tensor.
        ValueError: on a wrong rank or channel count of ``volume`` (checked against
            ``model_or_fn.in_channels`` when it has one), a bad ``patch_size``,
            ``stride``, ``batch_size`` or ``output``, or a model output of the wrong
            shape or class count.

    Example:
        >>> probs = sliding_window_inference(image[None], net)  # image: Tensor[X, Y, Z]
        >>> label = probs.argmax(dim=1)[0]                        # Tensor[X, Y, Z]
    """
    if not isinstance(volume, torch.Tensor):
        raise TypeError(f"volume must be a torch.Tensor, got {type(volume).__name__}")
    if volume.ndim not in (4, 5):
        raise ValueError(
            f"volume must be Tensor[C_in, X, Y, Z] or Tensor[B, C_in, X, Y, Z], got {volume.ndim}-D "
            f"shape {tuple(volume.shape)}"
        )
    if volume.numel() == 0:
        raise ValueError(f"volume is empty, shape {tuple(volume.shape)}")
    if not callable(model_or_fn):
        raise TypeError(f"model_or_fn must be an nn.Module or a callable, got {type(model_or_fn).__name__}")
    patch = _triple(patch_size, "patch_size")
    steps = _triple(stride, "stride")
    if any(s > p for s, p in zip(steps, patch)):
        raise ValueError(
            f"stride {steps} must not exceed patch_size {patch} on any axis (voxels would be skipped)"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if output not in (None, "logits", "probs"):
        raise ValueError(f'output must be None, "logits" or "probs", got {output!r}')
    if n_classes is not None and (isinstance(n_classes, bool) or not isinstance(n_classes, int)
                                  or n_classes < 1):
        raise ValueError(f"n_classes must be None or a positive int, got {n_classes!r}")

    x = volume if volume.ndim == 5 else volume.unsqueeze(0)
    expected_in = getattr(model_or_fn, "in_channels", None)
    if isinstance(expected_in, int) and x.shape[1] != expected_in:
        raise ValueError(
            f"volume has {x.shape[1]} channels (shape {tuple(volume.shape)}) but the model expects "
            f"in_channels={expected_in}; an unbatched volume must be [C_in, X, Y, Z]"
        )

    use_predict = output is None and callable(getattr(model_or_fn, "predict", None))
    call = model_or_fn.predict if use_predict else model_or_fn
    returns_probs = use_predict or output == "probs"

    device, dtype = _model_device_dtype(model_or_fn)
    device = device if device is not None else x.device
    if dtype is None:
        dtype = x.dtype if x.is_floating_point() else torch.float32
    acc_dtype = torch.float64 if dtype == torch.float64 else torch.float32

    spatial = tuple(x.shape[2:])
    pad = [max(p - s, 0) for p, s in zip(patch, spatial)]
    if any(pad):
        # F.pad lists the last axis first
        pads = []
        for q in reversed(pad):
            pads += [q // 2, q - q // 2]
        x = F.pad(x, pads, mode="constant", value=0.0)
    padded = tuple(x.shape[2:])
    starts = [window_starts(L, p, s) for L, p, s in zip(padded, patch, steps)]
    windows = [(i, j, k) for i in starts[0] for j in starts[1] for k in starts[2]]

    was_training = model_or_fn.training if isinstance(model_or_fn, nn.Module) else None
    if was_training is not None:
        model_or_fn.eval()
    B = x.shape[0]
    score = None
    count = torch.zeros((1, 1) + padded, dtype=acc_dtype, device=device)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(windows), desc="sliding window", unit="patch")
    try:
        with torch.no_grad():
            for first in range(0, len(windows), batch_size):
                chunk = windows[first:first + batch_size]
                patches = torch.cat(
                    [x[:, :, i:i + patch[0], j:j + patch[1], k:k + patch[2]] for i, j, k in chunk], dim=0
                ).to(device=device, dtype=dtype)
                out = call(patches)
                if not isinstance(out, torch.Tensor):
                    raise TypeError(
                        f"the model returned {type(out).__name__}, expected a Tensor[N, C, *patch]; for a "
                        "model with several outputs pass a callable returning the main logits, or give it "
                        "a `predict` method"
                    )
                n_out = out.shape[1] if out.ndim == 5 else None
                if out.ndim != 5 or out.shape[0] != patches.shape[0] or tuple(out.shape[2:]) != patch:
                    raise ValueError(
                        f"the model returned shape {tuple(out.shape)} for input {tuple(patches.shape)}; "
                        f"expected [{patches.shape[0]}, C, {', '.join(map(str, patch))}]"
                    )
                if n_classes is not None and n_out != n_classes:
                    raise ValueError(f"the model returned {n_out} classes but n_classes={n_classes}")
                probs = out.to(acc_dtype) if returns_probs else torch.softmax(out.to(acc_dtype), dim=1)
                if score is None:
                    score = torch.zeros((B, n_out) + padded, dtype=acc_dtype, device=device)
                for w, (i, j, k) in enumerate(chunk):
                    region = (slice(None), slice(None), slice(i, i + patch[0]), slice(j, j + patch[1]),
                              slice(k, k + patch[2]))
                    score[region] += probs[w * B:(w + 1) * B]
                    count[region] += 1
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
        if was_training:
            model_or_fn.train()

    score /= count
    if any(pad):
        crop = tuple(slice(q // 2, q // 2 + s) for q, s in zip(pad, spatial))
        score = score[(slice(None), slice(None)) + crop]
    return score.to(volume.device).contiguous()
