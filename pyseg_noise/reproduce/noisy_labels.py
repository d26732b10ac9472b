"""Noisy training labels for a reproduction, written into the run folder (the dataset stays read-only).

The draw is PINT §3.2's, through :func:`pyseg_noise.data.plan_label_noise` and
:func:`pyseg_noise.data.erode_or_dilate`: ``round(fraction * n)`` training cases,
each eroded or dilated by a radius drawn from ``radius_range``. Unlike
:func:`pyseg_noise.data.corrupt_dataset`, which adds the noisy labels to the
dataset itself, every label goes to ``<folder>/<case>.h5`` (dataset ``label``),
read by the training run through ``data.label_overrides``; a user's LA folder
is never written to.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple, Union

import numpy as np

from pyseg_noise.data import erode_or_dilate, open_dataset, plan_label_noise
from pyseg_noise.data.volume_io import check_label, read_volume

__all__ = ["write_noisy_labels", "structure_radius_range"]

PathLike = Union[str, Path]

#: PINT's erosion/dilation radii (voxels) and the LA atrium's equivalent-sphere radius they act on
PAPER_RADIUS_RANGE = (5, 18)
LA_ATRIUM_RADIUS = 40.0


def structure_radius_range(shape: Sequence[int], foreground_fraction: float) -> Tuple[int, int]:
    """PINT's 5-18 voxel radii scaled to a structure of ``foreground_fraction`` of a ``shape`` volume.

    The paper's radii act on the LA atrium (equivalent-sphere radius ~40 voxels,
    see :mod:`pyseg_noise.data.synthetic`); on a smaller structure the same
    radii are a stronger corruption (18 voxels can erase a small structure).
    Scaling them by ``r_eq / 40`` keeps the paper's *relative* noise strength.

    Example:
        >>> structure_radius_range((64, 64, 48), 0.075)
        (2, 7)
    """
    n = float(np.prod(shape)) * float(foreground_fraction)
    r_eq = (3.0 * n / (4.0 * np.pi)) ** (1.0 / 3.0)
    s = r_eq / LA_ATRIUM_RADIUS
    lo = max(1, int(round(PAPER_RADIUS_RANGE[0] * s)))
    hi = max(lo, int(round(PAPER_RADIUS_RANGE[1] * s)))
    return lo, hi


def _write_label_h5(path: Path, label: np.ndarray) -> None:
    import h5py

    tmp = path.with_suffix(".h5.tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("label", data=label, compression="gzip")
    tmp.replace(path)


def write_noisy_labels(root: PathLike, out_dir: PathLike, fraction: float, seed: int, *,
                       radius_range: Tuple[int, int] = PAPER_RADIUS_RANGE, layout=None,
                       split: str = "train") -> Dict[str, Any]:
    """Write every training case's label (noisy for the drawn cases, clean copies otherwise) to ``out_dir``.

    Args:
        root: the dataset (LA h5 or NIfTI layout); only read.
        out_dir: folder for ``<case>.h5`` files and ``manifest.json``.
        fraction: share of noisy cases (PINT: 0.25, 0.5, 0.75).
        seed: the draw's seed.
        radius_range: inclusive erosion/dilation radii in voxels.
        layout: ``"h5"``, ``"nifti"`` or None (detected).
        split: the training split.

    Returns:
        the manifest: ``{"fraction", "seed", "radius_range", "num_noisy", "cases": [records]}``. An
        existing folder with the same manifest settings is reused as it is.
    """
    out = Path(out_dir)
    ds = open_dataset(root, split, layout=layout, crop_size=None, augment=False, normalize=False)
    settings = {"root": str(Path(root).resolve()), "fraction": float(fraction), "seed": int(seed),
                "radius_range": [int(r) for r in radius_range], "cases": sorted(ds.cases)}
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if {k: old.get(k) for k in ("root", "fraction", "seed", "radius_range")} == {
                k: settings[k] for k in ("root", "fraction", "seed", "radius_range")} and \
                sorted(r["case"] for r in old["records"]) == settings["cases"] and \
                all((out / f"{c}.h5").is_file() for c in settings["cases"]):
            return old
    out.mkdir(parents=True, exist_ok=True)
    records = plan_label_noise(ds.cases, fraction, seed, tuple(radius_range))
    for rec in records:
        case = rec["case"]
        if hasattr(ds, "label_path"):
            src = ds.label_path(case)
            label = read_volume(src, key="label", what="label file")
        else:
            src = ds.case_path(case)
            label = read_volume(src, key=ds.label_key, what="LA h5 file")
        label = check_label(label, src)
        noisy = erode_or_dilate(label, rec["operation"], rec["radius"]) if rec["noisy"] else label
        rec["foreground_before"] = int(np.count_nonzero(label))
        rec["foreground_after"] = int(np.count_nonzero(noisy))
        small = noisy.max() < 256  # uint8 on disk, as the LA files store labels
        _write_label_h5(out / f"{case}.h5", noisy.astype(np.uint8) if small else noisy)
    manifest = {**{k: v for k, v in settings.items() if k != "cases"},
                "num_noisy": sum(r["noisy"] for r in records), "records": records}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest
