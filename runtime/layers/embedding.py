"""Vocab-parallel token embedding and LM head.

    VocabParallelEmbedding  W: [vocab / tp, hidden]  rank r owns ids [r*V/tp, (r+1)*V/tp); other ids
                            embed to zero and an all-reduce sums the ranks' rows
    ParallelLMHead          W: [vocab / tp, hidden]  rank r computes its slice of the logits, which
                            are all-gathered along the vocab dimension
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed.collectives import all_gather, all_reduce
from .decode_gemm import decode_linear
from .linear import WeightShapeError


class VocabParallelEmbedding(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int, tp_rank: int = 0, tp_size: int = 1):
        super().__init__()
        if vocab_size % tp_size:
            raise WeightShapeError(f"vocab_size {vocab_size} not divisible by tp_size {tp_size}")
        self.vocab_size = vocab_size
        self.tp_rank = tp_rank
        self.tp_size = tp_size
        self.shard_size = vocab_size // tp_size
        self.vocab_start = tp_rank * self.shard_size
        self.weight = nn.Parameter(torch.empty(self.shard_size, hidden_size), requires_grad=False)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id=None) -> None:
        src = loaded.narrow(0, self.vocab_start, self.shard_size)
        if src.shape != param.shape:
            raise WeightShapeError(f"embedding: expected shape {tuple(param.shape)}, got {tuple(src.shape)}")
        param.data.copy_(src)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # input_ids: [num_tokens] -> [num_tokens, hidden]
        if self.tp_size == 1:
            return F.embedding(input_ids, self.weight)
        local = input_ids - self.vocab_start
        outside = (local < 0) | (local >= self.shard_size)
        out = F.embedding(local.masked_fill(outside, 0), self.weight)
        out.masked_fill_(outside.unsqueeze(-1), 0)
        all_reduce(out)
        return out


class ParallelLMHead(VocabParallelEmbedding):
    """Output projection hidden -> vocab; may share its weight with the embedding (tied)."""

    def tie_to(self, embedding: VocabParallelEmbedding) -> None:
        self.weight = embedding.weight

    decode_gemm = False  # decode batches through kernels/skinny_gemm.py (layers/decode_gemm.py)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden: [n, hidden] -> logits [n, vocab] float32
        logits = decode_linear(hidden, self.weight, torch.float32, self) if self.decode_gemm else None
        if logits is None:
            logits = F.linear(hidden, self.weight).float()  # [n, vocab / tp]
        if self.tp_size == 1:
            return logits
        return all_gather(logits, self.tp_size)  # [n, vocab]
