"""sgl_lang.runtime.distributed: tensor-parallel process groups (gloo on CPU, NCCL on GPU), the
rank processes, and a one-shot sharded forward used to check TP against TP=1.

Not yet wired into the Engine; see docs/deployment.md ("Tensor parallelism") for the hooks."""
from .process_group import TPGroup, TPInitError, destroy_tp_group, init_tp_group
from .tp_workers import TPWorkerDied, TPWorkers

__all__ = ["TPGroup", "TPInitError", "init_tp_group", "destroy_tp_group", "TPWorkers", "TPWorkerDied"]
