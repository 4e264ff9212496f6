"""SamplingBatchInfo, the per-row sampling tensors of one step, and BatchSamplingParams, the part
of them that stays the same while a batch keeps its requests.

    BatchSamplingParams(params, vocab_size, device)   once per request set: every constant
                                                      tensor (temperatures, top-p, ..., seeds)
      .at(steps) -> SamplingBatchInfo                 every step: the noise keys, hashed for all
                                                      rows at once, one host tensor, one copy

SampleFacts: what sampling needs beyond the logits (grammar masks, penalties, logprobs,
min_new_tokens) for a list of requests; the runner keeps it while the list stays the same.

A row's noise key is sampling_noise.key_words(seed, step): the request's seed if it has one,
else a fresh draw of torch's default generator at every step (as before: unseeded rows never
repeat their noise).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch

from sgl_lang.kernels.sampling_noise import KEY_ADD, MIX_MUL, SEED_MUL, STEP_MUL

from .sampling_params import SamplingParams

_U64 = 1 << 64


@dataclass
class SamplingBatchInfo:
    """Per-row sampling tensors for one batch and step (see BatchSamplingParams.at)."""

    vocab_size: int
    temperatures: torch.Tensor  # [bs, 1] f32; 1.0 on greedy rows (their samples are unused)
    top_ps: torch.Tensor  # [bs] f32, 1.0 = off
    top_ks: torch.Tensor  # [bs] i64, vocab_size = off
    min_ps: torch.Tensor  # [bs] f32, 0.0 = off
    is_greedy: torch.Tensor  # [bs] bool
    frequency_penalties: torch.Tensor  # [bs] f32
    presence_penalties: torch.Tensor  # [bs] f32
    repetition_penalties: torch.Tensor  # [bs] f32, 1.0 = off
    noise_keys: torch.Tensor  # [bs, 2] int32: two hash words of (seed, step)
    vocab_mask: Optional[torch.Tensor]  # [bs, ceil(V/32)] int32, bit 1 = allowed; None = no grammar
    is_all_greedy: bool
    need_top_k: bool  # some sampling row has top-k on
    need_top_p: bool
    need_min_p: bool
    need_penalties: bool
    max_top_k: int  # largest top-k among sampling rows that use it (0 when none)
    top_p_needs_full_sort: bool  # a top-p row has no top-k, so its candidates are the whole vocab

    @classmethod
    def build(cls, params: Sequence[SamplingParams], vocab_size: int,
              device: torch.device | str = "cpu", steps: Optional[Sequence[int]] = None,
              vocab_mask: Optional[torch.Tensor] = None) -> "SamplingBatchInfo":
        """steps[i]: tokens request i has generated so far; required when any request has a
        seed (its noise must change every step). vocab_mask: packed bitmask rows, all bits set
        for unconstrained rows (see apply_token_bitmask)."""
        return BatchSamplingParams(params, vocab_size, device).at(steps, vocab_mask)


class BatchSamplingParams:
    """The step-independent fields of SamplingBatchInfo for one sequence of requests' params,
    built once on the device; `at(steps)` adds one step's noise keys. Holds `params`, so a
    runner may key a cache of these by the ids of the params objects."""

    def __init__(self, params: Sequence[SamplingParams], vocab_size: int,
                 device: torch.device | str = "cpu"):
        self.params = tuple(params)
        self.device = torch.device(device)
        greedy = [p.is_greedy for p in params]
        sampling = [p for p, g in zip(params, greedy) if not g]
        top_ks = [p.top_k if 0 < p.top_k < vocab_size else vocab_size for p in params]

        def f32(values):
            return torch.tensor(values, dtype=torch.float32)

        tensors = dict(
            temperatures=f32([1.0 if g else p.temperature for p, g in zip(params, greedy)])[:, None],
            top_ps=f32([p.top_p for p in params]),
            top_ks=torch.tensor(top_ks, dtype=torch.int64),
            min_ps=f32([p.min_p for p in params]),
            is_greedy=torch.tensor(greedy, dtype=torch.bool),
            frequency_penalties=f32([p.frequency_penalty for p in params]),
            presence_penalties=f32([p.presence_penalty for p in params]),
            repetition_penalties=f32([p.repetition_penalty for p in params]),
        )
        self._fields = dict(
            {name: _to_device(t, self.device) for name, t in tensors.items()},
            vocab_size=vocab_size,
            is_all_greedy=all(greedy),
            need_top_k=any(0 < p.top_k < vocab_size for p in sampling),
            need_top_p=any(p.top_p < 1.0 for p in sampling),
            need_min_p=any(p.min_p > 0.0 for p in sampling),
            need_penalties=any(p.has_penalties for p in params),
            max_top_k=max((p.top_k for p in sampling if 0 < p.top_k < vocab_size), default=0),
            top_p_needs_full_sort=any(p.top_p < 1.0 and not 0 < p.top_k < vocab_size
                                      for p in sampling),
        )
        # key_words' seed term, seed * SEED_MUL + KEY_ADD mod 2**64, of every seeded row
        # (any Python int: negative and >= 2**64 seeds reduce exactly as in key_words)
        self._is_seeded = np.array([p.seed is not None for p in params], dtype=bool)
        self._seed_terms = np.array([(p.seed * SEED_MUL + KEY_ADD) % _U64 if p.seed is not None
                                     else 0 for p in params], dtype=np.uint64)
        self._has_seed = bool(self._is_seeded.any())

    def at(self, steps: Optional[Sequence[int]] = None,
           vocab_mask: Optional[torch.Tensor] = None) -> SamplingBatchInfo:
        """The batch's SamplingBatchInfo at steps[i] tokens generated by request i (see build)."""
        bs = len(self.params)
        if steps is None:
            if self._has_seed:
                raise ValueError("SamplingBatchInfo.build: steps are required when a request has "
                                 "a seed (the noise must advance every step)")
            steps = [0] * bs
        if len(steps) != bs:
            raise ValueError(f"SamplingBatchInfo.build: expected {bs} steps, got {len(steps)}")
        fresh = torch.randint(0, 1 << 62, (bs,), dtype=torch.int64).numpy().view(np.uint64)
        seed_terms = np.where(self._is_seeded, self._seed_terms,
                              fresh * np.uint64(SEED_MUL) + np.uint64(KEY_ADD))
        keys = torch.from_numpy(noise_key_words(seed_terms, np.array(steps, dtype=np.uint64)))
        return SamplingBatchInfo(
            **self._fields,
            noise_keys=_to_device(keys, self.device),
            vocab_mask=None if vocab_mask is None else vocab_mask.to(self.device),
        )


