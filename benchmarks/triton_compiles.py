"""Which Triton kernels compile (a new specialisation: first use in this process) while a block
runs, so a benchmark can say what a slow first step spent its time on.

    with CompileLog() as log:
        ...
    log.entries  # [(seconds since the block began, "kernel[num_warps=...](arg: type, ...)"), ...]

Uses triton.knobs.runtime.jit_cache_hook (Triton >= 3.4); with an older Triton it records nothing.
"""
from __future__ import annotations

import time


class CompileLog:
    def __init__(self):
        self.entries: list[tuple[float, str]] = []
        self._saved = None
        self._t0 = 0.0

    def _hook(self, *args, **kwargs):
        self.entries.append((time.perf_counter() - self._t0, str(kwargs.get("repr", "?"))))
        return self._saved(*args, **kwargs) if self._saved else False  # False: compile as usual

    def __enter__(self) -> "CompileLog":
        self._t0 = time.perf_counter()
        try:
            from triton import knobs
            self._saved = knobs.runtime.jit_cache_hook
            knobs.runtime.jit_cache_hook = self._hook
        except (ImportError, AttributeError):
            self._saved = None
        return self

    def __exit__(self, *exc) -> None:
        try:
            from triton import knobs
            if knobs.runtime.jit_cache_hook == self._hook:
                knobs.runtime.jit_cache_hook = self._saved
        except (ImportError, AttributeError):
            pass

    def summary(self) -> str:
        """One line per compile: when (ms into the block) and the kernel with its specialisation."""
        return "\n".join(f"    {1e3 * t:8.1f} ms  {r[:300]}" for t, r in self.entries) or "    (none)"
