"""apply_token_bitmask_inplace: mask logits with a packed int32 token bitmask.

Semantics (bit set = token allowed):
    for b in range(bs), j in range(vocab):
        if (bitmask[b, j // 32] >> (j % 32)) & 1 == 0:
            logits[b, j] = -inf
Tokens beyond 32 * bitmask.shape[1] are masked too. Triton on CUDA, the torch reference elsewhere.
"""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs serve through the reference
    triton = None


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[bs, W] int32 -> [bs, vocab_size] bool (True = allowed)."""
    bits = torch.arange(32, device=bitmask.device, dtype=torch.int32)  # [32]
    allowed = ((bitmask.unsqueeze(-1) >> bits) & 1).bool()  # [bs, W, 32]
    allowed = allowed.reshape(bitmask.shape[0], -1)  # [bs, 32 * W]
    if allowed.shape[1] < vocab_size:
        pad = allowed.new_zeros(bitmask.shape[0], vocab_size - allowed.shape[1])
        allowed = torch.cat([allowed, pad], dim=1)
    return allowed[:, :vocab_size]


def apply_token_bitmask_inplace_ref(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    allowed = unpack_bitmask(bitmask, logits.shape[1])  # [bs, vocab]
    logits.masked_fill_(~allowed, float("-inf"))


if triton is not None:
    @triton.jit
    def _apply_bitmask_kernel(logits_ptr, stride_l, mask_ptr, stride_m, V, W, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK] token ids
        in_vocab = offs < V
        words = tl.load(mask_ptr + row * stride_m + offs // 32, mask=in_vocab & (offs // 32 < W), other=0)
        allowed = ((words >> (offs % 32)) & 1) != 0
        tl.store(logits_ptr + row * stride_l + offs, float("-inf"), mask=in_vocab & ~allowed)


def apply_token_bitmask_inplace(logits: torch.Tensor, bitmask: torch.Tensor,
                                use_triton: bool | None = None) -> None:
    """logits [bs, vocab] float (in place), bitmask [bs, ceil(vocab/32)] int32, same device.
    use_triton: None = Triton on CUDA, reference elsewhere; True forces Triton (tests run it
    on CPU under TRITON_INTERPRET=1)."""
    if logits.dim() != 2:
        raise ValueError(f"logits: expected 2 dims [bs, vocab], got shape {list(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits: expected a floating dtype, got {logits.dtype}")
    width = (logits.shape[1] + 31) // 32
    if bitmask.dtype != torch.int32:
        raise TypeError(f"bitmask: expected dtype torch.int32, got {bitmask.dtype}")
    if bitmask.shape != (logits.shape[0], width):
        raise ValueError(f"bitmask: expected shape {[logits.shape[0], width]}, got {list(bitmask.shape)}")
    if bitmask.device != logits.device:
        raise ValueError(f"bitmask: expected device {logits.device}, got {bitmask.device}")
    if logits.stride(1) != 1 or bitmask.stride(1) != 1:
        raise ValueError("logits and bitmask: expected contiguous rows (stride 1 along vocab)")
    if use_triton is None:
        use_triton = logits.is_cuda and triton is not None
    if not use_triton:
        apply_token_bitmask_inplace_ref(logits, bitmask)
        return
    if triton is None:
        raise RuntimeError("apply_token_bitmask_inplace: use_triton=True but triton is not installed")
    bs, vocab = logits.shape
    block = 4096
    _apply_bitmask_kernel[(bs, triton.cdiv(vocab, block))](
        logits, logits.stride(0), bitmask, bitmask.stride(0), vocab, width, BLOCK=block)
