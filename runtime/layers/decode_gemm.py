"""Decode-sized GEMMs through the Triton kernel of kernels/skinny_gemm.py where it beats cuBLAS.

    decode_linear(x, w, out_dtype=None, owner=None) -> y, or None when cuBLAS should run (shape,
        batch); owner: the layer, which keeps the split-K ticket counters
    decode_silu_mul(x, w_gate_up) -> silu(gate) * up in one kernel, or None
    set_decode_gemm(model, on): flag the model's bias-free linears, MLPs and LM head
    choose_decode_gemm(model, time_graph) -> DecodeGemmChoice: a decode graph timed with the flag
        off and on (time_graph() -> seconds per replay, captured as the flag stands); the flag is
        left as the faster one, so a model or card where cuBLAS wins keeps cuBLAS

Only single-rank bf16/fp16 models on CUDA are flagged (model_runner.py decides); layers keep the
flag as a plain attribute (`decode_gemm`) and fall back to F.linear for any other batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn


def _launch(x: torch.Tensor, n: int, k: int, silu_mul: bool = False):
    """kernels/skinny_gemm.py's launch for x [M, k] (rows contiguous) and n outputs, or None."""
    if x.dim() != 2 or x.stride(1) != 1:
        return None
    from sgl_lang.kernels.skinny_gemm import decode_config  # (triton: CUDA only)
    return decode_config(x.shape[0], n, k, silu_mul)


def decode_linear(x: torch.Tensor, w: torch.Tensor, out_dtype: Optional[torch.dtype] = None,
                  owner: Optional[nn.Module] = None) -> Optional[torch.Tensor]:
    cfg = _launch(x, w.shape[0], w.shape[1])
    if cfg is None:
        return None
    from sgl_lang.kernels.skinny_gemm import skinny_linear
    tickets = None
    if cfg.split > 1 and owner is not None:  # the layer's own split-K counters, made once (the
        # graph runner's eager warm-up comes first), reset by the kernel after each call
        tickets = getattr(owner, "_gemm_tickets", None)
        if tickets is None or tickets.device != x.device:
            tickets = torch.zeros(max(1, w.shape[0] // 16), dtype=torch.int32, device=x.device)
            owner._gemm_tickets = tickets
    return skinny_linear(x, w, cfg, out_dtype=out_dtype, tickets=tickets)


def decode_silu_mul(x: torch.Tensor, w: torch.Tensor) -> Optional[torch.Tensor]:
    cfg = _launch(x, w.shape[0] // 2, w.shape[1], silu_mul=True)
    if cfg is None:
        return None
    from sgl_lang.kernels.skinny_gemm import skinny_linear
    return skinny_linear(x, w, cfg, silu_mul=True)


def set_decode_gemm(model: nn.Module, on: bool) -> int:
    """Set the flag on every module that has one (linears without bias, MLPs, the LM head);
    -> how many modules it was set on."""
    n = 0
    for mod in model.modules():
        if hasattr(mod, "decode_gemm") and getattr(mod, "bias", None) is None:
            mod.decode_gemm = on
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
