"""The draw of a sampling row: inverse-CDF rounds with rejection, in plain torch.

Shared by the reference of the fused kernel (masked_sampling.masked_sample_ref) and the
runtime's torch sampler, so that both draw what the Triton kernel draws from the same noise
key. Per row, with s the sampling values (x / T, -inf where banned), p ~ exp(s - max s) and
K the tokens the filters keep (an upper set of s: top-k, top-p and min-p all keep s >= some
threshold):

    S_0 = allowed tokens
    for n in 0 .. MAX_ROUNDS - 1:
        c_n = inverse_cdf(p on S_n, u_n)          first j in lane order whose cumulative mass
                                                  exceeds u_n * mass(S_n)
        if c_n in K: return c_n
        S_{n+1} = {j : s_j > s[c_n]}              (K is an upper set and c_n is not in it)
    return inverse_cdf(p on K, u_MAX_ROUNDS)

u_n = sampling_noise.uniform_noise(key, n). Lane order sorts token j by (j % LANES, j // LANES):
the kernel keeps one running mass per lane (LANES lanes stride through the row), picks the lane
from those masses and then the token by re-reading that lane's V / LANES tokens. Every branch
returns an exact draw from p on K (rejection from a superset of K), and an unfiltered row (K = S_0) returns c_0: one pass over
the row in the kernel. A filtered row usually stops at c_0 or c_1, so the kernel needs no sort
and rarely the exact thresholds.
"""
from __future__ import annotations

import torch

from .sampling_noise import uniform_noise

MAX_ROUNDS = 4
LANES = 1024


def _lane_order(t: torch.Tensor) -> torch.Tensor:
    """[bs, V] -> [bs, LANES * ceil(V / LANES)] in lane order, zero-padded."""
    bs, vocab = t.shape
    rows = -(-vocab // LANES)
    if rows == 1:  # one token per lane: lane order is vocabulary order
        return t
    padded = torch.nn.functional.pad(t, (0, rows * LANES - vocab))
    return padded.view(bs, rows, LANES).transpose(1, 2).reshape(bs, rows * LANES)


def inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """[bs] token whose inclusive cumulative weight, in lane order, first exceeds u * total
    (weights [bs, V] float64 >= 0, each row with a positive weight; u [bs] in (0, 1)); clamped
    to the last positive weight against rounding."""
    rows = -(-weights.shape[1] // LANES)
    weights = _lane_order(weights)  # [bs, LANES * rows]
    cum = weights.cumsum(dim=1)
    target = u.to(cum.dtype)[:, None] * cum[:, -1:]  # [bs, 1]
    idx = (cum <= target).sum(dim=1)  # [bs]
    positions = torch.arange(weights.shape[1], device=weights.device)
    last = torch.where(weights > 0, positions, -1).max(dim=1).values  # [bs]
    i = torch.minimum(idx, last)  # position in lane order: lane i // rows, row i % rows
    return (i % rows) * LANES + i // rows


def chain_draw(s: torch.Tensor, kept: torch.Tensor, noise_keys: torch.Tensor,
               filtered: torch.Tensor) -> torch.Tensor:
    """[bs] int64 tokens drawn as the module docstring says. s [bs, V] float32 (-inf = banned;
    every row has an allowed token), kept [bs, V] bool (K, within the allowed tokens),
    noise_keys [bs, 2] int32, filtered [bs] bool (rows whose K may be smaller than S_0; the
    others return c_0). On CPU the rounds stop once every row is done (a free host check);
    elsewhere all rounds run, so there is no device-to-host sync."""
    p = (s - s.max(dim=1, keepdim=True).values).double().exp()  # [bs, V], 0 where banned
    token = inverse_cdf(p, uniform_noise(noise_keys, 0))
    rows = torch.arange(s.shape[0], device=s.device)
    pending = filtered & ~kept[rows, token]  # [bs]: c_n was rejected
    for n in range(1, MAX_ROUNDS + 1):
        if s.device.type == "cpu" and not bool(pending.any()):
            return token
        if n < MAX_ROUNDS:  # c_n on S_n = {s > s[c_{n-1}]}
            support = s > s[rows, token][:, None]
        else:  # the last draw, on K itself
            support = kept
        support = support & pending[:, None] | ~pending[:, None]  # done rows: anything drawable
        nxt = inverse_cdf(torch.where(support, p, 0.0), uniform_noise(noise_keys, n))
        token = torch.where(pending, nxt, token)
        pending = pending & ~kept[rows, token] if n < MAX_ROUNDS else torch.zeros_like(pending)
    return token
