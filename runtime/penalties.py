"""Sampling penalties on logits, batched, no host sync.

Which tokens each penalty looks at (the choice of vLLM and the OpenAI API):
    frequency / presence (OpenAI): output tokens only, from `output_counts`
    repetition (HF / CTRL):        tokens seen in the prompt OR the output

Exact formula per row i and token t, in this order:
    seen  = output_counts[i, t] > 0 or prompt_mask[i, t]
    l     = logits[i, t]
    l     = (l / rep[i] if l > 0 else l * rep[i])          if seen else l
    l     = l - freq[i] * output_counts[i, t] - pres[i] * (output_counts[i, t] > 0)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import torch

if TYPE_CHECKING:
    from .sampler import SamplingBatchInfo


def apply_penalties(logits: torch.Tensor, output_counts: torch.Tensor, info: "SamplingBatchInfo",
                    prompt_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Out-of-place penalised logits [bs, V] f32.

    output_counts: [bs, V] int32, how often each token was generated so far.
    prompt_mask:   [bs, V] bool, tokens present in the prompt (for repetition); None = none.
    Returns `logits` unchanged (the same tensor) when no row has a penalty.
    """
    if not info.need_penalties:
        return logits
    if output_counts.shape != logits.shape:
        raise ValueError(f"apply_penalties: expected output_counts {tuple(logits.shape)}, "
                         f"got {tuple(output_counts.shape)}")
    counts = output_counts.to(torch.float32)  # [bs, V]
    in_output = output_counts > 0  # [bs, V]
    seen = in_output if prompt_mask is None else in_output | prompt_mask
    rep = info.repetition_penalties[:, None]  # [bs, 1]
    logits = logits.float()
    logits = torch.where(seen, torch.where(logits > 0, logits / rep, logits * rep), logits)
    logits = logits - info.frequency_penalties[:, None] * counts
    logits = logits - info.presence_penalties[:, None] * in_output.to(torch.float32)
    return logits


def count_tokens(token_ids: Sequence[Sequence[int]], vocab_size: int,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """[bs, vocab_size] int32 counts of each row's tokens (build once; then update with
    `counts[rows, new_ids] += 1` after each step)."""
    counts = torch.zeros(len(token_ids), vocab_size, dtype=torch.int32, device=device)
    lengths = [len(ids) for ids in token_ids]
    if sum(lengths) == 0:
        return counts
    flat = torch.tensor([t for ids in token_ids for t in ids], dtype=torch.int64, device=device)
    rows = torch.repeat_interleave(torch.arange(len(token_ids), device=device),
                                   torch.tensor(lengths, device=device))
    counts.index_put_((rows, flat), torch.ones_like(flat, dtype=torch.int32), accumulate=True)
    return counts