class SampleFacts(NamedTuple):
    """What sampling must do beyond logits -> tokens for a list of requests; fixed while the list
    is (params, grammar and logprob settings do not change once a request runs)."""
    has_extras: bool  # some request has a grammar, penalties or logprobs
    is_all_plain_greedy: bool
    has_min_new_tokens: bool


def sample_facts(reqs: Sequence) -> SampleFacts:
    """The SampleFacts of a list of requests (Req)."""
    return SampleFacts(
        has_extras=any(r.grammar is not None or r.params.has_penalties or r.return_logprob for r in reqs),
        is_all_plain_greedy=all(r.params.is_plain_greedy for r in reqs),
        has_min_new_tokens=any(r.params.min_new_tokens for r in reqs))


def noise_key_words(seed_terms: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """sampling_noise.key_words for every row at once: [n, 2] int32 (low word, high word).

    seed_terms: [n] uint64, seed * SEED_MUL + KEY_ADD mod 2**64; steps: [n] uint64. numpy's
    uint64 arithmetic wraps mod 2**64 and shifts logically, so this is key_words exactly."""
    z = seed_terms + steps * np.uint64(STEP_MUL)  # [n] uint64
    z ^= z >> np.uint64(30)
    z *= np.uint64(MIX_MUL[0])
    z ^= z >> np.uint64(27)
    z *= np.uint64(MIX_MUL[1])
    z ^= z >> np.uint64(31)
    words = z.view(np.uint32).reshape(-1, 2)  # [n, 2]; little-endian: (z & 0xFFFFFFFF, z >> 32)
    return words.view(np.int32)


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`; to a GPU through pinned memory without blocking (a blocking
    copy would wait for the step still running there)."""
    if device.type == "cpu":
        return t
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
