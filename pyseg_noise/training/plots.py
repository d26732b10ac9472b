"""PNG plots of a run (matplotlib, Agg backend — no display needed).

* :func:`plot_loss_curves` — the logged loss (raw and smoothed) and learning rate,
  and every other logged scalar, against the iteration.
* :func:`plot_case` — one axial slice of a training case: the image, the clean
  ground truth, the noisy training label, the prediction and, for PINT, the
  teacher's uncertainty map (the layout of PINT's Fig. 2: noise lies where the
  uncertainty is high).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

__all__ = ["plot_loss_curves", "plot_case", "pick_slice"]

PathLike = Union[str, Path]
_SKIP = {"iteration", "seconds", "lr", "split", "phase"}


def _pyplot():
    # deferred: matplotlib takes ~0.5 s to import, and only a run that writes plots needs it
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, out_png: PathLike) -> Path:
    """Lay out ``fig``, write it as a PNG (parent folders created), close it; returns the path."""
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _smooth(y: np.ndarray, n: int) -> np.ndarray:
    if y.size < 3 or n < 2:
        return y
    n = min(n, y.size)
    kernel = np.ones(n) / n
    padded = np.concatenate([np.full(n - 1, y[0]), y])
    return np.convolve(padded, kernel, mode="valid")


def plot_loss_curves(records: Sequence[Mapping[str, Any]], out_png: PathLike, title: str = "") -> Optional[Path]:
    """Loss and learning rate (left), other scalars (right) against the iteration.

    Args:
        records: ``log.jsonl`` records (those with a ``"split"`` key are skipped).
        out_png: output file.
        title: figure title.

    Returns:
        the path written, or None when there is nothing to plot.
    """
    train = [r for r in records if "split" not in r and isinstance(r.get("loss"), (int, float))]
    if not train:
        return None
    plt = _pyplot()
    it = np.array([r["iteration"] for r in train], dtype=float)
    loss = np.array([r["loss"] for r in train], dtype=float)
    extra: Dict[str, List[float]] = {}
    for key in sorted({k for r in train for k in r} - _SKIP - {"loss"}):
        vals = [r.get(key) for r in train]
        if all(isinstance(v, (int, float)) for v in vals):
            extra[key] = vals
    fig, axes = plt.subplots(1, 2 if extra else 1, figsize=(11 if extra else 6, 4), squeeze=False)
    ax = axes[0, 0]
    ax.plot(it, loss, color="tab:blue", alpha=0.35, lw=1, label="loss")
    ax.plot(it, _smooth(loss, 10), color="tab:blue", lw=2, label="loss (smoothed)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if all("lr" in r for r in train):
        ax2 = ax.twinx()
        ax2.plot(it, [r["lr"] for r in train], color="tab:orange", lw=1, label="lr")
        ax2.set_ylabel("learning rate", color="tab:orange")
        ax2.set_yscale("log")
    ax.legend(loc="upper right", fontsize=8)
    if extra:
        bx = axes[0, 1]
        for key, vals in extra.items():
            bx.plot(it, _smooth(np.asarray(vals, dtype=float), 10), lw=1.5, label=key)
        bx.set_xlabel("iteration")
        bx.grid(alpha=0.3)
        bx.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(plt, fig, out_png)


def pick_slice(*labels: Optional[np.ndarray], axis: int = -1) -> int:
    """The index along ``axis`` where the given label maps disagree most (else hold most foreground)."""
    maps = [np.asarray(m) for m in labels if m is not None]
    if not maps:
        raise ValueError("pick_slice needs at least one label map")
    axis = axis % maps[0].ndim
    others = tuple(a for a in range(maps[0].ndim) if a != axis)
    if len(maps) > 1:
        disagreement = (maps[0] != maps[1]).sum(axis=others)
        if disagreement.max() > 0:
            return int(disagreement.argmax())
    return int((maps[0] > 0).sum(axis=others).argmax())


def plot_case(image: np.ndarray, clean: np.ndarray, out_png: PathLike, *, noisy: Optional[np.ndarray] = None,
              prediction: Optional[np.ndarray] = None, uncertainty: Optional[np.ndarray] = None,
              title: str = "", slice_index: Optional[int] = None) -> Path:
    """One axial slice: image | clean label | noisy label | prediction | uncertainty (panels given).

    Args:
        image (ndarray[X, Y, Z]): intensities (first channel).
        clean (ndarray[X, Y, Z]): ground truth.
        noisy, prediction (ndarray[X, Y, Z]): optional label maps.
        uncertainty (ndarray[X, Y, Z]): optional per-voxel entropy (white = high, as PINT Fig. 2).
        slice_index: the Z index; default where clean and noisy labels disagree most.

    Returns:
        the path written.
    """
    plt = _pyplot()
    z = pick_slice(clean, noisy) if slice_index is None else int(slice_index)
    panels = [("image", image[..., z], "gray", None)]
    panels.append(("ground truth", clean[..., z], "viridis", (0, max(int(clean.max()), 1))))
    if noisy is not None:
        panels.append(("noisy label", noisy[..., z], "viridis", (0, max(int(clean.max()), 1))))
    if prediction is not None:
        panels.append(("prediction", prediction[..., z], "viridis", (0, max(int(clean.max()), 1))))
    if uncertainty is not None:
        panels.append(("uncertainty (entropy)", uncertainty[..., z], "gray", (0, float(np.log(2.0)))))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (name, data, cmap, lim) in zip(axes[0], panels):
        kw = {} if lim is None else {"vmin": lim[0], "vmax": lim[1]}
        ax.imshow(np.asarray(data).T, cmap=cmap, origin="lower", interpolation="nearest", **kw)
        if name != "image" and name != "uncertainty (entropy)":
            ax.contour(np.asarray(clean[..., z]).T > 0, levels=[0.5], colors="red", linewidths=0.6)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle((title + "  " if title else "") + f"(z = {z}; red: ground-truth contour)", fontsize=9)
    return _save(plt, fig, out_png)
