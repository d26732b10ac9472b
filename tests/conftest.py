import os

import torch

# Triton's interpreter must be switched on before triton is first imported:
# without a GPU it is the only way the Triton kernels can run (and be checked).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
