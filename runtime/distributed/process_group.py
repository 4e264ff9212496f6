"""TPGroup: this process's place in the tensor-parallel group, and init/destroy of the default
torch.distributed process group that the parallel layers (runtime/layers/linear.py, embedding.py)
all-reduce / all-gather over.

Backend: NCCL when the rank has a CUDA device, gloo on CPU. NCCL's NVLink multicast (NVLS) is
switched off (`NCCL_NVLS_ENABLE=0`) before the first communicator is built, in every rank.

Besides the default group (the forward's collectives, timing out after `timeout_s`), every rank
joins a gloo "control" group on the CPU with a timeout of days: ranks 1..N-1 wait in it for the
next batch header however long the engine stays idle, and setup agreements (`agree_on_min`) run
in it while ranks load at different speeds."""
from __future__ import annotations

import datetime
import os
import threading
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist


CONTROL_TIMEOUT = datetime.timedelta(days=365)
_control_group = None  # the gloo control group of this process, once joined
_leaving = threading.Lock()  # held while this process leaves its group (maybe on another thread)
LEAVE_WAIT_S = 60.0  # how long a new group waits for a previous group's leave to finish


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
    if dist.is_initialized() and _leaving.acquire(timeout=LEAVE_WAIT_S):
        _leaving.release()  # a previous group's leave (on another thread) has finished meanwhile
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
        # The failed attempt used up a group name ("0"): reset torch's counter, as destroying a
        # group does, or this process's next group would be "1" and never meet its peers' "0".
        dist.distributed_c10d._world.group_count = 0
        raise TPInitError(f"rank {rank}/{size}: could not join the {backend} group at {init_method}: {e}") from e
    global _control_group
    _control_group = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    return TPGroup(rank, size, backend, device)


def control_group():
    """The gloo control group (CPU tensors only); None when no group was joined."""
    return _control_group


def rank_device(device: str, rank: int) -> str:
    """The device of `rank` when rank 0 runs on `device`: cpu for all, else consecutive GPUs
    (cuda / cuda:0 -> cuda:rank, cuda:k -> cuda:k+rank)."""
    if device == "cpu":
        return "cpu"
    first = int(device.split(":")[1]) if ":" in device else 0
    return f"cuda:{first + rank}"


def agree_on_min(value: int) -> int:
    """The smallest `value` over all ranks (each rank passes its own); `value` itself outside a
    group. E.g. KV pool slots: every rank must hold the same slot count."""
    if _control_group is None:
        return value
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN, group=_control_group)
    return int(t.item())


def destroy_tp_group() -> None:
    """Leave the group: destroy it on gloo; abort it on NCCL (local: never waits on peers, nor on
    communicators captured in CUDA graphs, where destroy_process_group was seen to hang)."""
    global _control_group
    with _leaving:
        _leave_group()
    _control_group = None


def _leave_group() -> None:
    if dist.is_initialized():
        abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
        if dist.get_backend() == "nccl" and abort is not None:
            abort()
        else:
            dist.destroy_process_group()
