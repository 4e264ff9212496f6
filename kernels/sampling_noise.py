"""Counter-based uniforms for the draws, one definition shared by the torch sampler and the
Triton kernel.

A draw takes one uniform per row and round (sampling_chain.py: round 0 is the first inverse-CDF
draw, later rounds redraw after a rejection). The uniform of round n in row i is a hash of
(noise key of row i, n); a row's noise key is two int32 words hashed on the host from (request
seed, request step). Pure 32-bit integer arithmetic, exact on CPU, in torch on CUDA and in
Triton alike:

    h = mix32(mix32(n + key0) ^ key1)                      (uint32, wrapping)
    u = ((h >> 9) + 0.5) / 2**23                           (in (0, 1), exact in float32)
"""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch half serves
    triton = None

_M32 = 0xFFFFFFFF
# key_words' uint64 constants: z = seed * SEED_MUL + step * STEP_MUL + KEY_ADD, then splitmix64's
# finaliser (xor-shift 30, * MIX_MUL[0], xor-shift 27, * MIX_MUL[1], xor-shift 31)
SEED_MUL, STEP_MUL, KEY_ADD = 0x9E3779B97F4A7C15, 0xD1B54A32D192ED03, 0x632BE59BD9B4E019
MIX_MUL = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def as_i32(u: int) -> int:
    """uint32 value -> the int32 with the same bits."""
    return u - (1 << 32) if u >= 1 << 31 else u


def key_words(seed: int, step: int) -> tuple[int, int]:
    """Two int32 words (low, high) from (seed, step) via splitmix64, in Python (host side)."""
    z = (seed * SEED_MUL + step * STEP_MUL + KEY_ADD) % (1 << 64)
    z = ((z ^ (z >> 30)) * MIX_MUL[0]) % (1 << 64)
    z = ((z ^ (z >> 27)) * MIX_MUL[1]) % (1 << 64)
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


def uniform_noise(noise_keys: torch.Tensor, round_: int) -> torch.Tensor:
    """[bs] float32 uniforms in (0, 1) of draw round `round_` for rows keyed by noise_keys
    [bs, 2] int32 (see the module docstring for the formula)."""
    h = noise_keys[:, 0] + round_  # [bs] int32, wrapping
    h = mix32_(h)
    h ^= noise_keys[:, 1]
    h = mix32_(h)
    return ((h >> 9) & 0x7FFFFF).to(torch.float32).add_(0.5).mul_(2.0 ** -23)


if triton is not None:
    @triton.jit
    def _mix32_tl(x):
        """The same avalanche on uint32 tensors (logical shifts, wrapping multiplies)."""
        x = x ^ (x >> 16)
        x = x * 0x7FEB352D
        x = x ^ (x >> 15)
        x = x * 0x846CA68B
        return x ^ (x >> 16)

    @triton.jit
    def uniform_tl(key0, key1, round_):
        """float32 uniform in (0, 1) of draw round `round_`; key0, key1, round_ uint32 scalars."""
        h = _mix32_tl(key0 + round_)
        h = _mix32_tl(h ^ key1)
        return ((h >> 9).to(tl.float32) + 0.5) * (1.0 / 8388608.0)
