"""Does PINT's teacher locate the label noise? (issue 14, item 5's first diagnostic)

PINT weighs each voxel's cross-entropy by ``alpha = exp(-u)``, ``u`` the entropy
of the EMA teacher's mean prediction over M perturbed passes (Eq. 1-3). That
helps only if ``u`` is high where the training label is wrong. On a trained
PINT run and its noisy training labels (the corruption manifest says which
cases were eroded or dilated), per corrupted case:

* **AUROC of u** separating the corrupted voxels (noisy label != clean label)
  from the correctly labelled ones, both restricted to a band of ``band``
  voxels (Euclidean) around the clean label's boundary, where every erosion or
  dilation of radius <= ``band`` acts. 0.5 = ``u`` does not tell them apart,
  1 = every corrupted voxel is more uncertain than every correct one.
* **mean alpha** on the corrupted and on the correct voxels of the band.
* **teacher disagreement**: the share of corrupted voxels (in the band) where
  the teacher's argmax differs from the noisy label — the teacher "knows"
  the label is wrong there, whatever its entropy says.

The AUROC is the Mann-Whitney statistic from average ranks (ties count 1/2), no
sklearn. The teacher runs over each whole training volume in windows of the
training crop (:func:`teacher_maps`), its M passes with the run's perturbation
and batch-norm mode; ``u`` and the mean softmax are averaged over overlapping windows.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from scipy import ndimage
from scipy.stats import rankdata

__all__ = ["auroc", "boundary_band", "noise_localisation", "teacher_maps", "diagnose_pint_run",
           "summarize_diagnostics", "diagnostics_table", "summary_line", "noise_diagnostic", "DEFAULT_BAND"]

PathLike = Union[str, Path]

#: voxels within this distance of the clean boundary are looked at (the issue's first look used 8)
DEFAULT_BAND = 8.0


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Area under the ROC curve of scores ``positive`` (should be high) against ``negative``.

    ``P(score_pos > score_neg) + 0.5 * P(equal)``, from the average ranks of the pooled scores
    (Mann-Whitney U / (n_pos * n_neg)). nan when either group is empty.

    Example:
        >>> auroc([0.9, 0.8, 0.4], [0.1, 0.4, 0.3])
        0.9444444444444444
    """
    pos = np.asarray(positive, dtype=np.float64).ravel()
    neg = np.asarray(negative, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        return math.nan
    ranks = rankdata(np.concatenate([pos, neg]))  # average ranks for ties
    u_stat = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u_stat / (pos.size * neg.size))


def boundary_band(clean: np.ndarray, band: float = DEFAULT_BAND) -> np.ndarray:
    """Voxels whose Euclidean distance to the other class of ``clean`` (binary: foreground > 0) is <= ``band``.

    Every voxel when ``clean`` holds one class only (no boundary to measure from).

    Example:
        >>> lab = np.zeros((1, 1, 9), int); lab[..., 4] = 1
        >>> boundary_band(lab, 2).astype(int)[0, 0].tolist()
        [0, 0, 1, 1, 1, 1, 1, 0, 0]
    """
    fg = np.asarray(clean) > 0
    if fg.all() or not fg.any():
        return np.ones(fg.shape, dtype=bool)
    distance = np.where(fg, ndimage.distance_transform_edt(fg), ndimage.distance_transform_edt(~fg))
    return distance <= band


def noise_localisation(uncertainty: np.ndarray, teacher_label: np.ndarray, noisy: np.ndarray, clean: np.ndarray, *,
                       band: float = DEFAULT_BAND, entropy_scale: float = 1.0) -> Dict[str, float]:
    """The diagnostic of one volume (module docstring).

    Args:
        uncertainty (ndarray[X, Y, Z]): the teacher's entropy ``u``.
        teacher_label (ndarray[X, Y, Z]): the teacher's argmax.
        noisy, clean (ndarray[X, Y, Z]): the training label and the clean one.
        band: distance (voxels) to the clean boundary within which voxels count.
        entropy_scale: alpha = exp(-u / entropy_scale) (``log C`` with ``normalize_entropy``).

    Returns:
        ``{"auroc", "alpha_corrupted", "alpha_correct", "u_corrupted", "u_correct",
        "teacher_disagrees", "n_corrupted", "n_correct"}`` (nan where a group is empty).

    Raises:
        ValueError: the arrays' shapes differ.
    """
    shapes = {name: np.shape(a) for name, a in (("uncertainty", uncertainty), ("teacher_label", teacher_label),
                                                 ("noisy", noisy), ("clean", clean))}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"noise_localisation needs arrays of one shape, got {shapes}")
    u = np.asarray(uncertainty, dtype=np.float64)
    noisy, clean = np.asarray(noisy), np.asarray(clean)
    in_band = boundary_band(clean, band)
    corrupted = in_band & (noisy != clean)
    correct = in_band & (noisy == clean)
    alpha = np.exp(-u / entropy_scale)

    def mean(values: np.ndarray) -> float:
        return float(values.mean()) if values.size else math.nan

    return {
        "auroc": auroc(u[corrupted], u[correct]),
        "alpha_corrupted": mean(alpha[corrupted]),
        "alpha_correct": mean(alpha[correct]),
        "u_corrupted": mean(u[corrupted]),
        "u_correct": mean(u[correct]),
        "teacher_disagrees": mean((np.asarray(teacher_label) != noisy)[corrupted].astype(np.float64)),
        "n_corrupted": int(corrupted.sum()),
        "n_correct": int(correct.sum()),
    }


