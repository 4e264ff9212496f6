"""EngineConfig: every engine flag, validated once, frozen. Names follow SGLang's ServerArgs."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

GRAMMAR_BACKENDS = ("auto", "xgrammar", "outlines", "llguidance", "none")
ATTENTION_BACKENDS = ("auto", "torch", "triton", "flashinfer")
DTYPES = ("auto", "float32", "bfloat16", "float16")
SCHEDULE_POLICIES = ("lpm", "fcfs")
LOAD_FORMATS = ("auto", "dummy")


class ConfigError(ValueError):
    """An engine flag has an invalid value."""


@dataclass(frozen=True)
class EngineConfig:
    model_path: Optional[str] = None  # None: the default model (SmolLM2-135M-Instruct GGUF)
    tokenizer_path: Optional[str] = None
    served_model_name: Optional[str] = None
    dtype: str = "auto"  # auto: bfloat16 on CPU with bf16 support and on CUDA
    device: str = "auto"  # auto: cuda if available else cpu
    context_length: Optional[int] = None
    # Memory: GPU uses a fraction of total memory for weights + KV; CPU uses a byte budget for KV.
    mem_fraction_static: float = 0.85
    kv_cache_bytes: int = 512 * 1024 * 1024
    max_total_tokens: Optional[int] = None  # overrides the budget when set
    max_running_requests: int = 64
    max_queued_requests: int = 4096
    chunked_prefill_size: int = 2048  # token budget per prefill step; <=0 disables chunking
    max_prefill_tokens: int = 8192
    schedule_policy: str = "lpm"
    disable_radix_cache: bool = False
    grammar_backend: str = "auto"
    disable_jump_forward: bool = False
    grammar_compile_timeout_s: float = 30.0  # a request whose grammar is still compiling after this fails
    attention_backend: str = "auto"
    # None: attention_backend. Otherwise the backend of prefill (and mixed) batches / of decode
    # batches, e.g. flashinfer's prefill with triton's decode and its CUDA graphs
    prefill_attention_backend: Optional[str] = None
    decode_attention_backend: Optional[str] = None
    quantization: Optional[str] = None  # "int8": weight-only int8 linears (CPU; halves bytes read per token)
    cuda_graph_max_bs: int = 64
    # prefills of up to this many tokens replay CUDA graphs where that is faster (0: always eager)
    cuda_graph_max_prefill_tokens: int = 8192
    disable_cuda_graph: bool = False
    # decode GEMMs of 17-64 rows: "auto" times cuBLAS vs kernels/skinny_gemm.py at start-up (CUDA,
    # single rank, bf16/fp16) and keeps the faster; "triton" / "cublas" force one
    decode_gemm: str = "auto"
    # decode graphs launch their Triton kernels with programmatic dependent launch (Hopper and
    # later; kernels/pdl.py): a kernel's programs start while the previous one finishes
    disable_pdl: bool = False
    skip_warmup: bool = False  # CUDA: no start-up requests that compile Triton kernels (runtime/warmup.py)
    # Overlapped scheduling: the host schedules step N+1 and processes step N's tokens while the
    # device runs step N+1. "auto": on for CUDA, off on CPU (one set of cores does both anyway).
    overlap_schedule: str = "auto"
    num_threads: Optional[int] = None  # torch intra-op threads on CPU
    tp_size: int = 1  # tensor parallelism: one process per device (gloo on CPU, NCCL on GPUs)
    load_format: str = "auto"  # "dummy": config.json only, seeded random weights built per rank on its device
    random_seed: int = 0
    log_level: str = "warning"
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        def check(ok: bool, msg: str):
            if not ok:
                raise ConfigError(msg)

        check(self.dtype in DTYPES, f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        check(self.grammar_backend in GRAMMAR_BACKENDS,
              f"grammar_backend must be one of {GRAMMAR_BACKENDS}, got {self.grammar_backend!r}")
        check(self.attention_backend in ATTENTION_BACKENDS,
              f"attention_backend must be one of {ATTENTION_BACKENDS}, got {self.attention_backend!r}")
        for name in ("prefill_attention_backend", "decode_attention_backend"):
            value = getattr(self, name)
            check(value is None or value in ATTENTION_BACKENDS,
                  f"{name} must be None or one of {ATTENTION_BACKENDS}, got {value!r}")
        check(self.quantization in (None, "int8"),
              f"quantization must be None or 'int8', got {self.quantization!r}")
        check(self.overlap_schedule in ("auto", "on", "off"),
              f"overlap_schedule must be 'auto', 'on' or 'off', got {self.overlap_schedule!r}")
        check(self.tp_size >= 1, f"tp_size must be >= 1, got {self.tp_size}")
        check(self.load_format in LOAD_FORMATS,
              f"load_format must be one of {LOAD_FORMATS}, got {self.load_format!r}")
        check(self.tp_size == 1 or self.quantization is None,
              f"quantization={self.quantization!r} needs tp_size 1, got tp_size={self.tp_size}")
        check(self.schedule_policy in SCHEDULE_POLICIES,
              f"schedule_policy must be one of {SCHEDULE_POLICIES}, got {self.schedule_policy!r}")
        check(0.0 < self.mem_fraction_static < 1.0,
              f"mem_fraction_static must be in (0, 1), got {self.mem_fraction_static}")
        check(self.grammar_compile_timeout_s > 0,
              f"grammar_compile_timeout_s must be > 0, got {self.grammar_compile_timeout_s}")
        check(self.kv_cache_bytes > 0, f"kv_cache_bytes must be > 0, got {self.kv_cache_bytes}")
        check(self.max_total_tokens is None or self.max_total_tokens >= 16,
              f"max_total_tokens must be >= 16, got {self.max_total_tokens}")
        check(self.max_running_requests >= 1,
              f"max_running_requests must be >= 1, got {self.max_running_requests}")
        check(self.decode_gemm in ("auto", "triton", "cublas"),
              f"decode_gemm must be one of auto, triton, cublas, got {self.decode_gemm!r}")
        check(self.cuda_graph_max_prefill_tokens >= 0,
              f"cuda_graph_max_prefill_tokens must be >= 0, got {self.cuda_graph_max_prefill_tokens}")
        check(self.max_prefill_tokens >= 16, f"max_prefill_tokens must be >= 16, got {self.max_prefill_tokens}")
        check(self.context_length is None or self.context_length >= 16,
              f"context_length must be >= 16, got {self.context_length}")
        check(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda"),
              f"device must be auto, cpu or cuda[:N], got {self.device!r}")

    @classmethod
    def from_kwargs(cls, **kwargs) -> "EngineConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ConfigError(f"unknown engine flag(s) {unknown}; known flags: {sorted(names - {'extra'})}")
        return cls(**kwargs)

    @property
    def chunk_size(self) -> int:
        """Prefill token budget per step (chunked prefill)."""
        return self.chunked_prefill_size if self.chunked_prefill_size > 0 else self.max_prefill_tokens

    @property
    def max_step_tokens(self) -> int:
        """Most tokens one step carries: a full prefill chunk plus up to min(max_running_requests,
        cuda_graph_max_bs) decodes riding with it (more decodes than that take their share of the
        chunk). The largest prefill CUDA graph is captured at this size."""
        return self.chunk_size + min(self.max_running_requests, self.cuda_graph_max_bs)

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_dtype(self):
        import torch
        if self.dtype != "auto":
            return getattr(torch, self.dtype)
        return torch.bfloat16
