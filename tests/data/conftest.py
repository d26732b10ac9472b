"""Small synthetic datasets (both layouts) shared by the data tests."""
import shutil

import pytest

from pyseg_noise.data import generate_synthetic_dataset

SMALL_SHAPE = (24, 20, 16)


@pytest.fixture(scope="session")
def _h5_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("la_h5")
    generate_synthetic_dataset(root, n_train=6, n_test=2, shape=SMALL_SHAPE, layout="h5", seed=5)
    return root


@pytest.fixture(scope="session")
def _nifti_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("nifti")
    generate_synthetic_dataset(root, n_train=6, n_test=2, shape=SMALL_SHAPE, layout="nifti", seed=5)
    return root


@pytest.fixture
def h5_root(_h5_template, tmp_path):
    """A private, writable copy of a 6+2-case LA h5 dataset of shape SMALL_SHAPE."""
    root = tmp_path / "la"
    shutil.copytree(_h5_template, root)
    return root


@pytest.fixture
def nifti_root(_nifti_template, tmp_path):
    """A private, writable copy of a 6+2-case nnU-Net NIfTI dataset of shape SMALL_SHAPE."""
    root = tmp_path / "nifti"
    shutil.copytree(_nifti_template, root)
    return root
