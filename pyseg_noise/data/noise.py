"""Simulated non-expert label noise, as in PINT §3.2.

"We randomly select 25%, 50% and 75% training samples and further randomly
erode/dilate the contours with 5-18 pixels to simulate the non-expert noisy
labels." Here, for a seeded draw:

* exactly ``floor(fraction * n + 0.5)`` of the ``n`` training cases (round half up, so
  25 % of 10 cases is 3) are chosen uniformly without replacement;
* each chosen case is eroded or dilated (probability 1/2 each) by an integer
  radius drawn uniformly from ``radius_range`` (inclusive, default 5..18);
* erosion/dilation uses a ball of that radius, computed exactly with a
  Euclidean distance transform (``scipy.ndimage.distance_transform_edt``), so
  an 18-voxel ball costs the same as a 1-voxel one; with ``spacing`` the
  radius is in physical units and the ball is an ellipsoid in voxels.

The draws depend only on ``seed``, ``fraction``, ``radius_range`` and the
sorted case names, so the same seed gives the same noise.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from scipy.ndimage import distance_transform_edt

__all__ = [
    "erode_or_dilate",
    "num_noisy_cases",
    "plan_label_noise",
    "corrupt_labels",
    "corrupt_dataset",
    "OPERATIONS",
]

OPERATIONS = ("erode", "dilate")
PathLike = Union[str, Path]


# ----------------------------------------------------------------------------- one volume
def _check_spacing(spacing, ndim: int) -> Optional[Tuple[float, ...]]:
    if spacing is None:
        return None
    sp = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if sp.size == 1:
        sp = np.repeat(sp, ndim)
    if sp.size != ndim or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing must be None or {ndim} positive numbers (one per axis), got {spacing!r}")
    return tuple(float(s) for s in sp)


def _box(mask: np.ndarray, margins: Sequence[int]) -> Tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``margins`` voxels per axis, clipped to the array."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(np.any(mask, axis=others) if others else mask)
        box.append(slice(max(int(idx[0]) - margins[axis], 0), min(int(idx[-1]) + 1 + margins[axis], mask.shape[axis])))
    return tuple(box)


def _foreground_classes(label: np.ndarray) -> List[int]:
    """Sorted nonzero values of ``label``; bincount is O(N), unlike np.unique's sort (LA volumes have 3e7 voxels)."""
    if label.size == 0:
        return []
    top = int(label.max())
    if top < 1 << 16:
        counts = np.bincount(label.ravel().astype(np.intp, copy=False), minlength=top + 1)
        return [int(c) for c in np.flatnonzero(counts) if c != 0]
    return [int(c) for c in np.unique(label) if c != 0]


