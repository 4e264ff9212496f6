"""sgl_lang.runtime.distributed: tensor parallelism (EngineConfig.tp_size, docs/deployment.md).

    process_group   TPGroup, init/destroy (gloo on CPU, NCCL on GPU) and the gloo control group
    collectives     all_reduce / all_gather / broadcast, turning a dead peer into TPWorkerDied
    tp_workers      TPWorkers: spawn and watch ranks 1..N-1
    tp_driver       TPDriver: rank 0's side inside the Engine
    tp_worker       worker_main: the loop of ranks 1..N-1
    batch_broadcast BatchSender / BatchReceiver: a ForwardBatch as a header + int64 tensors
    tp_forward      a one-shot sharded prefill (tests compare TP=N with TP=1)
"""
from .process_group import TPGroup, TPInitError, destroy_tp_group, init_tp_group
from .tp_workers import TPWorkerDied, TPWorkers

__all__ = ["TPGroup", "TPInitError", "init_tp_group", "destroy_tp_group", "TPWorkers", "TPWorkerDied"]
