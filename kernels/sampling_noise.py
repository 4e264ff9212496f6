"""Counter-based Gumbel noise, one definition shared by the torch sampler and the Triton kernel.

The noise of token t in row i is a hash of (noise key of row i, t); a row's noise key is two
int32 words hashed on the host from (request seed, request step). Pure 32-bit integer
arithmetic, exact on CPU, in torch on CUDA and in Triton alike:

    h = mix32(mix32(t + key0) ^ key1)                      (uint32, wrapping)
    u = ((h >> 9) + 0.5) / 2**23                           (in (0, 1), exact in float32)
    g = -log(-log(u))                                      (standard Gumbel)
"""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch half serves
    triton = None

_M32 = 0xFFFFFFFF


def as_i32(u: int) -> int:
    """uint32 value -> the int32 with the same bits."""
    return u - (1 << 32) if u >= 1 << 31 else u


def key_words(seed: int, step: int) -> tuple[int, int]:
    """Two int32 words from (seed, step) via splitmix64, in Python (host side)."""
    z = (seed * 0x9E3779B97F4A7C15 + step * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) % (1 << 64)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % (1 << 64)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % (1 << 64)
    z ^= z >> 31
    return as_i32(z & _M32), as_i32(z >> 32)


def mix32_ref(x: int) -> int:
    """Python-int reference of mix32 on one uint32 value."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    x ^= x >> 16
    return x


def mix32_(x: torch.Tensor) -> torch.Tensor:
    """lowbias32-style avalanche on int32 tensors (in place), uint32 semantics."""
    x ^= (x >> 16) & 0xFFFF
    x.mul_(0x7FEB352D)
    x ^= (x >> 15) & 0x1FFFF
    x.mul_(as_i32(0x846CA68B))
    x ^= (x >> 16) & 0xFFFF
    return x


def gumbel_noise(noise_keys: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise [bs, n] f32 for rows keyed by noise_keys [bs, 2] int32 at
    token_ids [n] int32 (see the module docstring for the formula)."""
    h = token_ids[None, :] + noise_keys[:, :1]  # [bs, n] int32
    h = mix32_(h)
    h ^= noise_keys[:, 1:]
    h = mix32_(h)
    u = ((h >> 9) & 0x7FFFFF).to(torch.float32).add_(0.5).mul_(2.0 ** -23)  # (0, 1), exact
    return u.log_().neg_().log_().neg_()


if triton is not None:
    @triton.jit
    def _mix32_tl(x):
        """The same avalanche on uint32 tensors (logical shifts, wrapping multiplies)."""
        x = x ^ (x >> 16)
        x = x * 0x7FEB352D
        x = x ^ (x >> 15)
        x = x * 0x846CA68B
        return x ^ (x >> 16)

    from triton.language.extra import libdevice

    @triton.jit
    def gumbel_tl(offs, key0, key1, FAST_LOG: tl.constexpr):
        """[BLOCK] float32 Gumbel noise at token ids offs [BLOCK] int32; key0/key1 uint32 scalars.
        The inner log is exact (-log(u) for u near 1 needs it); FAST_LOG takes the outer one
        from the hardware approximation (absolute error ~1e-7 on g; GPU only)."""
        h = _mix32_tl(offs.to(tl.uint32) + key0)
        h = _mix32_tl(h ^ key1)
        u = ((h >> 9).to(tl.float32) + 0.5) * (1.0 / 8388608.0)
        e = -tl.log(u)  # Exp(1) variate
        if FAST_LOG:
            return -libdevice.fast_logf(e)
        return -tl.log(e)
