"""A synthetic left-atrium-like dataset that needs no download.

Each case is a 3-D volume with:

* **the target** (label 1): an atrium-like body — a smooth union of three
  ellipsoids warped by a smooth random deformation field — with a curved,
  tapering tubular appendage ending in a bulge (the LA appendage) and 2-4
  thinner tubes leaving the opposite side (pulmonary veins). Its level set is
  chosen so the foreground is a drawn fraction (default 5.5-9.5 %) of the volume,
  like LA crops;
* **distractors** of similar brightness (0.8-1.0 of the target's): a
  ventricle-like ellipsoid and an aorta-like tube placed against the body,
  separated from it only by a thin (1-2.5 voxel), only partly darker wall
  (as the atrial wall in LGE-MRI, often barely visible), plus dimmer
  blobs in the background — so no intensity threshold finds the target and
  the boundary is ambiguous exactly where eroded/dilated noisy labels move it;
* **MR-like corruption**: a smooth textured background, partial-volume blur,
  a smooth multiplicative bias field and Rician noise.

**Three classes** (``num_classes=3``, HVSMR-like, the data of TSMAN: blood
pool and myocardium): the same chamber is label 1 (the "blood pool") and a
wall ring around it is label 2 (the "myocardium"): the shell of voxels within
``wall + 0.12 * r_eq`` voxels outside the chamber's surface (``wall`` the
case's 1-2.5 voxel wall, ``r_eq`` the chamber's equivalent radius: ~3-4.5
voxels at 64 x 64 x 48), at an intensity between background and blood
(``wall_value + 0.1``, 0.5-0.7; the dim background blobs are 0.55, so
intensity alone does not find it). The distractors start outside the ring.
No extra random numbers are drawn, so case ``i`` of a 3-class set has the
same chamber (label 1), distractors and noise as case ``i`` of the binary
set with the same seed, and the binary output is unchanged by the option.

The same ``seed`` gives the same files; case ``i`` depends only on ``(seed, i)``
and the generation settings, not on ``n_train``/``n_test``. About 0.1 s per
96 x 96 x 64 case on one core, plus writing (20 cases: ~3 s as h5, ~4 s as NIfTI).

Scale and label noise: at the default 96 x 96 x 64 with 5.5-9.5 % foreground
the body is ~22 voxels in equivalent radius, while the real LA atrium (0.625 mm
voxels) is ~40. PINT's 5-18 voxel erosion/dilation is therefore relatively
about twice as strong here: an 18-voxel erosion can erase a case's label
entirely. Use a larger ``shape`` or a smaller ``radius_range`` in
:func:`pyseg_noise.data.corrupt_dataset` for a closer analogue.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

__all__ = ["make_synthetic_case", "generate_synthetic_dataset", "SYNTHETIC_SHAPE"]

SYNTHETIC_SHAPE = (96, 96, 64)
PathLike = Union[str, Path]
_FAR = np.float32(1e4)  # "no shape here" for implicit functions (finite: inf - inf would give NaN)


# ----------------------------------------------------------------------------- smooth random fields
def _smooth_field(shape: Sequence[int], rng: np.random.Generator, cell: float, channels: int = 1) -> np.ndarray:
    """``channels`` smooth random fields of unit-ish amplitude, float32 ``[channels, *shape]``.

    Normal noise on a coarse grid (one node per ``cell`` voxels), lightly
    smoothed, then upsampled trilinearly: cheap (the work is one interpolation)
    and smooth at the scale of ``cell``.
    """
    coarse = [max(int(math.ceil(s / cell)) + 2, 3) for s in shape]
    noise = rng.standard_normal((channels, *coarse)).astype(np.float32)
    noise = gaussian_filter(noise, sigma=(0, 0.7, 0.7, 0.7), mode="nearest")
    noise /= max(float(noise.std()), 1e-6)
    up = F.interpolate(torch.from_numpy(noise)[None], size=tuple(shape), mode="trilinear", align_corners=True)
    return up[0].numpy()


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum: a union of two implicit shapes with a fillet of width ~k."""
    k = float(k)
    h = np.clip(0.5 + (0.5 / k) * (b - a), 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _random_direction(rng: np.random.Generator, z_scale: float = 1.0) -> np.ndarray:
    d = rng.standard_normal(3)
    d[2] *= z_scale
    return _unit(d)


# ----------------------------------------------------------------------------- implicit shapes
class _Grid:
    """Voxel coordinates of a volume, optionally warped, as three float32 arrays."""

    def __init__(self, shape: Sequence[int], warp: Optional[np.ndarray] = None):
        self.shape = tuple(shape)
        axes = [np.arange(s, dtype=np.float32) for s in shape]
        if warp is None:
            self.xyz = [axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]]
        else:
            self.xyz = [
                axes[0][:, None, None] + warp[0],
                axes[1][None, :, None] + warp[1],
                axes[2][None, None, :] + warp[2],
            ]

    def ellipsoid(self, centre, radii) -> np.ndarray:
        """Approximate signed distance (voxels) to an axis-aligned ellipsoid."""
        # Python floats keep the arithmetic in float32 (numpy float64 scalars would promote it)
        q = sum(np.square((c - float(m)) * (1.0 / float(r))) for c, m, r in zip(self.xyz, centre, radii))
        return (np.sqrt(q) - 1.0) * float(np.mean(radii))

    def line(self, point: np.ndarray, direction: np.ndarray, radius: float) -> np.ndarray:
        """Signed distance to an infinite cylinder of radius ``radius`` around a line."""
        rel = [c - float(p) for c, p in zip(self.xyz, point)]
        along = sum(r * float(d) for r, d in zip(rel, direction))
        across2 = sum(r * r for r in rel) - along * along
        return np.sqrt(np.maximum(across2, 0.0)) - float(radius)

    def tube(self, points: np.ndarray, radii: np.ndarray, pad: float) -> np.ndarray:
        """Signed distance to a chain of spheres along ``points`` (a tapered tube); ``_FAR`` far away.

        Only the bounding box of the tube (grown by ``pad``) is evaluated: the
        tubes are thin, so this is most of the saving. Outside it the value is
        a large finite number, not inf, so that smooth unions stay finite.
        """
        out = np.full(self.shape, _FAR, dtype=np.float32)
        lo = np.floor(points.min(0) - radii.max() - pad).astype(int)
        hi = np.ceil(points.max(0) + radii.max() + pad).astype(int) + 1
        lo = np.clip(lo, 0, self.shape)
        hi = np.clip(hi, 0, self.shape)
        if np.any(hi <= lo):
            return out
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        coords = [np.broadcast_to(c, self.shape)[box] for c in self.xyz]
        best = np.full(coords[0].shape, _FAR, dtype=np.float32)
        d = np.empty_like(best)
        for p, r in zip(points.astype(np.float32), radii.astype(np.float32)):
            np.square(coords[0] - p[0], out=d)
            d += np.square(coords[1] - p[1])
            d += np.square(coords[2] - p[2])
            np.sqrt(d, out=d)
            d -= r
            np.minimum(best, d, out=best)
        out[box] = best
        return out