@torch.no_grad()
def teacher_maps(method, image: torch.Tensor, *, stride: Optional[Sequence[int]] = None,
                 seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """The PINT teacher's mean softmax over M perturbed passes and its entropy on a whole volume.

    Args:
        method: a trained ``pnt``/``int``/``pint`` method (:func:`pyseg_noise.training.load_trained`).
        image (Tensor[C_in, X, Y, Z]): the z-scored volume.
        stride: window stride (default: the training crop, i.e. tiled windows).
        seed: seeds the input perturbation.

    Returns:
        ``(p_hat ndarray[C, X, Y, Z], u ndarray[X, Y, Z])``: per window, ``p_hat`` and ``u`` as in
        training (Eq. 1), each averaged over the windows covering a voxel.
    """
    from pyseg_noise.inference import sliding_window_inference
    from pyseg_noise.training.pint import perturbed_teacher_uncertainty

    o, cfg = method.options, method.config
    teacher = method.ema.teacher
    device = next(teacher.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)

    def passes(x: torch.Tensor) -> torch.Tensor:
        noise = lambda m: torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)  # noqa: E731
        teacher.train(o.teacher_batchnorm == "batch")  # the batch-norm mode of training's passes
        try:
            prob, entropy = perturbed_teacher_uncertainty(teacher, x, noise, passes=o.passes, noise_std=o.noise_std,
                                                          noise_clip=o.noise_clip, dropout=o.teacher_dropout)
        finally:
            teacher.eval()
        return torch.cat([prob.float(), entropy.float()[:, None]], 1)  # u rides along as an extra channel

    crop = tuple(cfg.data.crop_size)
    # windows go through in batches of the training batch size (batch norm in "batch" mode sees a batch
    # of crops, as in training)
    maps = sliding_window_inference(image.to(device)[None], passes, patch_size=crop,
                                    stride=tuple(stride) if stride is not None else crop, output="probs",
                                    batch_size=cfg.batch_size)[0]
    maps = maps.cpu().numpy()
    return maps[:-1], maps[-1]


def diagnose_pint_run(run_dir: PathLike, data_root: PathLike, label_dir: PathLike, *, band: float = DEFAULT_BAND,
                      device: str = "cpu", stride: Optional[Sequence[int]] = None) -> List[Dict[str, Any]]:
    """:func:`noise_localisation` of a trained PINT run on each corrupted training case.

    Args:
        run_dir: the PINT run folder (its checkpoint is loaded).
        data_root: the dataset (clean training labels and images).
        label_dir: the noisy labels written by :func:`~pyseg_noise.reproduce.noisy_labels.write_noisy_labels`
            (``<case>.h5`` and ``manifest.json``, which names the corrupted cases).
        band, stride: see :func:`noise_localisation`, :func:`teacher_maps`.

    Returns:
        one dict per corrupted case: ``{"case", "operation", "radius", **noise_localisation}``.

    Raises:
        FileNotFoundError: no checkpoint, manifest or label file (named).
        ValueError: the run is not a PINT-family run.
    """
    from pyseg_noise.data import open_dataset
    from pyseg_noise.data.volume_io import read_json, read_volume
    from pyseg_noise.training.trainer import load_trained

    method = load_trained(run_dir, device)
    if not hasattr(method, "ema"):
        raise ValueError(f"run {run_dir} is a {method.config.method!r} run; the diagnostic needs PINT's teacher")
    label_dir = Path(label_dir)
    manifest = read_json(label_dir / "manifest.json", what="noise manifest")
    noisy_cases = [r for r in manifest.get("records", manifest.get("cases", [])) if r.get("noisy")]
    ds = open_dataset(data_root, method.config.data.train_split, crop_size=None, augment=False)
    scale = math.log(method.config.data.num_classes) if method.options.normalize_entropy else 1.0
    results = []
    for rec in noisy_cases:
        case = rec["case"]
        item = ds[ds.cases.index(case)]
        noisy = read_volume(label_dir / f"{case}.h5", key="label", what="noisy label file")
        prob, u = teacher_maps(method, item["image"], stride=stride, seed=method.config.seed)
        stats = noise_localisation(u, prob.argmax(0), noisy, item["label"].numpy(), band=band, entropy_scale=scale)
        results.append({"case": case, "operation": rec.get("operation"), "radius": rec.get("radius"), **stats})
    return results


