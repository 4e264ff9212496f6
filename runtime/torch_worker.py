"""TorchWorker: the one thread that runs every torch call of an Engine (loading, then the loop).

On CPU, OpenMP keeps a thread team per calling thread; two teams on a small box (one left by
loading on the caller's thread, one for the loop) cost about a third of decode speed. The thread
is a daemon and stays parked after the engine shuts down: a thread that loaded the model and then
exits makes the C++ runtime abort at process exit.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future


class TorchWorker:
    """One daemon thread that runs the callables submitted to it, in order."""

    def __init__(self):
        self._queue: "queue.SimpleQueue" = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sgl-engine", daemon=True)
        self._thread.start()

    def submit(self, fn) -> Future:
        fut: Future = Future()
        self._queue.put((fn, fut))
        return fut

    def _run(self) -> None:
        while True:
            fn, fut = self._queue.get()
            try:
                fut.set_result(fn())
            except BaseException as e:  # handed to the submitter
                fut.set_exception(e)
            del fn, fut  # hold nothing (e.g. the engine) while parked
