"""BatchSender / BatchReceiver: rank 0 hands each step's ForwardBatch to ranks 1..N-1 without
pickling: a fixed-size header, then the batch's int64 tensors packed into two flat buffers.

    header   [8] int64, CPU, control group (gloo):
             [command, num_tokens T, batch_size B, req_to_token width L, num_logits N, is_decode, 0, 0]
    lengths  [3B] int64, CPU, control group:        seq_lens | prefix_lens | extend_lens
    tokens   [3T + N + B*L] int64, on the device, default group (NCCL on GPU, gloo on CPU):
             input_ids | positions | out_cache_loc | logits_indices | req_to_token (row-major)

The lengths stay on the CPU (the ForwardBatch keeps them there), so a receiving rank never waits
on its GPU to read them. A STOP header ends the receiving loop.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..forward_batch import ForwardBatch
from .collectives import broadcast
from .process_group import control_group

HEADER_LEN = 8
STOP, FORWARD = 0, 1


class BatchSender:
    """Rank 0's side."""

    def send(self, fb: ForwardBatch) -> None:
        header = torch.tensor([FORWARD, fb.num_tokens, fb.batch_size, fb.req_to_token.shape[1],
                               fb.logits_indices.numel(), int(fb.is_decode), 0, 0], dtype=torch.int64)
        broadcast(header, control_group())
        lengths = torch.cat([fb.seq_lens, fb.prefix_lens, fb.extend_lens]).to(torch.int64)  # [3B]
        broadcast(lengths, control_group())
        tokens = torch.cat([fb.input_ids, fb.positions, fb.out_cache_loc, fb.logits_indices,
                            fb.req_to_token.reshape(-1)])  # [3T + N + B*L] on the device
        broadcast(tokens)

    def send_stop(self) -> None:
        header = torch.zeros(HEADER_LEN, dtype=torch.int64)
        header[0] = STOP
        broadcast(header, control_group())


class BatchReceiver:
    """The side of ranks 1..N-1; `device` is this rank's device."""

    def __init__(self, device: torch.device):
        self.device = device

    def recv(self) -> Optional[ForwardBatch]:
        """The next ForwardBatch, or None when rank 0 sent STOP."""
        header = torch.empty(HEADER_LEN, dtype=torch.int64)
        broadcast(header, control_group())
        command, num_tokens, bs, width, num_logits, is_decode = header[:6].tolist()
        if command == STOP:
            return None
        lengths = torch.empty(3 * bs, dtype=torch.int64)
        broadcast(lengths, control_group())
        tokens = torch.empty(3 * num_tokens + num_logits + bs * width, dtype=torch.int64, device=self.device)
        broadcast(tokens)
        input_ids, positions, out_cache_loc, logits_indices, req_to_token = tokens.split(
            [num_tokens, num_tokens, num_tokens, num_logits, bs * width])
        seq_lens, prefix_lens, extend_lens = lengths.split([bs, bs, bs])
        return ForwardBatch(input_ids=input_ids, positions=positions, out_cache_loc=out_cache_loc,
                            req_to_token=req_to_token.view(bs, width), seq_lens=seq_lens,
                            prefix_lens=prefix_lens, extend_lens=extend_lens, is_decode=bool(is_decode),
                            logits_indices=logits_indices)
