"""ForwardBatch: the tensors one model forward needs, built by the ModelRunner.

Every batch is an "extend" batch: each sequence i appends `extend_lens[i]` new tokens after
`prefix_lens[i]` tokens whose KV is already in the pool. A decode step is the special case
extend_lens == 1 for all sequences; `is_decode` says so, so attention can take a batched path.

Token layout (flattened, sequences back to back):

    input_ids:     [ seq0 new tokens | seq1 new tokens | ... ]          # [num_tokens]
    out_cache_loc: [ KV slot per new token, same order ]                # [num_tokens]
    req_to_token:  row i = KV slots of seq i's tokens 0..seq_lens[i]-1, padded with 0  # [bs, max_seq_len]

Slot 0 of the KV pool is a dummy slot: padding in req_to_token points at it and it is never
handed out by the allocator.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class ForwardBatch:
    input_ids: torch.Tensor  # [num_tokens] int64
    positions: torch.Tensor  # [num_tokens] int64, position of each new token in its sequence
    out_cache_loc: torch.Tensor  # [num_tokens] int64, KV slot where each new token's K/V is written
    req_to_token: torch.Tensor  # [bs, max_seq_len] int64, KV slots of every token of each sequence
    seq_lens: torch.Tensor  # [bs] int64 on CPU, prefix_len + extend_len
    prefix_lens: torch.Tensor  # [bs] int64 on CPU, tokens already in the KV pool before this step
    extend_lens: torch.Tensor  # [bs] int64 on CPU, new tokens of this step
    is_decode: bool  # every extend_len == 1
    # [num_logits] int64: rows of the hidden states whose logits are needed (flattened token index)
    logits_indices: torch.Tensor
    # [bs] int64 on the device: seq_lens already copied there (None: copy seq_lens when needed)
    seq_lens_device: Optional[torch.Tensor] = None

    @property
    def seq_lens_source(self) -> torch.Tensor:
        """[bs] int64 to copy the lengths to the device from: seq_lens_device when the batch
        builder already put them there, else the host seq_lens."""
        return self.seq_lens_device if self.seq_lens_device is not None else self.seq_lens

    @property
    def batch_size(self) -> int:
        return int(self.seq_lens.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])
