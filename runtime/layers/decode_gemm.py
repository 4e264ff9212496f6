"""Decode-sized GEMMs through the Triton kernels of kernels/skinny_gemm.py (or, by choice,
kernels/streamk_gemm.py) where they beat cuBLAS.

    decode_linear(x, w, out_dtype=None, owner=None) -> y, or None when cuBLAS should run (shape,
        batch); owner: the layer, which keeps the split-K / stream-K ticket counters and says
        which kernel (its `decode_kernel`: "skinny", the default, or "streamk")
    decode_silu_mul(x, w_gate_up, owner=None) -> silu(gate) * up in one kernel, or None
    set_decode_gemm(model, on, kernel="skinny"): flag the model's bias-free linears, MLPs and LM head
    choose_decode_gemm(model, time_graph) -> DecodeGemmChoice: a decode graph timed with the flag
        off and on (time_graph() -> seconds per replay, captured as the flag stands); the flag is
        left as the faster one, so a model or card where cuBLAS wins keeps cuBLAS

Only single-rank bf16/fp16 models on CUDA are flagged (model_runner.py decides); layers keep the
flag as a plain attribute (`decode_gemm`) and fall back to F.linear for any other batch.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn


@functools.lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (stream-K runs one program per SM); 8 elsewhere
    (the Triton interpreter on CPU, in tests)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8


def _launch(x: torch.Tensor, n: int, k: int, silu_mul: bool = False, kernel: str = "skinny"):
    """The Triton launch for x [M, k] (rows contiguous) and n outputs, or None: stream-K's where
    kernel is "streamk" and it has one, else skinny_gemm's."""
    if x.dim() != 2 or x.stride(1) != 1:
        return None
    from sgl_lang.kernels.skinny_gemm import decode_config  # (triton: CUDA only)
    if kernel == "streamk":
        from sgl_lang.kernels.streamk_gemm import streamk_config
        cfg = streamk_config(x.shape[0], n, k, silu_mul, _num_sms(x.device))
        if cfg is not None:
            return cfg
    return decode_config(x.shape[0], n, k, silu_mul)


def _tickets(owner: Optional[nn.Module], n: int, device: torch.device) -> Optional[torch.Tensor]:
    """The layer's own ticket counters (split-K and stream-K), made once (the graph runner's
    eager warm-up comes first), reset by the kernels after each call; None without an owner."""
    if owner is None:
        return None
    tickets = getattr(owner, "_gemm_tickets", None)
    if tickets is None or tickets.device != device:
        tickets = torch.zeros(max(1, n // 16), dtype=torch.int32, device=device)
        owner._gemm_tickets = tickets
    return tickets


def _run(x: torch.Tensor, w: torch.Tensor, cfg, silu_mul: bool, out_dtype: Optional[torch.dtype],
         owner: Optional[nn.Module]) -> torch.Tensor:
    from sgl_lang.kernels.skinny_gemm import GemmConfig, skinny_linear
    if isinstance(cfg, GemmConfig):
        tickets = _tickets(owner, w.shape[0], x.device) if cfg.split > 1 else None
        return skinny_linear(x, w, cfg, silu_mul=silu_mul, out_dtype=out_dtype, tickets=tickets)
    from sgl_lang.kernels.streamk_gemm import streamk_linear
    return streamk_linear(x, w, cfg, silu_mul=silu_mul, out_dtype=out_dtype,
                          tickets=_tickets(owner, w.shape[0], x.device))


def decode_linear(x: torch.Tensor, w: torch.Tensor, out_dtype: Optional[torch.dtype] = None,
                  owner: Optional[nn.Module] = None) -> Optional[torch.Tensor]:
    cfg = _launch(x, w.shape[0], w.shape[1], kernel=getattr(owner, "decode_kernel", "skinny"))
    return None if cfg is None else _run(x, w, cfg, False, out_dtype, owner)


def decode_silu_mul(x: torch.Tensor, w: torch.Tensor, owner: Optional[nn.Module] = None) -> Optional[torch.Tensor]:
    cfg = _launch(x, w.shape[0] // 2, w.shape[1], silu_mul=True, kernel=getattr(owner, "decode_kernel", "skinny"))
    return None if cfg is None else _run(x, w, cfg, True, None, owner)


def set_decode_gemm(model: nn.Module, on: bool, kernel: str = "skinny") -> int:
    """Set the flag (and the kernel, "skinny" or "streamk") on every module that has one (linears
    without bias, MLPs, the LM head); -> how many modules it was set on."""
    n = 0
    for mod in model.modules():
        if hasattr(mod, "decode_gemm") and getattr(mod, "bias", None) is None:
            mod.decode_gemm = on
            mod.decode_kernel = kernel
            n += 1
    return n


@dataclass(frozen=True)
class DecodeGemmChoice:
    on: bool  # the Triton kernel is used for decode batches it has a config for
    cublas_s: float  # seconds per replay of the timed decode graph, flag off
    triton_s: float  # and on


def choose_decode_gemm(model: nn.Module, time_graph: Callable[[], float], min_gain: float = 0.02
                       ) -> DecodeGemmChoice:
    set_decode_gemm(model, False)
    off = time_graph()
    set_decode_gemm(model, True)
    on = time_graph()
    keep = on < (1 - min_gain) * off
    set_decode_gemm(model, keep)
    return DecodeGemmChoice(keep, off, on)
