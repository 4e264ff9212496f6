"""Run a workload against a backend and measure it: programs on a thread pool (as run_batch does),
per-program latency, and the backend's token counters read before and after.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Optional

from .metrics import RunMetrics, TokenCounts
from .workload import Workload

BACKENDS = ("local", "endpoint", "openai")


class BenchmarkSetupError(ValueError):
    """The command line asks for a backend it does not describe fully."""


@dataclass(frozen=True)
class BackendSpec:
    kind: str  # one of BACKENDS
    url: Optional[str] = None  # endpoint: http://host:port ; openai: http://host:port/v1
    model: str = "default"  # openai: the model name the server expects
    api_key: Optional[str] = None
    engine_flags: tuple = ()  # local: (name, value) pairs passed to sgl.Runtime
    is_chat_model: bool = True  # openai: False sends rendered text to /v1/completions

    def __post_init__(self):
        if self.kind not in BACKENDS:
            raise BenchmarkSetupError(f"backend must be one of {BACKENDS}, got {self.kind!r}")
        if self.kind != "local" and not self.url:
            raise BenchmarkSetupError(f"--backend {self.kind} needs --url")

    def label(self) -> str:
        if self.kind == "local":
            flags = ", ".join(f"{k}={v}" for k, v in self.engine_flags)
            return f"local ({flags})" if flags else "local"
        return f"{self.kind} @ {self.url}"


def make_backend(spec: BackendSpec):
    import sgl_lang as sgl
    if spec.kind == "local":
        return sgl.Runtime(**dict(spec.engine_flags))
    if spec.kind == "endpoint":
        return sgl.RuntimeEndpoint(spec.url, api_key=spec.api_key)
    return sgl.OpenAI(spec.model, base_url=spec.url, api_key=spec.api_key or "EMPTY",
                      is_chat_model=spec.is_chat_model)


def read_counters(backend) -> Optional[TokenCounts]:
    """The engine's cumulative counters (local runtime and our server), or the OpenAI backend's
    token usage (no cache or jump-forward counts); None if the backend reports nothing."""
    usage = getattr(backend, "token_usage", None)
    if usage is not None:
        return TokenCounts(usage.prompt_tokens, 0, usage.completion_tokens, 0, has_cache_counts=False)
    try:
        states = (backend.get_server_info() or {}).get("internal_states") or []
    except Exception as e:  # a server without /server_info: run on, without counters
        print(f"[bench] no engine counters from this backend: {e}")
        return None
    if not states:
        return None
    st = states[0]
    return TokenCounts(int(st.get("prompt_tokens_total", 0)), int(st.get("cached_prompt_tokens_total", 0)),
                       int(st.get("num_generated_tokens", 0)), int(st.get("num_jump_forward_tokens", 0)))


def _run_one(workload: Workload, backend, arguments: dict) -> tuple[Any, float]:
    t0 = time.perf_counter()
    state = workload.program.run(**arguments, backend=backend, **workload.sampling)
    state.sync()
    if state.error() is not None:
        raise state.error()
    return state, time.perf_counter() - t0


def _precache(workload: Workload, backend) -> None:
    """run_batch's precache step (sgl.global_config.enable_precache_with_tracing)."""
    from sgl_lang import global_config
    if not global_config.enable_precache_with_tracing:
        return
    try:
        workload.program.cache(backend)
    except Exception as e:  # a body that cannot be traced runs without the precache
        print(f"[bench] {workload.name}: precache skipped ({type(e).__name__}: {e})")


def run_workload(workload: Workload, backend, *, num_requests: int, parallel: int, config: str,
                 seed: int = 0, progress_bar: bool = True, flush_first: bool = True,
                 precache: bool = True) -> RunMetrics:
    """Run `num_requests` programs, at most `parallel` at a time, as `run_batch` does: first warm
    the cache with the program's constant prefix (found by tracing), then the thread pool. Each
    run starts with an empty prefix cache (flush), so the first miss is part of what is measured."""
    batch = workload.make_batch(num_requests, seed)
    if flush_first:
        backend.flush_cache()  # False where the backend has no cache to flush (OpenAI)
    before = read_counters(backend)
    latencies, num_valid, errors = [], 0, []
    bar = None
    if progress_bar:
        from tqdm import tqdm
        bar = tqdm(total=len(batch), desc=f"{workload.name} [{config}]", leave=False)
    t0 = time.perf_counter()
    if precache and len(batch) > 1:
        _precache(workload, backend)
    with ThreadPoolExecutor(max(1, min(parallel, len(batch)))) as pool:
        futures = {pool.submit(_run_one, workload, backend, args): args for args in batch}
        for future in as_completed(futures):
            try:
                state, latency = future.result()
            except Exception as e:  # recorded and reported, never hidden: see num_errors / first_error
                errors.append(f"{type(e).__name__}: {e}")
            else:
                latencies.append(latency)
                num_valid += bool(workload.is_valid(state, futures[future]))
            if bar is not None:
                bar.update(1)
    wall = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    after = read_counters(backend)
    tokens = after - before if after is not None and before is not None else None
    return RunMetrics(workload.name, config, len(batch), num_valid, len(errors), wall, tokens, latencies,
                      errors[0][:300] if errors else "")
