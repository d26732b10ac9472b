"""Session-wide tiny synthetic datasets for the training tests (copied per test where a test writes)."""
import pytest

from .tiny_runs import copy_dataset, make_tiny_dataset


@pytest.fixture(scope="session")
def _tiny_h5(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny_h5") / "data")


@pytest.fixture(scope="session")
def _tiny_nifti(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny_nifti") / "data", layout="nifti")


@pytest.fixture
def tiny_h5(_tiny_h5):
    """A shared read-only tiny LA-h5 dataset (4 train + 2 test, 32^3, noisy labels 'noisy')."""
    return _tiny_h5


@pytest.fixture
def tiny_nifti(_tiny_nifti):
    """A shared read-only tiny nnU-Net dataset."""
    return _tiny_nifti


@pytest.fixture
def tiny_h5_copy(_tiny_h5, tmp_path):
    """A private writable copy of the tiny LA-h5 dataset."""
    return copy_dataset(_tiny_h5, tmp_path / "data")
