"""TPDriver: rank 0's side of a tensor-parallel Engine (built in Engine._load when tp_size > 1).

    TPDriver(config, model_dir, device)   spawn ranks 1..N-1 (tp_worker.worker_main), join the group
    send(fb)                              before each forward: check the ranks, broadcast the batch
    shutdown()                            STOP header, join, terminate stragglers, leave the group

A rank that dies is reported as TPWorkerDied naming it: send() checks the ranks first, a failed
collective asks TPWorkers which rank exited (collectives.set_failure_check), and a watchdog thread
terminates the remaining ranks (their sockets close, so nothing blocks on a partial group) and,
on NCCL, aborts the communicators so that rank 0's GPU does not wait on a dead peer forever.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

import torch

from ..config import EngineConfig
from ..forward_batch import ForwardBatch
from .batch_broadcast import BatchSender
from .collectives import set_failure_check
from .process_group import TPInitError, destroy_tp_group, init_tp_group, rank_device
from .tp_worker import collective_timeout_s, worker_main
from .tp_workers import TPWorkerDied, TPWorkers

logger = logging.getLogger("sgl_lang.runtime.tp")

WATCH_INTERVAL_S = 0.5
DEATH_REPORT_WAIT_S = 5.0  # after a failed collective, how long to wait for the culprit to exit
ABORT_WAIT_S = 5.0  # after a death on NCCL, how long the communicators' abort may take


class TPDriver:
    def __init__(self, config: EngineConfig, model_dir: str, device: str):
        self.size = config.tp_size
        self.device = rank_device(device, 0)
        if self.device != "cpu":
            first = int(self.device.split(":")[1])
            if first + self.size > torch.cuda.device_count():
                raise TPInitError(f"tp_size={self.size} from {self.device} needs GPUs "
                                  f"{first}..{first + self.size - 1}, but {torch.cuda.device_count()} are visible")
        self.workers = TPWorkers(self.size, worker_main, (config, model_dir)).start()
        try:
            self.group = init_tp_group(0, self.size, self.workers.init_method, self.device,
                                       timeout_s=collective_timeout_s(self.device))
        except TPInitError:
            try:
                self.workers.check_alive(wait_s=DEATH_REPORT_WAIT_S)  # a rank that died says more
            finally:
                self.workers.shutdown()
            raise
        self.sender = BatchSender()
        self.failure: Optional[TPWorkerDied] = None
        # set by the engine: fails its requests when an NCCL abort hangs (see _on_death)
        self.on_stuck: Optional[Callable[[TPWorkerDied], None]] = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # the watchdog and the engine thread may both see a death
        set_failure_check(lambda: self.check(wait_s=DEATH_REPORT_WAIT_S))
        self._watchdog = threading.Thread(target=self._watch, name="sgl-tp-watchdog", daemon=True)
        self._watchdog.start()

    def check(self, wait_s: float = 0.0) -> None:
        """Raise TPWorkerDied if a rank has exited (waiting up to wait_s for one to)."""
        if self.failure is not None:
            raise self.failure
        try:
            self.workers.check_alive(wait_s)
        except TPWorkerDied as died:
            self._on_death(died)
            raise

    def send(self, fb: ForwardBatch) -> None:
        """Hand `fb` to ranks 1..N-1 (called by ModelRunner.forward before rank 0's own forward)."""
        self.check()
        self.sender.send(fb)

    def _on_death(self, died: TPWorkerDied) -> None:
        with self._lock:
            if self.failure is not None:
                return
            self.failure = died
        logger.error("%s", died)
        self.workers.shutdown(timeout=2.0)  # the rest: a partial group can do nothing
        if self.group.backend != "nccl":
            return  # gloo: the blocked collective fails by itself and the engine thread reports it
        # Abort the communicators, so that rank 0's GPU stops waiting on the dead peer. An abort
        # may itself hang (communicators captured in CUDA graphs): wait a bounded time, then tell
        # the engine, whose thread may be blocked on the GPU for good, to fail its requests.
        leave = threading.Thread(target=destroy_tp_group, name="sgl-tp-abort", daemon=True)
        leave.start()
        leave.join(ABORT_WAIT_S)
        if leave.is_alive() and self.on_stuck is not None:
            logger.error("could not abort the NCCL communicators within %.0f s; failing requests "
                         "from the watchdog", ABORT_WAIT_S)
            self.on_stuck(died)

    def _watch(self) -> None:
        while not self._stopping.wait(WATCH_INTERVAL_S):
            try:
                self.workers.check_alive()
            except TPWorkerDied as died:
                self._on_death(died)
                return

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop the ranks (STOP header when the group is whole, else terminate) and leave the group.
        Call it with no forward in flight."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        set_failure_check(None)
        gone = [r for r, p in self.workers.procs.items() if p.exitcode is not None]
        if gone:  # e.g. a signal to the whole process group reached them first: nothing to stop
            logger.info("tensor-parallel ranks %s had already exited at shutdown", gone)
        if self.failure is None and not gone:
            try:
                self.sender.send_stop()
            except RuntimeError as e:  # a rank died meanwhile: terminate below
                logger.warning("could not send STOP to the tensor-parallel ranks: %s", e)
            else:
                # every rank leaves the group on STOP, rank 0 alongside (on a thread with a
                # timeout, so that a teardown that waits on a peer cannot hang the caller)
                leave = threading.Thread(target=destroy_tp_group, name="sgl-tp-leave", daemon=True)
                leave.start()
                leave.join(timeout_s)
                if leave.is_alive():
                    logger.warning("leaving the tensor-parallel group took over %.0f s", timeout_s)
            for p in self.workers.procs.values():
                p.join(timeout_s)
        elif self.group.backend == "gloo":
            destroy_tp_group()
        self.workers.shutdown()
