"""Programmatic dependent launch (PDL, Hopper and later) for the kernels of a decode step.

A decode step is a chain of short kernels, each waiting for the one before. Launched with PDL,
a kernel's programs may be resident and start while its predecessor is still finishing; the
kernels here call `gdc_wait` first, which blocks until the predecessor has completed and its
writes are visible (so what is saved is the launch and scheduling gap between kernels). Because every PDL-launched kernel
waits before it can complete, the chain stays ordered transitively.

    with pdl_launches():         # the thread's kernel launches in this block use PDL
        ...                      # (the graph runner wraps the capture of decode graphs)
    pdl_on() -> bool             # inside such a block, on a device that supports it
    launch_options() -> dict     # extra keyword arguments for a Triton launch: {"launch_pdl": True} or {}

In a kernel, with a `PDL: tl.constexpr` parameter set to pdl_on():
    wait_for_inputs(PDL)         # before the first read of anything the previous kernels wrote
"""
from __future__ import annotations

import contextlib
import threading

import triton
import triton.language as tl

_state = threading.local()


@contextlib.contextmanager
def pdl_launches(on: bool = True):
    """Launches from this thread inside the block use PDL (when on; nested blocks restore)."""
    before = getattr(_state, "on", False)
    _state.on = on
    try:
        yield
    finally:
        _state.on = before


def pdl_on() -> bool:
    return getattr(_state, "on", False)


def launch_options() -> dict:
    return {"launch_pdl": True} if pdl_on() else {}


def device_supports_pdl(device) -> bool:
    """PDL needs compute capability 9.0 or later."""
    import torch
    return torch.device(device).type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9


@triton.jit
def wait_for_inputs(PDL: tl.constexpr):
    """With PDL: wait until the previous kernel has completed, then let the next kernel's programs
    start (they in turn wait before reading what this one writes). Without: nothing."""
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
