"""Engine: the public entry point of the runtime. add_request / step / abort; the background loop
that lets many threads share one continuously batched model is EngineLoop (engine_loop.py).

    step():  batch = scheduler.schedule()      # who runs, how many tokens each
             out = runner.forward(batch)        # model + sampling
             scheduler.commit(batch); processor.process(batch, out)
             scheduler.finish_step(batch)       # free / cache finished requests
"""
from __future__ import annotations

import queue
from concurrent.futures import Future
import threading
import time
from typing import Any, Optional

import torch

from .config import EngineConfig
from .errors import EngineStopped, InvalidRequest
from .model_runner import ModelRunner
from .output_processor import OutputProcessor
from .request import Req
from .engine_loop import EngineLoop
from .generate_api import GenerateAPI
from .scheduler import Scheduler
from .torch_worker import TorchWorker


class Engine(GenerateAPI, EngineLoop):
    def __init__(self, model_path: Optional[str] = None, **flags: Any):
        self.config = EngineConfig.from_kwargs(model_path=model_path, **flags)
        t0 = time.perf_counter()
        # Every torch call of the engine (loading, then the loop) runs on this one thread: on CPU,
        # OpenMP keeps a thread team per calling thread, and two teams on a small box (one left
        # by loading on the caller's thread, one for the loop) cost about a third of decode speed.
        self._worker = TorchWorker()
        self._worker.submit(self._load).result()
        self._grammar = None
        self._inbox: "queue.SimpleQueue[tuple[str, Any]]" = queue.SimpleQueue()
        self._wakeup = threading.Event()
        self._stopped = False  # the loop is to stop (shutdown, or a dead tensor-parallel peer)
        self._shut_down = False  # shutdown() ran
        self._loop_error: Optional[BaseException] = None
        self._loop_future: Optional[Future] = None
        self._lock = threading.Lock()
        self.num_steps = 0
        self.num_generated_tokens = 0
        self.num_overlapped_steps = 0  # steps whose read-back waited for the next launch
        if self.device.startswith("cuda") and not self.config.skip_warmup:
            from .warmup import warm_up
            try:
                warm_up(self)
            except BaseException:
                self.shutdown()
                raise
        self.load_time = time.perf_counter() - t0

    def _load(self) -> None:
        cfg = self.config
        self.device = cfg.resolved_device()
        self.dtype = cfg.resolved_dtype()
        if self.device == "cpu" and cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        torch.manual_seed(cfg.random_seed)
        from .models.loader import load_model, load_tokenizer
        if cfg.model_path is None:
            from .default_model import default_model_dir
            self.model_dir = default_model_dir()
        else:
            self.model_dir = cfg.model_path
        self.tp = None  # rank 0's TPDriver: spawns and feeds ranks 1..N-1 (docs/deployment.md)
        if cfg.tp_size > 1:
            from .distributed.tp_driver import TPDriver
            self.tp = TPDriver(cfg, self.model_dir, self.device)
            self.tp.on_stuck = self._fail_stuck
        self.loaded = load_model(self.model_dir, self.dtype, self.device, tp_rank=0, tp_size=cfg.tp_size,
                                 load_format=cfg.load_format, seed=cfg.random_seed)
        if cfg.quantization == "int8":
            from .layers.quantization import quantize_int8_weight_only
            quantize_int8_weight_only(self.loaded.model)
        else:
            from .layers.cpu_packed_linear import pack_linears_for_cpu
            pack_linears_for_cpu(self.loaded.model)  # bf16 on CPU only; a no-op elsewhere
        self.tokenizer = load_tokenizer(cfg.tokenizer_path or self.model_dir)
        self.max_context_len = min(cfg.context_length or self.loaded.max_context_len,
                                   self.loaded.max_context_len)
        self.eos_token_ids = self._eos_ids()
        self.runner = ModelRunner(cfg, self.loaded, self.device, self.dtype, self.eos_token_ids)
        self.runner.batch_sender = self.tp
        self.scheduler = Scheduler(cfg, self.runner.pool, self.max_context_len, table=self.runner.table)
        self.processor = OutputProcessor(self.tokenizer, self.eos_token_ids, self.max_context_len,
                                         jump_forward=not cfg.disable_jump_forward)
        self._overlap = cfg.overlap_schedule == "on" or (cfg.overlap_schedule == "auto" and self.device.startswith("cuda"))
        self._inflight = None  # the launched step not yet read back (overlap)

    # ---- model facts -----------------------------------------------------------------------
    def _eos_ids(self) -> tuple[int, ...]:
        ids = set()
        gen_eos = getattr(getattr(self.loaded, "generation_config", None), "eos_token_id", None)
        cfg_eos = getattr(self.loaded.hf_config, "eos_token_id", None)
        for v in (gen_eos, cfg_eos, self.tokenizer.eos_token_id):
            if isinstance(v, int):
                ids.add(v)
            elif isinstance(v, (list, tuple)):
                ids.update(int(x) for x in v)
        return tuple(sorted(ids))

    @property
    def grammar(self):
        """The GrammarRegistry, built on first use (it loads the grammar libraries)."""
        if self._grammar is None:
            if self.config.grammar_backend == "none":
                raise InvalidRequest("constrained decoding (regex / json_schema / ebnf) is disabled: "
                                     "the engine runs with grammar_backend='none'")
            from .grammar.registry import GrammarRegistry
            self._grammar = GrammarRegistry(self.tokenizer, self.loaded.vocab_size,
                                            stop_token_ids=list(self.eos_token_ids),
                                            backend=self.config.grammar_backend)
        return self._grammar

    def add_request(self, req: Req) -> None:
        """Queue a request (thread-safe); outputs arrive through req.on_output."""
        if self._loop_error is not None or self._stopped:
            raise EngineStopped(f"engine is not running: {self._loop_error!r}")
        self._inbox.put(("add", req))
        self._ensure_loop()
        self._wakeup.set()

    def abort(self, rid: str) -> None:
        self._inbox.put(("abort", rid))
        self._wakeup.set()

    # ---- the step ------------------------------------------------------------------------------
    def step(self) -> list[Req]:
        """One scheduling step; returns the requests that finished in it.

        With overlap on, the step launched here is read back by the next call: this call schedules
        and launches step N+1 (whose decode inputs are step N's tokens, still on the device), then
        processes step N's tokens on the host while the device runs N+1."""
        self._drain_inbox()
        self._resolve_grammars()
        prev, self._inflight = self._inflight, None
        if prev is not None and not self._can_run_ahead_of(prev):
            done = self._complete(prev)
            prev = None
        else:
            done = []
        batch = self.scheduler.schedule()
        while self.scheduler.dropped:
            self.processor.emit(self.scheduler.dropped.pop())
        if batch is None:
            return done + (self._complete(prev) if prev is not None else [])
        early: list = []  # set when the runner completed prev itself, before sampling

        def complete_prev() -> None:
            self.scheduler.commit(batch)  # first: a request prev ends releases this step's slot too
            early.append(self._complete(prev))

        handle = self.runner.launch(batch, prev, complete_prev if prev is not None else None)
        if not early:
            self.scheduler.commit(batch)
        for j, req in enumerate(handle.sampled_reqs):  # their tokens are on the device until read
            req.num_pending += 1
            req.pending_row = j
        if prev is not None:
            done += early[0] if early else self._complete(prev)
        if self._overlap and handle.can_defer:
            self._inflight = handle
            self.num_overlapped_steps += 1
        else:
            done += self._complete(handle)
        return done

    def _can_run_ahead_of(self, prev) -> bool:
        """Whether the next step may be scheduled before prev's tokens are read: prev was not
        read back at launch, and the running decodes cannot need a retraction. (Requests whose
        grammar mask or penalties need prev's token get it before sampling: see launch.)"""
        if not prev.can_defer:
            return False
        s = self.scheduler
        return s.pool.num_free + s.cache.evictable_size >= len(s.running)

    def _complete(self, handle) -> list[Req]:
        """Read a launched step back and apply it: tokens, stop checks, outputs, releases."""
        out = self.runner.collect(handle)
        for req in handle.sampled_reqs:
            req.num_pending -= 1
        self.processor.process(handle.batch, out)
        self.num_steps += 1
        self.num_generated_tokens += len(handle.sampling)  # (the reqs out gives a token)
        return self.scheduler.finish_step(handle.batch)

    def _drain_inbox(self) -> None:
        for kind, arg in self._pop_inbox():
            if kind == "add":
                self.scheduler.add(arg)
            elif kind == "abort":
                req = self.scheduler.abort(arg)
                if req is not None:
                    self.processor.emit(req)
            elif kind == "call":
                fn, box, done = arg
                try:
                    box.append(fn())
                except BaseException as e:  # handed back to the calling thread
                    box.append(e)
                done.set()

    def _resolve_grammars(self) -> None:
        """Attach matchers to waiting requests whose grammar compiled; fail those whose compile
        failed or exceeded grammar_compile_timeout_s (a hung compile then blocks nobody)."""
        now = time.perf_counter()
        for req in list(self.scheduler.waiting):
            fut = req.grammar_future
            if fut is None or req.grammar is not None:
                continue
            if not fut.done():
                waited = now - req.created_at
                if waited > self.config.grammar_compile_timeout_s:
                    self._fail_waiting(req, f"grammar compile timed out after {waited:.0f} s "
                                            f"(grammar_compile_timeout_s={self.config.grammar_compile_timeout_s})")
                continue
            try:
                req.grammar = fut.result().new_matcher()
            except Exception as e:
                self._fail_waiting(req, f"grammar compile failed: {e}")
            else:
                req.grammar_future = None

    def _fail_waiting(self, req: Req, message: str) -> None:
        self.scheduler.waiting.remove(req)
        req.error = message
        req.finish({"type": "abort", "message": message})
        self.processor.emit(req)

    # ---- cache & stats ---------------------------------------------------------------------------
    def flush_cache(self) -> bool:
        return self.call_in_loop(self.scheduler.flush_cache)

    def get_stats(self) -> dict:
        def read():
            s = self.scheduler
            return {
                "num_running_reqs": len(s.running),
                "num_waiting_reqs": len(s.waiting),
                "kv_pool_total": self.runner.pool.num_slots,
                "kv_pool_free": self.runner.pool.num_free,
                "kv_pool_usage": 1 - self.runner.pool.num_free / self.runner.pool.num_slots,
                "cached_tokens": s.cache.total_size(),
                "evictable_tokens": s.cache.evictable_size,
                "prompt_tokens_total": s.num_prompt_tokens,
                "cached_prompt_tokens_total": s.num_cached_prompt_tokens,
                "cache_hit_rate": s.num_cached_prompt_tokens / max(1, s.num_prompt_tokens),
                "num_retractions": s.num_retractions,
                "num_steps": self.num_steps,
                "num_generated_tokens": self.num_generated_tokens,
                "num_overlapped_steps": self.num_overlapped_steps,
                "num_graph_steps": self.runner.num_graph_steps,
                "num_prefill_graph_steps": self.runner.num_prefill_graph_steps,
                "num_jump_forward_tokens": self.processor.num_jump_forward_tokens,
            }
        return self.call_in_loop(read)

    def check_integrity(self) -> None:
        self.call_in_loop(self.scheduler.check_integrity)