def erode_or_dilate(
    label: np.ndarray, op: str, radius: float, spacing: Optional[Sequence[float]] = None
) -> np.ndarray:
    """Erode or dilate every foreground class of ``label`` by a ball of radius ``radius``.

    Equal to ``scipy.ndimage.binary_dilation`` / ``binary_erosion`` of each class
    mask with the structuring element ``{o : |o * spacing| <= radius}``, computed
    with one Euclidean distance transform per class on the class's bounding
    box, so the cost does not grow with the radius.

    Multi-class rules (deterministic):

    * ``"erode"``: each class shrinks independently (voxels of other classes
      count as outside it); removed voxels become background 0.
    * ``"dilate"``: classes grow into background only — a voxel already
      labelled keeps its class. A background voxel within ``radius`` of several
      classes takes the nearest one; exact ties go to the lowest class index.

    Array edges: the region outside the volume is *not* treated as background,
    so erosion does not eat a structure from the border of the field of view
    (the structure goes on beyond it); this is ``binary_erosion(...,
    border_value=1)``. Dilation is unaffected.

    Args:
        label (ndarray[*S]): integer (or bool) label map, values >= 0; 0 = background.
        op: ``"erode"`` or ``"dilate"``.
        radius: ball radius >= 0, in voxels, or in the units of ``spacing`` if given.
        spacing: voxel size per axis (anisotropic data), or None for voxel units.

    Returns:
        ndarray[*S] of ``label``'s dtype (a new array).

    Raises:
        ValueError: unknown ``op``, negative/non-finite radius, bad spacing, negative labels.
        TypeError: non-integer label dtype.

    Example:
        >>> import numpy as np
        >>> x = np.zeros((1, 9), np.uint8); x[0, 4] = 1
        >>> erode_or_dilate(x, "dilate", 2)
        array([[0, 0, 1, 1, 1, 1, 1, 0, 0]], dtype=uint8)
    """
    label = np.asarray(label)
    if label.dtype.kind not in "biu":
        raise TypeError(f"label must hold integer class indices, got dtype {label.dtype}")
    if op not in OPERATIONS:
        raise ValueError(f"op must be 'erode' or 'dilate', got {op!r}")
    if isinstance(radius, bool) or not isinstance(radius, (int, float, np.integer, np.floating)) or not (
        math.isfinite(radius) and radius >= 0
    ):
        raise ValueError(f"radius must be a finite number >= 0, got {radius!r}")
    sp = _check_spacing(spacing, label.ndim)
    if label.size and label.min() < 0:
        raise ValueError(f"label contains the negative value {label.min()}; labels must be >= 0")
    out = label.copy()
    classes = _foreground_classes(label)
    if radius == 0 or not classes:
        return out
    unit = sp if sp is not None else (1.0,) * label.ndim
    if op == "erode":
        for c in classes:
            mask = label == c
            # One voxel of margin suffices: every voxel of that ring is outside the class, and
            # clamping any farther non-class voxel onto the ring only brings it closer.
            box = _box(mask, [1] * label.ndim)
            sub = mask[box]
            if sub.all():  # the class fills its box and touches every array edge around it: nothing to erode from
                continue
            dist = distance_transform_edt(sub, sampling=sp)
            out[box][sub & (dist <= radius)] = 0
        return out
    # dilate: anything farther than `radius` along some axis cannot be reached, so grow the box by that much
    margins = [int(math.ceil(radius / u)) + 1 for u in unit]
    background = label == 0
    best = None  # distance to the nearest class so far, only where needed (several classes)
    for c in classes:
        mask = label == c
        box = _box(mask, margins)
        dist = distance_transform_edt(~mask[box], sampling=sp)
        reach = background[box] & (dist <= radius)
        if len(classes) > 1:
            if best is None:
                best = np.full(label.shape, np.inf)
            # strict '<': classes come in ascending order, so ties stay with the lower index
            reach &= dist < best[box]
            best[box] = np.where(reach, dist, best[box])
        out[box][reach] = c
    return out


