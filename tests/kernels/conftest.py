"""Without a GPU, run Triton kernels through its interpreter (must be set before kernels are defined)."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
