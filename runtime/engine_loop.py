"""EngineLoop: the background loop that lets many threads (run_batch, HTTP clients) share one
continuously batched Engine. Mixed into Engine, which owns the state it uses:

    _worker (TorchWorker)  the one thread the loop runs on
    _inbox, _wakeup        commands from other threads ("add", "abort", "call"), drained by
                           Engine._drain_inbox at the start of each step; the event the idle loop
                           sleeps on
    _stopped, _shut_down, _loop_error, _loop_future, _lock, _inflight, num_steps, scheduler, processor, tp,
    _grammar, step()

Only the loop thread touches the scheduler while the loop runs; other threads reach it through
the inbox (add_request / abort / call_in_loop).
"""
from __future__ import annotations

import logging
import queue
import threading

from .errors import EngineStopped

logger = logging.getLogger("sgl_lang.runtime")


class EngineLoop:
    def _ensure_loop(self) -> None:
        with self._lock:
            if self._loop_future is None:
                self._loop_future = self._worker.submit(self._loop)

    def _loop(self) -> None:
        try:
            while not self._stopped:
                steps_before = self.num_steps
                self.step()
                if self._inbox.empty() and self.num_steps == steps_before and self._inflight is None:
                    # idle, or only requests that cannot run yet (grammar compiling, pool full):
                    # sleep until new work arrives instead of spinning
                    self._wakeup.wait(timeout=0.5 if not self.scheduler.has_work() else 0.005)
                    self._wakeup.clear()
        except BaseException as e:
            logger.exception("engine loop died")
            self._loop_error = e
            self._fail_all(f"engine loop died: {e!r}")

    def _fail_all(self, message: str) -> None:
        self._inflight = None
        for req in list(self.scheduler.waiting) + list(self.scheduler.running):
            req.error = message
            req.finish({"type": "abort", "message": message})
            self.processor.emit(req)
        self.scheduler.waiting.clear()
        self.scheduler.running.clear()
        for kind, arg in self._pop_inbox():
            if kind == "add":
                arg.error = message
                arg.finish({"type": "abort", "message": message})
                self.processor.emit(arg)
            elif kind == "call":
                arg[1].append(EngineStopped(message))
                arg[2].set()

    def _pop_inbox(self):
        """The queued (kind, arg) commands, oldest first, without waiting for more."""
        while True:
            try:
                yield self._inbox.get_nowait()
            except queue.Empty:
                return

    def _fail_stuck(self, error: BaseException) -> None:
        """Called from another thread when the loop thread is blocked for good (a tensor-parallel
        peer died inside a GPU collective that could not be aborted): stop, fail every request."""
        self._loop_error = error
        self._stopped = True
        self._fail_all(str(error))

    def call_in_loop(self, fn):
        """Run fn() on the engine thread between steps and return its result."""
        if self._loop_future is None or self._loop_future.done():
            return fn()  # no loop (yet, or any more): nothing else mutates engine state
        box: list = []
        done = threading.Event()
        self._inbox.put(("call", (fn, box, done)))
        self._wakeup.set()
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def shutdown(self) -> None:
        """Stop the loop, fail what is still queued or running; a second call does nothing."""
        if self._shut_down:
            return
        stuck = self._stopped  # _fail_stuck ran: the loop thread may never return
        self._shut_down = self._stopped = True
        self._wakeup.set()
        if self._loop_future is not None:
            try:
                self._loop_future.result(timeout=1 if stuck else 10)  # it logs its own failures
            except TimeoutError:
                logger.warning("engine loop did not stop in time; failing its requests anyway")
        # The worker thread is left parked (daemon, holding no reference to the engine): a thread
        # that loaded the model and then exits makes the C++ runtime abort at process exit.
        self._fail_all("engine shut down")
        if self.tp is not None:
            if self.tp.failure is None:  # (after a death the GPU may wait on the peer for good)
                self.runner.release_graphs()  # no NCCL collective left captured while leaving
            self.tp.shutdown()
        if self._grammar is not None:
            self._grammar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()
