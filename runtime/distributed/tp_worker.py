"""The entry of tensor-parallel ranks 1..N-1 of an Engine (spawned by TPDriver).

    join the group -> load this rank's shard -> build a ModelRunner (its KV heads, attention
    backend, CUDA graphs on GPU) -> loop: recv ForwardBatch -> the same forward as rank 0

Only rank 0 samples: every rank ends a forward with the full logits (the LM head all-gathers), so
the others just run the model. `run_forward` makes the same graph-vs-eager and logits-or-not
choice as ModelRunner.forward, so the collectives of all ranks line up.

A rank that fails raises out of its process (non-zero exit code), which rank 0's TPWorkers sees.
"""
from __future__ import annotations

import logging
import signal

import torch

from ..config import EngineConfig
from ..forward_batch import ForwardBatch
from .batch_broadcast import BatchReceiver
from .process_group import destroy_tp_group, init_tp_group, rank_device

logger = logging.getLogger("sgl_lang.runtime.tp")

# Default-group timeout: a forward's collective waiting this long means a rank is stuck. gloo
# notices a dead peer at once (its socket closes); NCCL does not, so its timeout is longer.
GLOO_TIMEOUT_S = 30.0
NCCL_TIMEOUT_S = 300.0


def collective_timeout_s(device: str) -> float:
    return GLOO_TIMEOUT_S if device == "cpu" else NCCL_TIMEOUT_S


def build_runner(config: EngineConfig, model_dir: str, rank: int, device: str):
    """This rank's ModelRunner over its shard (the driver builds rank 0's the same way)."""
    from ..model_runner import ModelRunner
    from ..models.loader import load_model
    dtype = config.resolved_dtype()
    loaded = load_model(model_dir, dtype, device, tp_rank=rank, tp_size=config.tp_size,
                        load_format=config.load_format, seed=config.random_seed)
    return ModelRunner(config, loaded, device, dtype, eos_token_ids=())


def run_forward(runner, fb: ForwardBatch) -> None:
    """The model part of ModelRunner.forward, same branches (sampling is rank 0's)."""
    if fb.logits_indices.numel() == 0:
        runner.model(fb, runner.pool, runner.attn)
    elif runner.graph_runner is not None and runner.graph_runner.can_run(fb):
        runner.graph_runner.replay(fb)
    else:
        hidden = runner.model(fb, runner.pool, runner.attn)  # [num_tokens, hidden]
        runner.model.compute_logits(hidden[fb.logits_indices])  # all-gathers across ranks


def worker_main(rank: int, size: int, init_method: str, config: EngineConfig, model_dir: str) -> None:
    """Process entry of rank `rank` (1..size-1); returns when rank 0 sends STOP."""
    # Ctrl-C in a terminal reaches the whole process group: rank 0 decides when ranks stop (it
    # drains in-flight requests first), so a rank does not die of it on its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    device = rank_device(config.resolved_device(), rank)
    if device == "cpu":
        torch.set_num_threads(config.num_threads or 1)
    torch.manual_seed(config.random_seed)
    init_tp_group(rank, size, init_method, device, timeout_s=collective_timeout_s(device))
    runner = build_runner(config, model_dir, rank, device)
    receiver = BatchReceiver(runner.device)
    with torch.inference_mode():
        while (fb := receiver.recv()) is not None:
            run_forward(runner, fb)
    logger.info("tensor-parallel rank %d stopping", rank)
    runner.release_graphs()
    destroy_tp_group()
