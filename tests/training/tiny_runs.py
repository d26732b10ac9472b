"""Tiny synthetic datasets and configs shared by the training and command-line tests."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from pyseg_noise.data import corrupt_dataset, generate_synthetic_dataset
from pyseg_noise.training import load_config

SHAPE = (32, 32, 32)
CROP = (32, 32, 16)
REPO = Path(__file__).resolve().parents[2]


def make_tiny_dataset(root: Path, layout: str = "h5") -> Path:
    """4 training + 2 test volumes of 32^3 with noisy labels (suffix ``noisy``, half the cases)."""
    generate_synthetic_dataset(root, n_train=4, n_test=2, shape=SHAPE, layout=layout, seed=3)
    corrupt_dataset(root, 0.5, seed=0, radius_range=(1, 3), suffix="noisy")
    return root


def copy_dataset(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def tiny_config(root, method: str = "vnet", *, method_options=None, **top):
    """A run of a few iterations on the tiny set: V-Net with 2 filters, batch 2, deterministic, no plots."""
    values = dict(method=method, iterations=4, batch_size=2, checkpoint_every=2, log_every=1, progress=False,
                  plots=False, deterministic=True, val_stride=[16, 16, 16],
                  data={"root": str(root), "noisy_labels": "noisy", "crop_size": list(CROP), "cache": True},
                  model={"n_filters": 2})
    if method_options:
        values["method_options"] = method_options
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(values.get(k), dict):
            values[k] = {**values[k], **v}
        else:
            values[k] = v
    return load_config(None, values)


def subprocess_env() -> dict:
    """Environment for child Python processes: one thread each, the repository importable."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("WORLD_SIZE", None)
    return env


PYTHON = sys.executable
