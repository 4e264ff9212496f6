"""One sharded prefill outside the Engine: every rank builds its shard of the model (load_model with
tp_rank/tp_size reads only its rows/columns into memory), its shard of the KV pool (its KV heads),
and runs the same ForwardBatch; row-parallel layers all-reduce, the LM head all-gathers, so every
rank ends with the full logits. Tests use it to check TP=N against TP=1 (the Engine runs the
same layers through ModelRunner and tp_worker.py)."""
from __future__ import annotations

from typing import Sequence

import torch

from ..forward_batch import ForwardBatch
from ..layers.attention import get_attention_backend
from ..mem.kv_pool import KVPool
from ..models.loader import load_model
from .process_group import TPGroup, destroy_tp_group, init_tp_group

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def prefill_batch(token_ids: Sequence[int]) -> ForwardBatch:
    """One sequence, no cached prefix, logits at every position; KV slots 1..T (slot 0 is the dummy)."""
    num_tokens = len(token_ids)
    slots = torch.arange(1, num_tokens + 1, dtype=torch.int64)  # [T]
    return ForwardBatch(
        input_ids=torch.tensor(list(token_ids), dtype=torch.int64),
        positions=torch.arange(num_tokens, dtype=torch.int64),
        out_cache_loc=slots,
        req_to_token=slots.unsqueeze(0),  # [1, T]
        seq_lens=torch.tensor([num_tokens]),
        prefix_lens=torch.tensor([0]),
        extend_lens=torch.tensor([num_tokens]),
        is_decode=False,
        logits_indices=torch.arange(num_tokens, dtype=torch.int64),
    )


@torch.inference_mode()
def sharded_prefill_logits(model_dir: str, token_ids: Sequence[int], tp: TPGroup,
                           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """-> logits [T, vocab] float32 (identical on every rank)."""
    loaded = load_model(model_dir, dtype, tp.device, tp_rank=tp.rank, tp_size=tp.size)
    pool = KVPool(len(token_ids) + 1, loaded.num_layers, loaded.num_kv_heads, loaded.head_dim, dtype, tp.device)
    fb = prefill_batch(token_ids)
    hidden = loaded.model(fb, pool, get_attention_backend("torch"))  # [T, hidden]
    return loaded.model.compute_logits(hidden[fb.logits_indices])  # [T, vocab]


def rank_main(rank: int, size: int, init_method: str, model_dir: str, token_ids: Sequence[int],
              dtype_name: str = "float32", num_threads: int = 1) -> torch.Tensor:
    """Entry of one rank (spawned ranks 1..N-1 and rank 0 alike)."""
    torch.set_num_threads(num_threads)
    tp = init_tp_group(rank, size, init_method)
    try:
        return sharded_prefill_logits(model_dir, token_ids, tp, DTYPES[dtype_name])
    finally:
        destroy_tp_group()
