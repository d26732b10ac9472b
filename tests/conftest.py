import os

import pytest
import torch

# Triton's interpreter must be switched on before triton is first imported:
# without a GPU it is the only way the Triton kernels can run (and be checked).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``).

    Training tests compare runs bitwise or to rounding; one thread makes the float
    sums' order fixed and keeps them fast on a busy 2-core machine.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