def _bezier(p0, p1, p2, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def _clip_inside(p: np.ndarray, shape, margin: float) -> np.ndarray:
    return np.clip(p, margin, np.asarray(shape, dtype=float) - 1 - margin)


# ----------------------------------------------------------------------------- one case
def make_synthetic_case(
    shape: Sequence[int] = SYNTHETIC_SHAPE,
    rng: Optional[np.random.Generator] = None,
    *,
    foreground_fraction: Tuple[float, float] = (0.055, 0.095),
    noise_sigma: float = 0.12,
    bias_strength: float = 0.3,
    num_classes: int = 2,
) -> Tuple[np.ndarray, np.ndarray]:
    """One synthetic case.

    Args:
        shape: (X, Y, Z), each >= 16.
        rng: numpy Generator (default: a fresh unseeded one).
        foreground_fraction: (low, high); the case's fraction is drawn uniformly in it.
        noise_sigma: Rician noise level, relative to the target's mean intensity (1.0).
        bias_strength: standard deviation of the log bias field.
        num_classes: 2 (the chamber) or 3 (chamber = 1 and a wall ring = 2, module docstring).

    Returns:
        (image ndarray[X, Y, Z] float32, label ndarray[X, Y, Z] uint8 in {0, .., num_classes - 1}).

    Raises:
        ValueError: shape with a side < 16, a fraction range outside (0, 0.5), num_classes not 2 or 3.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"shape must be three sizes >= 16 (X, Y, Z), got {shape!r}")
    lo_f, hi_f = (float(f) for f in foreground_fraction)
    if not 0.0 < lo_f <= hi_f < 0.5:
        raise ValueError(f"foreground_fraction must be (low, high) with 0 < low <= high < 0.5, got {foreground_fraction!r}")
    if isinstance(num_classes, bool) or num_classes not in (2, 3):
        raise ValueError(f"num_classes must be 2 or 3, got {num_classes!r}")
    if not (noise_sigma >= 0 and bias_strength >= 0):
        raise ValueError(f"noise_sigma and bias_strength must be >= 0, got {noise_sigma!r}, {bias_strength!r}")
    rng = np.random.default_rng() if rng is None else rng
    size = np.asarray(shape, dtype=float)
    n_vox = float(np.prod(size))
    fraction = rng.uniform(lo_f, hi_f)
    # radius of a sphere holding the target volume: every length below scales with it
    r_eq = (3.0 * fraction * n_vox / (4.0 * math.pi)) ** (1.0 / 3.0)
    aspect = (size / np.exp(np.log(size).mean())) ** 0.5  # flatter along short axes (LA crops are 112x112x80)

    warp = _smooth_field(shape, rng, cell=max(r_eq * 0.9, 4.0), channels=3) * float(0.18 * r_eq)
    grid = _Grid(shape, warp)

    # -- the atrium body: a smooth union of three ellipsoids
    centre = size / 2 + rng.uniform(-0.06, 0.06, 3) * size
    body_radii = r_eq * aspect * rng.uniform(0.85, 1.1, 3)
    body = grid.ellipsoid(centre, body_radii)
    for _ in range(2):
        offset = _random_direction(rng, 0.6) * body_radii * rng.uniform(0.35, 0.6)
        lobe = grid.ellipsoid(centre + offset, body_radii * rng.uniform(0.5, 0.75, 3))
        body = _smin(body, lobe, k=0.3 * r_eq)

    # -- appendage: a curved tapering tube ending in a bulge, on one side
    margin = 2.0 + 0.1 * r_eq
    # a voxel's warped position is at most max|warp| away; the fillets and the level shift reach a bit further
    tube_pad = float(np.abs(warp).max()) + 0.3 * r_eq + 2.0
    side = _random_direction(rng, 0.4)
    start = centre + side * body_radii * 0.75
    bend = _unit(np.cross(side, _random_direction(rng))) * r_eq * rng.uniform(0.3, 0.6)
    tip = _clip_inside(start + side * r_eq * rng.uniform(0.8, 1.1) + bend, shape, margin + 0.35 * r_eq)
    points = _bezier(start, start + side * r_eq * 0.5, tip, 11)
    radii = np.linspace(0.32, 0.2, 11) * r_eq
    radii[-3:] = np.array([0.24, 0.28, 0.3]) * r_eq  # the bulge at the tip
    target = _smin(body, grid.tube(points, radii, pad=tube_pad), k=0.2 * r_eq)

    # -- pulmonary veins: thinner, straighter tubes leaving the opposite side
    for _ in range(int(rng.integers(2, 5))):
        d = _unit(-side + 0.8 * _random_direction(rng, 0.5))
        start = centre + d * body_radii * 0.7
        end = _clip_inside(start + d * r_eq * rng.uniform(0.6, 1.0), shape, margin + 0.2 * r_eq)
        points = _bezier(start, (start + end) / 2 + _random_direction(rng) * 0.15 * r_eq, end, 8)
        radii = np.full(8, rng.uniform(0.14, 0.2) * r_eq)
        target = _smin(target, grid.tube(points, radii, pad=tube_pad), k=0.15 * r_eq)

    # Keep the target off the volume's faces (LA crops have a margin around the atrium): push the
    # implicit function up within `edge` voxels of a face, steeply enough that the level below never
    # reaches it there.
    edge = 3.0
    faces = [np.minimum(np.arange(s, dtype=np.float32), np.arange(s, dtype=np.float32)[::-1]) for s in shape]
    to_face = np.minimum(np.minimum(faces[0][:, None, None], faces[1][None, :, None]), faces[2][None, None, :])
    target = target + np.maximum(edge - to_face, 0.0) * float(r_eq)

    # the level that gives exactly the drawn foreground fraction
    k = int(round(fraction * n_vox))
    level = np.partition(target.ravel(), k)[k]
    label = target < level

    # -- distractors: bright structures pressed against the target behind a thin wall
    wall = rng.uniform(1.0, 2.5)
    ring = None
    if num_classes == 3:  # the myocardium-like ring; drawn from values already drawn (module docstring)
        thickness = wall + 0.12 * r_eq
        ring = (target >= level) & (target < level + thickness)
        outside = target > level + thickness
    else:
        outside = target > level + wall
    away = _random_direction(rng, 0.3)
    ventricle_radii = r_eq * aspect * rng.uniform(0.9, 1.25, 3)
    ventricle_centre = centre + away * (body_radii.mean() + ventricle_radii.mean()) * rng.uniform(0.75, 0.95)
    ventricle = grid.ellipsoid(ventricle_centre, ventricle_radii) < 0
    axis = _unit(np.array([rng.normal(0, 0.3), rng.normal(0, 0.3), 1.0]))
    across = _unit(np.cross(axis, _random_direction(rng)))
    aorta_radius = r_eq * rng.uniform(0.3, 0.42)
    through = centre + across * (body_radii.mean() + aorta_radius) * rng.uniform(0.85, 1.0)
    aorta = grid.line(through, axis, aorta_radius) < 0

    # -- intensities (target mean 1.0)
    texture = _smooth_field(shape, rng, cell=max(r_eq * 0.5, 3.0), channels=2)
    image = 0.32 + 0.07 * texture[0]
    blobs = texture[1] > 1.3  # dimmer structures scattered in the background
    image = np.where(blobs, 0.55 + 0.05 * texture[0], image)
    wall_value = rng.uniform(0.4, 0.6)  # between background (0.32) and blood (0.8-1.0): a faint wall
    image = np.where((ventricle | aorta) & ~outside, wall_value, image)
    image = np.where(ventricle & outside, rng.uniform(0.8, 0.95) + 0.04 * texture[1], image)
    image = np.where(aorta & outside, rng.uniform(0.85, 1.0) + 0.04 * texture[1], image)
    if ring is not None:
        image = np.where(ring, wall_value + 0.1 + 0.04 * texture[1], image)
    image = np.where(label, 1.0 + 0.05 * texture[1], image).astype(np.float32)
    image = gaussian_filter(image, sigma=0.8)  # partial volume
    bias = np.exp(bias_strength * _smooth_field(shape, rng, cell=max(size.max() / 2, 8.0))[0])
    image *= bias
    # Rician noise: the magnitude of a complex signal with Gaussian noise on both parts
    real = image + noise_sigma * rng.standard_normal(shape, dtype=np.float32)
    imag = noise_sigma * rng.standard_normal(shape, dtype=np.float32)
    image = np.sqrt(real * real + imag * imag).astype(np.float32)
    out = label.astype(np.uint8)
    if ring is not None:
        out[ring] = 2
    return image, out


# ----------------------------------------------------------------------------- a dataset folder
def _write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image)
        f.create_dataset("label", data=label, compression="gzip")


def generate_synthetic_dataset(
    out_dir: PathLike,
    n_train: int = 16,
    n_test: int = 4,
    shape: Sequence[int] = SYNTHETIC_SHAPE,
    layout: str = "h5",
    seed: int = 0,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    foreground_fraction: Tuple[float, float] = (0.055, 0.095),
    noise_sigma: float = 0.12,
    bias_strength: float = 0.3,
    num_classes: int = 2,
    overwrite: bool = False,
) -> Dict[str, Any]:
    """Write a synthetic LA-like dataset with clean labels (see the module docstring).

    Layouts (cases ``case_000``...; the first ``n_train`` are training cases):

    * ``"h5"``: ``<out_dir>/<case>/mri_norm2.h5`` (``image`` float32, ``label`` uint8,
      both (X, Y, Z)) and ``train.list`` / ``test.list`` — read with
      :class:`pyseg_noise.data.LAH5Dataset`.
    * ``"nifti"``: nnU-Net layout ``imagesTr/case_000_0000.nii.gz``,
      ``labelsTr/case_000.nii.gz``, ``imagesTs``/``labelsTs`` and a v2
      ``dataset.json`` — read with :class:`pyseg_noise.data.NiftiDataset`.

    Both also get ``synthetic.json`` with the generation settings.

    Args:
        out_dir: output folder (created).
        n_train, n_test: number of cases per split (n_train >= 1, n_test >= 0).
        shape: (X, Y, Z) of every volume, sides >= 16.
        layout: ``"h5"`` or ``"nifti"``.
        seed: non-negative int; same seed, same files.
        spacing: voxel size written to the NIfTI headers.
        foreground_fraction, noise_sigma, bias_strength, num_classes: see
            :func:`make_synthetic_case` (``num_classes=3``: chamber + wall ring; recorded in
            ``synthetic.json`` and, NIfTI, ``dataset.json``; the binary files are those of
            earlier versions).
        overwrite: replace an existing dataset in ``out_dir`` (else FileExistsError).

    Returns:
        ``{"root", "layout", "train", "test", "foreground_fraction": {case: fraction}}``
        (the share of voxels with a label > 0).

    Raises:
        ValueError: bad counts, layout, seed, shape or num_classes.
        FileExistsError: ``out_dir`` already holds a dataset and ``overwrite=False``.

    Example:
        >>> info = generate_synthetic_dataset("/tmp/synla", n_train=8, n_test=2, seed=0)  # doctest: +SKIP
        >>> LAH5Dataset(info["root"], split="train", seed=0)[0]["image"].shape              # doctest: +SKIP
        torch.Size([1, 112, 112, 80])
    """
    for name, value, low in (("n_train", n_train, 1), ("n_test", n_test, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if layout not in ("h5", "nifti"):
        raise ValueError(f"layout must be 'h5' or 'nifti', got {layout!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(num_classes, bool) or num_classes not in (2, 3):
        raise ValueError(f"num_classes must be 2 or 3, got {num_classes!r}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"shape must be three sizes >= 16 (X, Y, Z), got {shape!r}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive numbers, got {spacing!r}")

    root = Path(out_dir)
    markers = [root / "train.list", root / "imagesTr", root / "labelsTr", root / "synthetic.json"]
    if any(m.exists() for m in markers):
        if not overwrite:
            raise FileExistsError(f"{root} already holds a dataset; pass overwrite=True to replace it")
        for m in markers + [root / "test.list", root / "imagesTs", root / "labelsTs", root / "dataset.json"]:
            if m.is_dir():
                shutil.rmtree(m)
            elif m.exists():
                m.unlink()
        for case_dir in root.glob("case_*"):
            if case_dir.is_dir():
                shutil.rmtree(case_dir)
    root.mkdir(parents=True, exist_ok=True)

    n_total = int(n_train) + int(n_test)
    cases = [f"case_{i:03d}" for i in range(n_total)]
    fractions: Dict[str, float] = {}
    if layout == "nifti":
        from .volume_io import write_nifti

        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (root / sub).mkdir(exist_ok=True)
    for i, case in enumerate(cases):
        rng = np.random.default_rng([int(seed), i])
        image, label = make_synthetic_case(
            shape, rng, foreground_fraction=foreground_fraction, noise_sigma=noise_sigma, bias_strength=bias_strength,
            num_classes=num_classes,
        )
        fractions[case] = float((label > 0).mean())
        if layout == "h5":
            _write_h5(root / case / "mri_norm2.h5", image, label)
        else:
            tag = "Tr" if i < n_train else "Ts"
            write_nifti(root / f"images{tag}" / f"{case}_0000.nii.gz", image, spacing)
            write_nifti(root / f"labels{tag}" / f"{case}.nii.gz", label, spacing)

    train, test = cases[:n_train], cases[n_train:]
    settings = {
        "generator": "pyseg_noise.data.generate_synthetic_dataset",
        "seed": int(seed),
        "shape": list(shape),
        "spacing": list(spacing),
        "n_train": int(n_train),
        "n_test": int(n_test),
        "foreground_fraction": list(foreground_fraction),
        "noise_sigma": float(noise_sigma),
        "bias_strength": float(bias_strength),
    }
    if num_classes != 2:  # (absent for binary sets: their synthetic.json stays what it was)
        settings["num_classes"] = int(num_classes)
    if layout == "h5":
        (root / "train.list").write_text("".join(c + "\n" for c in train))
        (root / "test.list").write_text("".join(c + "\n" for c in test))
    else:
        dataset_json = {
            "name": "SyntheticLA",
            "description": "Synthetic left-atrium-like MR volumes from pyseg_noise (no real data)",
            "channel_names": {"0": "MRI"},
            "labels": ({"background": 0, "left_atrium": 1} if num_classes == 2
                       else {"background": 0, "blood_pool": 1, "myocardium": 2}),
            "numTraining": int(n_train),
            "file_ending": ".nii.gz",
        }
        (root / "dataset.json").write_text(json.dumps(dataset_json, indent=1))
    (root / "synthetic.json").write_text(json.dumps(settings, indent=1))
    return {"root": str(root), "layout": layout, "train": train, "test": test, "foreground_fraction": fractions}
