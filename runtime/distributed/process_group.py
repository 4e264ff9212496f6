"""TPGroup: this process's place in the tensor-parallel group, and init/destroy of the default
torch.distributed process group that the parallel layers (runtime/layers/linear.py, embedding.py)
all-reduce / all-gather over.

Backend: NCCL when the rank has a CUDA device, gloo on CPU. NCCL's NVLink multicast (NVLS) is
switched off (`NCCL_NVLS_ENABLE=0`) before the first communicator is built, in every rank."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist


class TPInitError(RuntimeError):
    """The process group could not be formed (bad size/rank, a peer never joined, port taken)."""


@dataclass(frozen=True)
class TPGroup:
    rank: int
    size: int
    backend: str  # "gloo" | "nccl"
    device: str  # "cpu" | "cuda:N"

    @property
    def is_driver(self) -> bool:
        """Rank 0 runs the scheduler and hands each step's batch to the others."""
        return self.rank == 0


def init_tp_group(rank: int, size: int, init_method: str, device: str = "cpu",
                  timeout_s: float = 60.0, backend: Optional[str] = None) -> TPGroup:
    """Join the group (blocks until all `size` ranks joined or `timeout_s` passed).

    init_method: a rendezvous URL shared by every rank, e.g. `tcp://127.0.0.1:29500`."""
    if size < 1 or not 0 <= rank < size:
        raise TPInitError(f"expected 0 <= rank < size, got rank={rank} size={size}")
    if dist.is_initialized():
        raise TPInitError("a torch.distributed process group already exists in this process")
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    backend = backend or ("nccl" if device.startswith("cuda") else "gloo")
    try:
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as e:
        raise TPInitError(f"rank {rank}/{size}: could not join the {backend} group at {init_method}: {e}") from e
    return TPGroup(rank, size, backend, device)


def destroy_tp_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
