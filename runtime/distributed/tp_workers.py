"""TPWorkers: the rank processes 1..N-1 of a tensor-parallel group, spawned by rank 0 (which stays
in the calling process), watched so that a rank that dies is reported instead of leaving rank 0
blocked in a collective forever.

    rank 0 (caller) ── spawn ──> rank 1 .. N-1: target(rank, size, init_method, *args)
        │ check_alive(): raises TPWorkerDied(rank, exitcode) as soon as any rank has exited
        └ shutdown(): terminate what is left

Collectives themselves time out after the group's timeout (gloo raises), so rank 0 calls
check_alive() when a collective fails to name the culprit."""
from __future__ import annotations

import multiprocessing as mp
import socket
import time
from typing import Callable, Sequence


class TPWorkerDied(RuntimeError):
    """A tensor-parallel rank process exited while the group was in use."""

    def __init__(self, rank: int, exitcode: int):
        how = f"killed by signal {-exitcode}" if exitcode < 0 else f"exit code {exitcode}"
        super().__init__(f"tensor-parallel rank {rank} died ({how}); a partial group cannot run a "
                         f"forward, so the engine must be shut down")
        self.rank = rank
        self.exitcode = exitcode


def free_init_method(host: str = "127.0.0.1") -> str:
    with socket.socket() as s:
        s.bind((host, 0))
        return f"tcp://{host}:{s.getsockname()[1]}"


class TPWorkers:
    def __init__(self, size: int, target: Callable, args: Sequence = (), init_method: str = ""):
        if size < 1:
            raise ValueError(f"tp size must be >= 1, got {size}")
        self.size = size
        self.init_method = init_method or free_init_method()
        ctx = mp.get_context("spawn")  # fork would copy rank 0's threads and torch state
        self.procs = {r: ctx.Process(target=target, args=(r, size, self.init_method, *args), daemon=True,
                                     name=f"sgl-lang-tp-rank-{r}") for r in range(1, size)}

    def start(self) -> "TPWorkers":
        for p in self.procs.values():
            p.start()
        return self

    def check_alive(self, wait_s: float = 0.0) -> None:
        """Raise TPWorkerDied for the first rank that has exited (in rank order), waiting up to
        `wait_s` seconds for one to exit (call it with a wait after a collective failed)."""
        deadline = time.monotonic() + wait_s
        while True:
            for rank, p in self.procs.items():
                if p.exitcode is not None:
                    raise TPWorkerDied(rank, p.exitcode)
            if time.monotonic() >= deadline:
                return
            time.sleep(0.05)

    def shutdown(self, timeout: float = 10.0) -> None:
        for p in self.procs.values():
            if p.is_alive():
                p.terminate()
        for p in self.procs.values():
            p.join(timeout)
            if p.is_alive():
                p.kill()
                p.join()
