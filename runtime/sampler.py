"""The sampler: next tokens from logits, as pure tensor functions with no device-to-host sync
(the one host check, in _top_p_threshold, runs only on CPU tensors where it costs nothing).

    logits [bs, V] (after penalties, see penalties.py)
      -> apply_token_bitmask (grammar rows; masked tokens get -inf)
      -> logprobs: log_softmax of these logits (temperature 1, before top-k/top-p/min-p)
      -> greedy rows: argmax
      -> sampling rows: x = logits * (1/T); drop tokens below the top-k, top-p and min-p thresholds;
                        inverse-CDF draws on softmax(x) with rejection until one lands in
                        what the filters keep (sampling_chain: an exact draw)

Randomness is counter-based: the uniform of draw round n in row i is a hash of (noise key of
row i, n), and a row's noise key is a hash of (request seed, request step). A seeded request
therefore draws the same tokens on every run, whatever the batch around it, on CPU and CUDA
alike (the integer hash is exact on both). Unseeded requests get fresh keys from torch's
default generator at every step. The batch's sampling tensors are a SamplingBatchInfo
(sampling_batch.py: its constant part is built once per request set, the keys every step).

Filter semantics (applied to x = logits * (1/T), each keeping ties at its threshold):
    top-k: keep x >= k-th largest x
    top-p: on softmax of what top-k kept, in descending order, keep a token if the mass
           strictly before it is < top_p (the smallest head with mass >= top_p)
    min-p: keep x >= max(x) + log(min_p), i.e. p >= min_p * p_max

On CUDA, when no full logprob rows are asked for, `sample` is one launch of the fused kernel
sgl_lang.kernels.masked_sampling (mask, temperature, filters, the draw and the token's
logprob in one pass or few over each row), with these same semantics and the same noise.
The torch path below serves CPU, full-logprob batches and non-contiguous logits.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from sgl_lang.kernels.bitmask import apply_token_bitmask_inplace
from sgl_lang.kernels.masked_sampling import masked_sample
from sgl_lang.kernels.sampling_chain import chain_draw
from sgl_lang.kernels.sampling_noise import mix32_ref, uniform_noise  # noqa: F401  (re-exported)
from sgl_lang.kernels.sampling_noise import mix32_ as _mix32  # noqa: F401  (re-exported)

from .penalties import apply_penalties  # noqa: F401  (re-exported: the sampler's public API)
from .sampling_batch import SamplingBatchInfo

_NEG_INF = float("-inf")
_CPU_TOP_P_CANDIDATES = 1024  # top-p nucleus tried inside this many tokens before a full sort


class SampleOutput(NamedTuple):
    next_token_ids: torch.Tensor  # [bs] int64
    logprobs: torch.Tensor  # [bs] f32, log-softmax (temperature 1, no top-k/p/min-p) of the token
    full_logprobs: Optional[torch.Tensor]  # [bs, V] f32 when asked for, else None


def sample(logits: torch.Tensor, info: SamplingBatchInfo,
           return_full_logprobs: bool = False) -> SampleOutput:
    """Next token per row. logits: [bs, V] float (any float dtype; computed in f32)."""
    if logits.dim() != 2 or logits.shape[0] != info.temperatures.shape[0]:
        raise ValueError(f"sample: expected logits [{info.temperatures.shape[0]}, V], "
                         f"got {tuple(logits.shape)}")
    if logits.is_cuda and not return_full_logprobs and logits.stride(1) == 1:
        fused = masked_sample(logits, info.vocab_mask, info.temperatures, info.top_ks, info.top_ps,
                              info.min_ps, info.noise_keys, is_greedy=info.is_greedy, dead_token=0,
                              may_filter=info.need_top_k or info.need_top_p or info.need_min_p,
                              may_sample=not info.is_all_greedy)
        return SampleOutput(fused.token_ids, fused.logprobs, None)
    logits = logits.float()
    if info.vocab_mask is not None:
        logits = apply_token_bitmask(logits, info.vocab_mask)
    next_ids = logits.argmax(dim=-1)  # [bs]
    if not info.is_all_greedy:
        next_ids = torch.where(info.is_greedy, next_ids, _sample_rows(logits, info))
    lse = logits.logsumexp(dim=-1)  # [bs]
    logprobs = logits.gather(1, next_ids[:, None]).squeeze(1) - lse
    full = logits - lse[:, None] if return_full_logprobs else None
    return SampleOutput(next_ids, logprobs, full)


def _sample_rows(logits: torch.Tensor, info: SamplingBatchInfo) -> torch.Tensor:
    """The draw of every row (greedy rows included; the caller discards them): inverse-CDF
    rounds on softmax(x / T) until one lands in what the filters keep (sampling_chain)."""
    s = logits * info.temperatures.reciprocal()  # [bs, V]; s = x * (1/T), as the fused kernel
    x = s
    if info.need_top_k:
        # k-th largest value per row; rows with top-k off get -inf (keep everything).
        top = x.topk(info.max_top_k, dim=-1).values  # [bs, max_top_k], descending
        k = info.top_ks.clamp(max=info.max_top_k)
        kth = top.gather(1, (k - 1)[:, None])  # [bs, 1]
        kth = kth.masked_fill((info.top_ks >= info.vocab_size)[:, None], _NEG_INF)
        x = x.masked_fill(x < kth, _NEG_INF)
    if info.need_top_p:
        x = x.masked_fill(x < _top_p_threshold(x, info), _NEG_INF)
    if info.need_min_p:
        floor = x.max(dim=-1, keepdim=True).values + info.min_ps.log()[:, None]  # log 0 = -inf
        x = x.masked_fill(x < floor, _NEG_INF)
    filtered = (info.top_ks < info.vocab_size) | (info.top_ps < 1.0) | (info.min_ps > 0.0)  # [bs]
    alive = (s > _NEG_INF).any(dim=-1, keepdim=True)  # [bs, 1]: rows a grammar left a token
    return chain_draw(s.masked_fill(~alive, 0.0), (x > _NEG_INF) | ~alive, info.noise_keys,
                      filtered & ~info.is_greedy)


def _top_p_threshold(x: torch.Tensor, info: SamplingBatchInfo) -> torch.Tensor:
    """[bs, 1] smallest value top-p keeps (-inf on rows with top-p off). x: [bs, V], top-k done.

    Needs x in descending order only as far as the nucleus reaches. With top-k on in every
    top-p row, the top max_top_k values hold every finite x. Otherwise a full sort, except on
    CPU, where the top _CPU_TOP_P_CANDIDATES values are tried first and kept when their mass
    reaches top_p in every row (one host check; free on CPU, never done on CUDA).
    """
    lse = x.logsumexp(dim=-1, keepdim=True)  # [bs, 1] normaliser over the whole vocabulary
    top_ps = info.top_ps[:, None]  # [bs, 1]
    vals = None
    if not info.top_p_needs_full_sort:
        vals = x.topk(info.max_top_k, dim=-1).values  # [bs, max_top_k], descending
    elif x.device.type == "cpu" and x.shape[1] > 2 * _CPU_TOP_P_CANDIDATES:
        head = x.topk(_CPU_TOP_P_CANDIDATES, dim=-1).values  # [bs, C], descending
        head_mass = (head - lse).exp().sum(dim=-1, keepdim=True)
        if bool(((head_mass >= top_ps) | (top_ps >= 1.0)).all()):
            vals = head
    if vals is None:
        vals = x.sort(dim=-1, descending=True).values  # [bs, V]
    probs = (vals - lse).exp()
    mass_before = probs.cumsum(dim=-1) - probs  # exclusive cumulative mass
    num_keep = (mass_before < top_ps).sum(dim=-1, keepdim=True).clamp_(min=1)
    threshold = vals.gather(1, num_keep - 1)  # [bs, 1]
    return threshold.masked_fill(top_ps >= 1.0, _NEG_INF)


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    """Out-of-place: logits[i, t] stays where bit t of row i is 1, else becomes -inf.

        allowed(i, t) = (bitmask[i, t // 32] >> (t % 32)) & 1

    logits: [bs, V] float; bitmask: [bs, ceil(V/32)] int32 on the same device. The work is done
    by sgl_lang.kernels.bitmask (Triton on CUDA, its torch reference elsewhere).
    """
    out = logits.clone()
    apply_token_bitmask_inplace(out, bitmask)
    return out


def top_logprobs(logprobs_full: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most likely tokens per row: (values [n, k] f32, ids [n, k] i64), descending."""
    k = min(k, logprobs_full.shape[-1])
    values, ids = logprobs_full.topk(k, dim=-1)
    return values, ids
