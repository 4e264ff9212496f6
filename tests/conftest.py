"""Loaded before every other conftest and test module: on a machine without a GPU, Triton kernels
run through its interpreter, which must be chosen before any kernel is defined (some runtime
modules import kernels at import time, and Triton reads the mode when a kernel is decorated)."""
import os

try:
    import torch
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # the frontend-only install has no torch (and no kernels to run)
    pass
