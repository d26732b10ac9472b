"""Reading and writing single volumes (NIfTI, HDF5) with errors that name the file.

Every reader raises ``FileNotFoundError`` with the path when a file is missing
and ``ValueError`` with the path when it cannot be parsed or holds something
other than what was asked for, so a bad case in a 100-case folder is found at
once. Arrays come back in the file's axis order, ``(X, Y, Z)`` for both formats.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

PathLike = Union[str, Path]

__all__ = [
    "require_file",
    "read_nifti",
    "write_nifti",
    "read_h5",
    "read_npy",
    "read_json",
    "check_label",
    "read_volume",
]


def require_file(path: PathLike, what: str) -> Path:
    """``Path(path)`` if it is an existing file.

    Raises:
        FileNotFoundError: naming ``what`` and the path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _squeeze_to_3d(array: np.ndarray, path: Path) -> np.ndarray:
    # NIfTI writers often add trailing singleton time/channel axes: (X, Y, Z, 1).
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise ValueError(f"{path} holds an array of shape {tuple(array.shape)}; expected a 3-D volume (X, Y, Z)")
    return array


def read_nifti(path: PathLike, *, what: str = "NIfTI file", as_float: bool = False) -> Tuple[np.ndarray, Tuple[float, ...]]:
    """Read a 3-D NIfTI volume with nibabel.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        what: how to call the file in error messages (e.g. "label file").
        as_float: return float32 with the header's scaling applied (images);
            otherwise the stored values (labels).

    Returns:
        (array[X, Y, Z], voxel spacing (sx, sy, sz) from the header).

    Raises:
        FileNotFoundError: missing file.
        ValueError: not a readable NIfTI file, or not 3-D.
    """
    import nibabel as nib

    path = require_file(path, what)
    try:
        img = nib.load(str(path))
        if as_float:
            data = np.asarray(img.get_fdata(dtype=np.float32))
        else:
            data = np.asarray(img.dataobj)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    except Exception as exc:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, ...)
        raise ValueError(f"cannot read {what} {path} as NIfTI: {type(exc).__name__}: {exc}") from exc
    return _squeeze_to_3d(data, path), zooms


def write_nifti(path: PathLike, array: np.ndarray, spacing=(1.0, 1.0, 1.0), template=None) -> None:
    """Write ``array`` as NIfTI; with ``template`` (a nibabel image) its affine and header are kept."""
    import nibabel as nib

    if template is not None:
        header = template.header.copy()
        header.set_data_dtype(array.dtype)
        img = nib.Nifti1Image(array, template.affine, header)
    else:
        img = nib.Nifti1Image(array, np.diag([*map(float, spacing), 1.0]))
        img.header.set_zooms(tuple(float(s) for s in spacing))
    nib.save(img, str(path))


def read_h5(path: PathLike, key: str, *, what: str = "HDF5 file") -> np.ndarray:
    """Read dataset ``key`` of an HDF5 file with h5py.

    Raises:
        FileNotFoundError: missing file.
        ValueError: not a readable HDF5 file, or ``key`` missing (the message lists the keys present).
    """
    import h5py

    path = require_file(path, what)
    try:
        f = h5py.File(path, "r")
    except Exception as exc:  # OSError for truncated / non-HDF5 files
        raise ValueError(f"cannot read {what} {path} as HDF5: {exc}") from exc
    with f:
        if key not in f:
            raise ValueError(f"{what} {path} has no dataset {key!r}; it holds {sorted(f.keys())}")
        try:
            return np.asarray(f[key][()])
        except Exception as exc:
            raise ValueError(f"cannot read dataset {key!r} of {what} {path}: {exc}") from exc


def read_npy(path: PathLike, *, what: str = ".npy file") -> np.ndarray:
    """Read a ``.npy`` array (never a pickled object).

    Raises:
        FileNotFoundError: missing file.
        ValueError: truncated, corrupt or pickled content, naming the path.
    """
    path = require_file(path, what)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # numpy raises these for truncated or foreign files
        raise ValueError(f"cannot read {what} {path} as .npy: {type(exc).__name__}: {exc}") from exc


def read_json(path: PathLike, *, what: str = "JSON file") -> Dict[str, Any]:
    """Parse a JSON file. Raises FileNotFoundError / ValueError naming the path."""
    path = require_file(path, what)
    try:
        with open(path) as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot parse {what} {path}: {exc}") from exc


def check_label(label: np.ndarray, path: PathLike, num_classes: Optional[int] = None) -> np.ndarray:
    """``label`` as int64 after checking it holds class indices.

    Args:
        label (ndarray[*S]): any numeric dtype; floats must be whole numbers.
        path: the file it came from (for messages).
        num_classes: if given, every value must be < ``num_classes``.

    Raises:
        ValueError: NaN/non-integer values, negative values, or values >= ``num_classes``.
    """
    if label.dtype == np.bool_:
        label = label.astype(np.uint8)
    if label.dtype.kind not in "biuf":
        raise ValueError(f"label file {path} has dtype {label.dtype}; expected integer class indices")
    if label.size == 0:
        raise ValueError(f"label file {path} is empty (shape {tuple(label.shape)})")
    if label.dtype.kind == "f":
        if not np.all(np.isfinite(label)):
            raise ValueError(f"label file {path} contains NaN or inf; expected integer class indices")
        if not np.array_equal(label, np.round(label)):
            raise ValueError(f"label file {path} contains non-integer values; expected integer class indices")
    lo, hi = label.min(), label.max()
    if lo < 0:
        raise ValueError(f"label file {path} contains the negative value {lo:g}; labels must be >= 0")
    if num_classes is not None and hi >= num_classes:
        raise ValueError(
            f"label file {path} contains the value {hi:g} but {num_classes} classes are declared "
            f"(labels must lie in [0, {num_classes}))"
        )
    return label.astype(np.int64, copy=False)


def read_volume(path: PathLike, *, key: str = "label", what: str = "label file", as_float: bool = False) -> np.ndarray:
    """Read a volume from ``.h5``/``.hdf5`` (dataset ``key``) or ``.nii``/``.nii.gz`` (by extension)."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".h5", ".hdf5")):
        data = read_h5(path, key, what=what)
        if data.ndim != 3:
            raise ValueError(f"{what} {path} dataset {key!r} has shape {tuple(data.shape)}; expected (X, Y, Z)")
        return data.astype(np.float32) if as_float else data
    if name.endswith((".nii", ".nii.gz")):
        return read_nifti(path, what=what, as_float=as_float)[0]
    raise ValueError(f"{what} {path}: unknown format; expected .h5, .hdf5, .nii or .nii.gz")

