"""``pyseg-noise predict``: label maps for a folder of volumes with a trained run.

Input is either a dataset folder (LA ``.h5`` or nnU-Net layout; one split is
read) or a plain folder of image files (``*.nii.gz``, ``*.nii``, ``*.h5`` with an
``image`` dataset, ``*.npy``). Images are z-scored as in training, segmented by
sliding windows of the training crop (LA convention), and written one file per
case: NIfTI (keeping the source image's affine and header when it was NIfTI),
``.h5`` (dataset ``label``, uint8) or ``.npy``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from pyseg_noise.data import detect_layout, open_dataset, zscore
from pyseg_noise.data.nifti import check_every_image_labelled, split_dirs
from pyseg_noise.data.volume_io import read_npy, read_volume, write_nifti
from pyseg_noise.inference import sliding_window_inference

from .config import ConfigError

__all__ = ["predict_folder", "FORMATS", "IMAGE_ENDINGS", "iter_volumes"]

FORMATS = {"nifti": ".nii.gz", "h5": ".h5", "npy": ".npy"}
IMAGE_ENDINGS = (".nii.gz", ".nii", ".h5", ".npy")
PathLike = Union[str, Path]


def _case_name(path: Path) -> Optional[str]:
    for ending in IMAGE_ENDINGS:
        if path.name.endswith(ending):
            name = path.name[: -len(ending)]
            # nnU-Net image files carry a channel suffix: CASE_0000
            return name[:-5] if len(name) > 5 and name[-5] == "_" and name[-4:].isdigit() else name
    return None


def iter_volumes(source: PathLike, split: str = "test") -> Iterator[Tuple[str, np.ndarray, Optional[Path]]]:
    """``(case, z-scored image ndarray[C, X, Y, Z], source NIfTI file or None)`` of every volume in ``source``.

    Raises:
        FileNotFoundError: ``source`` missing, or an image of a NIfTI dataset folder has no label.
        ConfigError: no volume found.
        ValueError: an unreadable file (named).
    """
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"input folder not found: {source}")
    try:
        layout = detect_layout(source)
    except ValueError:
        layout = None
    if layout is not None:
        if layout == "nifti":  # the dataset lists cases by label: an unlabelled image would be skipped
            try:
                check_every_image_labelled(source, split)
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"{exc}; to segment images without labels pass their folder "
                                        f"(--input {source / split_dirs(split)[0]})") from exc
        ds = open_dataset(source, split, layout=layout, crop_size=None, augment=False)
        for i, case in enumerate(ds.cases):
            template = ds.image_paths(case)[0] if hasattr(ds, "image_paths") else None
            yield case, ds[i]["image"].numpy(), template
        return
    files = sorted(p for p in source.iterdir() if p.is_file() and _case_name(p))
    if not files:
        raise ConfigError(f"no volume in {source}: expected a dataset folder or files ending in "
                          f"{', '.join(IMAGE_ENDINGS)}")
    for path in files:
        if path.name.endswith(".npy"):
            image = read_npy(path, what="image file")
        else:
            image = read_volume(path, key="image", what="image file", as_float=True)
        image = np.asarray(image, dtype=np.float32)
        if image.ndim == 3:
            image = image[None]
        if image.ndim != 4:
            raise ConfigError(f"image file {path} has shape {image.shape}; expected (X, Y, Z) or (C, X, Y, Z)")
        nifti = path if path.name.endswith((".nii", ".nii.gz")) else None
        yield _case_name(path), zscore(image), nifti


def _write(label: np.ndarray, path: Path, fmt: str, template: Optional[Path]) -> None:
    if fmt == "nifti":
        import nibabel as nib  # deferred, as h5py below: ~0.2 s to import, and one format is written

        write_nifti(path, label, template=nib.load(str(template)) if template is not None else None)
    elif fmt == "h5":
        import h5py

        with h5py.File(path, "w") as f:
            f.create_dataset("label", data=label, compression="gzip")
    else:
        np.save(path, label)


@torch.no_grad()
def predict_folder(method, source: PathLike, out_dir: PathLike, *, split: str = "test", fmt: str = "nifti",
                   stride: Optional[Sequence[int]] = None, batch_size: int = 1,
                   progress: bool = False) -> List[Dict[str, str]]:
    """Segment every volume of ``source`` with ``method`` and write the label maps to ``out_dir``.

    Args:
        method: a trained method (:func:`pyseg_noise.training.load_trained`).
        source: dataset folder or folder of image files.
        out_dir: output folder (created).
        split: the split read from a dataset folder.
        fmt: ``"nifti"``, ``"h5"`` or ``"npy"``.
        stride: sliding-window stride (default the run's ``val_stride``).
        batch_size: windows per forward pass.

    Returns:
        ``[{"case", "file"}]``.

    Raises:
        ConfigError: unknown format, or an image whose channel count differs from the model's.
        FileNotFoundError: missing input.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    cfg = method.config
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    method.eval()
    volumes = iter_volumes(source, split)
    if progress:
        volumes = tqdm(volumes, desc="predict", unit="case")
    for case, image, template in volumes:
        if image.shape[0] != cfg.data.in_channels:
            raise ConfigError(f"case {case} has {image.shape[0]} channels but the model expects "
                              f"{cfg.data.in_channels}")
        x = torch.from_numpy(image)[None].to(method.device)
        probs = sliding_window_inference(x, method.predict, patch_size=tuple(cfg.data.crop_size),
                                         stride=tuple(stride or cfg.val_stride), n_classes=cfg.data.num_classes,
                                         batch_size=batch_size, output="probs")
        label = probs.argmax(1)[0].cpu().numpy()
        label = label.astype(np.uint8 if cfg.data.num_classes <= 256 else np.int32)
        path = out / f"{case}{FORMATS[fmt]}"
        _write(label, path, fmt, template)
        written.append({"case": case, "file": str(path)})
    return written