def summarize_diagnostics(results: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    """Means over cases (nan-skipping) of the per-case numbers, and the AUROC range."""
    out: Dict[str, float] = {"cases": len(results)}
    for key in ("auroc", "alpha_corrupted", "alpha_correct", "teacher_disagrees"):
        values = np.asarray([r[key] for r in results], dtype=np.float64)
        values = values[np.isfinite(values)]
        out[key] = float(values.mean()) if values.size else math.nan
        if key == "auroc":
            out["auroc_min"] = float(values.min()) if values.size else math.nan
            out["auroc_max"] = float(values.max()) if values.size else math.nan
    return out


def diagnostics_table(results: Sequence[Dict[str, Any]], band: float = DEFAULT_BAND) -> str:
    """Per-case Markdown table of :func:`diagnose_pint_run`'s results."""
    header = ["Case", "Noise", f"Corrupted voxels (within {band:g})", "AUROC of u", "alpha corrupted",
              "alpha correct", "Teacher argmax != noisy label"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def f(x: float, pct: bool = False) -> str:
        return "—" if not math.isfinite(x) else (f"{100 * x:.1f}%" if pct else f"{x:.3f}")

    for r in results:
        lines.append(f"| {r['case']} | {r['operation']} {r['radius']} | {r['n_corrupted']} | {f(r['auroc'])} | "
                     f"{f(r['alpha_corrupted'])} | {f(r['alpha_correct'])} | {f(r['teacher_disagrees'], True)} |")
    return "\n".join(lines)


def summary_line(summary: Dict[str, float], band: float = DEFAULT_BAND) -> str:
    """One line of :func:`summarize_diagnostics`' numbers.

    Example:
        >>> summary_line({"cases": 8, "auroc": 0.55, "auroc_min": 0.44, "auroc_max": 0.9, "alpha_corrupted": 0.7,
        ...               "alpha_correct": 0.72, "teacher_disagrees": 0.93})
        "8 corrupted cases, voxels within 8 of the boundary: AUROC of u 0.550 (0.440-0.900); alpha 0.700 on corrupted vs 0.720 on correct voxels; teacher's argmax != noisy label on 93.0% of corrupted voxels"
    """
    return (f"{summary['cases']} corrupted cases, voxels within {band:g} of the boundary: AUROC of u "
            f"{summary['auroc']:.3f} ({summary['auroc_min']:.3f}-{summary['auroc_max']:.3f}); alpha "
            f"{summary['alpha_corrupted']:.3f} on corrupted vs {summary['alpha_correct']:.3f} on correct voxels; "
            f"teacher's argmax != noisy label on {100 * summary['teacher_disagrees']:.1f}% of corrupted voxels")


#: the diagnostic's file in a PINT run folder (recomputed when the checkpoint is newer)
DIAGNOSTIC_FILE = "noise_diagnostic.json"


def noise_diagnostic(run_dir: PathLike, data_root: PathLike, label_dir: PathLike, *, band: float = DEFAULT_BAND,
                     device: str = "cpu") -> Dict[str, Any]:
    """:func:`diagnose_pint_run` cached in ``<run_dir>/noise_diagnostic.json``: ``{"summary", "cases"}``.

    The file is reused while it is newer than the run's checkpoint and was made with the same
    ``band`` and labels; otherwise the teacher is run again (tiled windows of the training crop).
    """
    from pyseg_noise.training.checkpoint import checkpoint_path

    run_dir = Path(run_dir)
    path = run_dir / DIAGNOSTIC_FILE
    checkpoint = checkpoint_path(run_dir)
    key = {"band": band, "label_dir": str(Path(label_dir).resolve())}
    if path.is_file() and checkpoint.is_file() and path.stat().st_mtime_ns >= checkpoint.stat().st_mtime_ns:
        old = json.loads(path.read_text())
        if old.get("settings") == key:
            return {"summary": old["summary"], "cases": old["cases"]}
    cases = diagnose_pint_run(run_dir, data_root, label_dir, band=band, device=device)
    found = {"summary": summarize_diagnostics(cases), "cases": cases}
    path.write_text(json.dumps({"settings": key, **found}, indent=1))
    return found