# ----------------------------------------------------------------------------- the draw
def num_noisy_cases(fraction: float, n: int) -> int:
    """``floor(fraction * n + 0.5)``: the number of noisy cases (round half up, unlike Python's ``round``)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating, np.integer)) or not (
        0.0 <= float(fraction) <= 1.0
    ):
        raise ValueError(f"fraction must be a number in [0, 1] (e.g. 0.25, 0.5, 0.75), got {fraction!r}")
    return int(math.floor(float(fraction) * n + 0.5))


def _check_radius_range(radius_range) -> Tuple[int, int]:
    try:
        lo, hi = (int(r) for r in radius_range)
        ok = all(float(r) == int(r) for r in radius_range) and 0 <= lo <= hi
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"radius_range must be two integers 0 <= low <= high, got {radius_range!r}")
    return lo, hi


def plan_label_noise(
    cases: Sequence[str], fraction: float, seed: int, radius_range: Tuple[int, int] = (5, 18)
) -> List[Dict[str, Any]]:
    """Which cases become noisy, and how: one record per case, in sorted case order.

    Args:
        cases: training case names (order does not matter; duplicates are an error).
        fraction: share of cases to corrupt, in [0, 1].
        seed: seed of ``numpy.random.default_rng``.
        radius_range: inclusive integer radius bounds.

    Returns:
        ``[{"case", "noisy", "operation", "radius"}]``; clean cases have
        ``operation = None`` and ``radius = 0``.

    Raises:
        ValueError: bad fraction, radius range or seed; duplicate case names.
    """
    names = sorted(str(c) for c in cases)
    if len(set(names)) != len(names):
        raise ValueError("cases contain duplicate names")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    lo, hi = _check_radius_range(radius_range)
    k = num_noisy_cases(fraction, len(names))
    rng = np.random.default_rng(int(seed))
    chosen = set(int(i) for i in rng.choice(len(names), size=k, replace=False)) if k else set()
    plan = []
    for i, case in enumerate(names):
        if i in chosen:
            op = OPERATIONS[int(rng.integers(0, 2))]
            radius = int(rng.integers(lo, hi + 1))
            plan.append({"case": case, "noisy": True, "operation": op, "radius": radius})
        else:
            plan.append({"case": case, "noisy": False, "operation": None, "radius": 0})
    return plan


def corrupt_labels(
    labels: Mapping[str, np.ndarray],
    fraction: float,
    seed: int,
    *,
    radius_range: Tuple[int, int] = (5, 18),
    spacing: Optional[Sequence[float]] = None,
) -> Tuple[Dict[str, np.ndarray], List[Dict[str, Any]]]:
    """Corrupt an in-memory set of label volumes (PINT §3.2).

    Args:
        labels: ``{case: ndarray[*S]}`` integer label maps.
        fraction, seed, radius_range: see :func:`plan_label_noise`.
        spacing: radius units (see :func:`erode_or_dilate`); None = voxels.

    Returns:
        (``{case: noisy label}`` with every case — clean ones returned as copies —,
        the plan records with ``foreground_before`` / ``foreground_after`` voxel counts added).

    Example:
        >>> import numpy as np
        >>> labels = {f"c{i}": np.pad(np.ones((20, 20, 20), np.uint8), 20) for i in range(4)}
        >>> noisy, records = corrupt_labels(labels, 0.5, seed=0)
        >>> sum(r["noisy"] for r in records)
        2
    """
    noisy: Dict[str, np.ndarray] = {}
    records = plan_label_noise(list(labels), fraction, seed, radius_range)
    for rec in records:
        label = np.asarray(labels[rec["case"]])
        new = erode_or_dilate(label, rec["operation"], rec["radius"], spacing) if rec["noisy"] else label.copy()
        rec["foreground_before"] = int(np.count_nonzero(label))
        rec["foreground_after"] = int(np.count_nonzero(new))
        noisy[rec["case"]] = new
    return noisy, records


# ----------------------------------------------------------------------------- a dataset folder
def _detect_layout(root: Path) -> str:
    if (root / "imagesTr").is_dir() or (root / "labelsTr").is_dir():
        return "nifti"
    if (root / "train.list").is_file() or (root.parent / "train.list").is_file():
        return "h5"
    raise ValueError(
        f"cannot tell the layout of {root}: expected imagesTr/labelsTr (NIfTI) or train.list (LA h5); pass layout="
    )


def _write_manifest(path: Path, meta: Dict[str, Any], records: List[Dict[str, Any]]) -> None:
    with open(path, "w") as f:
        json.dump({**meta, "cases": records}, f, indent=1)
    # the same table as CSV, for spreadsheets/pandas
    columns = ["case", "noisy", "operation", "radius", "foreground_before", "foreground_after"]
    with open(path.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns + ["seed"])
        writer.writeheader()
        for rec in records:
            writer.writerow({**{c: rec[c] for c in columns}, "seed": meta["seed"]})


def corrupt_dataset(
    root: PathLike,
    fraction: float,
    seed: int,
    *,
    layout: Optional[str] = None,
    radius_range: Tuple[int, int] = (5, 18),
    spacing: Union[None, str, Sequence[float]] = None,
    suffix: str = "noisy",
    overwrite: bool = True,
) -> Dict[str, Any]:
    """Write noisy training labels beside the clean ones and a manifest (PINT §3.2).

    * LA h5 layout (cases of ``train.list``): dataset ``"label_<suffix>"``
      (``"label_noisy"``) is added to each case's ``mri_norm2.h5``, for every
      training case (clean ones get a copy of ``"label"``), so a loader reads
      ``LAH5Dataset(root, label_key="label_noisy")``. The clean ``"label"`` is never
      touched. Manifest: ``<root>/label_<suffix>_manifest.json`` (+ ``.csv``).
    * NIfTI layout (cases of ``labelsTr``): folder ``labelsTr_<suffix>/`` with
      every training case (clean ones copied byte for byte, noisy ones written
      with the clean file's affine and header): ``NiftiDataset(root,
      label_dir="labelsTr_noisy")``. Manifest: ``<root>/labelsTr_<suffix>_manifest.json``
      (+ ``.csv``).

    The manifest holds the seed, fraction, radius range, spacing and per case:
    noisy or not, operation, radius and foreground voxel counts before/after.

    Args:
        root: dataset folder (the LA data folder, or the nnU-Net dataset folder).
        fraction: share of training cases to corrupt (0.25, 0.5, 0.75 in PINT).
        seed: draw seed; the same seed gives the same files.
        layout: ``"h5"``, ``"nifti"`` or None (detected).
        radius_range: inclusive integer radius bounds (voxels, or spacing units).
        spacing: None (radii in voxels, as the paper), a per-axis tuple, or ``"header"``
            (NIfTI only: each file's voxel size).
        suffix: name suffix of the noisy labels, so several noise levels can coexist
            (e.g. ``suffix="noisy50"`` -> ``labelsTr_noisy50``).
        overwrite: replace existing noisy labels of that suffix (else FileExistsError).

    Returns:
        The manifest dict (also written to disk), with its path under ``"manifest"``.

    Raises:
        FileNotFoundError: root or a case file missing.
        FileExistsError: noisy labels exist and ``overwrite=False``.
        ValueError: bad arguments, unreadable files (named), invalid labels.
    """
    from .la_h5 import LA_FILE_NAME, find_case_list, la_case_root, read_case_list
    from .nifti import list_label_cases, read_dataset_json
    from .volume_io import check_label, read_h5, read_nifti, require_file

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if not suffix or not all(ch.isalnum() or ch in "_-" for ch in suffix):
        raise ValueError(f"suffix must be a non-empty name of letters, digits, '_' or '-', got {suffix!r}")
    layout = _detect_layout(root) if layout is None else layout
    if layout not in ("h5", "nifti"):
        raise ValueError(f"layout must be 'h5', 'nifti' or None, got {layout!r}")
    if isinstance(spacing, str) and (spacing != "header" or layout != "nifti"):
        raise ValueError(f"spacing='header' is only available for the NIfTI layout, got spacing={spacing!r}, layout={layout!r}")

    if layout == "h5":
        import h5py

        key = f"label_{suffix}"
        list_file = find_case_list(root, "train")
        cases = read_case_list(list_file)
        case_root = la_case_root(root, cases)
        paths = {c: require_file(case_root / c / LA_FILE_NAME, f"h5 file of case {c!r} (named in {list_file})")
                 for c in cases}
        if not overwrite:
            for c, p in paths.items():
                with h5py.File(p, "r") as f:
                    if key in f:
                        raise FileExistsError(f"{p} already holds dataset {key!r} (overwrite=False)")
        records = plan_label_noise(cases, fraction, seed, radius_range)
        for rec in records:
            path = paths[rec["case"]]
            raw = read_h5(path, "label", what="LA h5 file")
            check_label(raw, f"{path}['label']")
            new = erode_or_dilate(raw, rec["operation"], rec["radius"], spacing) if rec["noisy"] else raw
            rec["foreground_before"], rec["foreground_after"] = int(np.count_nonzero(raw)), int(np.count_nonzero(new))
            try:
                with h5py.File(path, "r+") as f:
                    if key in f:
                        del f[key]
                    f.create_dataset(key, data=new, compression="gzip")
            except OSError as exc:
                raise ValueError(f"cannot write dataset {key!r} into {path}: {exc}") from exc
        target, manifest_path = key, root / f"{key}_manifest.json"
    else:
        info = read_dataset_json(root)
        ending = info["file_ending"]
        clean_dir, noisy_dir = root / "labelsTr", root / f"labelsTr_{suffix}"
        cases = list_label_cases(clean_dir, ending)
        if noisy_dir.exists():
            if not overwrite:
                raise FileExistsError(f"{noisy_dir} already exists (overwrite=False)")
            shutil.rmtree(noisy_dir)
        noisy_dir.mkdir(parents=True)
        records = plan_label_noise(cases, fraction, seed, radius_range)
        import nibabel as nib

        for rec in records:
            src = clean_dir / f"{rec['case']}{ending}"
            raw, zooms = read_nifti(src, what="label file")
            check_label(raw, src, info["num_classes"])
            dst = noisy_dir / src.name
            if not rec["noisy"]:
                shutil.copyfile(src, dst)
                rec["foreground_before"] = rec["foreground_after"] = int(np.count_nonzero(raw))
                continue
            sp = zooms if isinstance(spacing, str) else spacing
            new = erode_or_dilate(raw, rec["operation"], rec["radius"], sp)
            rec["foreground_before"], rec["foreground_after"] = int(np.count_nonzero(raw)), int(np.count_nonzero(new))
            template = nib.load(str(src))
            header = template.header.copy()
            header.set_data_dtype(new.dtype)
            nib.save(nib.Nifti1Image(new, template.affine, header), str(dst))
        target, manifest_path = noisy_dir.name, root / f"{noisy_dir.name}_manifest.json"

    meta = {
        "layout": layout,
        "target": target,
        "seed": int(seed),
        "fraction": float(fraction),
        "num_cases": len(records),
        "num_noisy": sum(r["noisy"] for r in records),
        "radius_range": list(_check_radius_range(radius_range)),
        "spacing": spacing if isinstance(spacing, str) or spacing is None else [float(s) for s in spacing],
    }
    _write_manifest(manifest_path, meta, records)
    return {**meta, "cases": records, "manifest": str(manifest_path)}
