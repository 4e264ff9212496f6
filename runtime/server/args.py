"""ServerArgs (HTTP-only flags) and the command-line parser: every EngineConfig field becomes a
`--flag`, generated from the dataclass so a new engine flag is a server flag at once."""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..config import (ATTENTION_BACKENDS, DTYPES, GRAMMAR_BACKENDS, SCHEDULE_POLICIES, ConfigError,
                      EngineConfig)

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# Help text of each engine flag (the dataclass carries names and defaults, these carry meaning).
ENGINE_FLAG_HELP = {
    "model_path": "HF-style model folder or .gguf file; omitted: the default model (SmolLM2-135M-Instruct)",
    "tokenizer_path": "tokenizer folder if it differs from the model folder",
    "served_model_name": "model name reported by /v1/models and accepted in OpenAI requests",
    "dtype": f"weight/activation dtype, one of {DTYPES}",
    "device": "auto, cpu or cuda[:N]",
    "context_length": "cap the model's context window (tokens)",
    "mem_fraction_static": "GPU: fraction of device memory for weights + KV cache",
    "kv_cache_bytes": "CPU: byte budget of the KV cache",
    "max_total_tokens": "KV pool size in tokens (overrides the memory budget)",
    "grammar_compile_timeout_s": "fail a request whose grammar is still compiling after this many seconds",
    "quantization": "int8: weight-only int8 linear layers on CPU (about half the bytes read per token)",
    "max_running_requests": "most requests decoded together in one batch",
    "max_queued_requests": "most requests waiting for admission",
    "chunked_prefill_size": "prefill token budget per step (<= 0 disables chunking)",
    "max_prefill_tokens": "most prompt tokens prefilled in one step",
    "schedule_policy": f"admission order, one of {SCHEDULE_POLICIES} (lpm: longest cached prefix first)",
    "disable_radix_cache": "do not reuse KV of shared prompt prefixes",
    "grammar_backend": f"constrained-decoding library, one of {GRAMMAR_BACKENDS}",
    "disable_jump_forward": "do not jump over forced grammar tokens",
    "attention_backend": f"attention implementation, one of {ATTENTION_BACKENDS}",
    "prefill_attention_backend": "attention of prefill and mixed batches if not attention_backend (e.g. flashinfer)",
    "decode_attention_backend": "attention of decode batches if not attention_backend",
    "cuda_graph_max_bs": "largest decode batch captured in a CUDA graph",
    "cuda_graph_max_prefill_tokens": "prefills up to this many tokens replay CUDA graphs where that is faster than eager (0: eager)",
    "disable_cuda_graph": "run decode and prefill eagerly on CUDA",
    "disable_pdl": "launch the decode graphs' Triton kernels without programmatic dependent launch",
    "decode_gemm": "decode GEMMs of 17-64 rows: auto (time cuBLAS vs the Triton kernel at start-up) / triton / cublas",
    "skip_warmup": "CUDA: skip the start-up requests that compile the Triton kernels a first request needs",
    "overlap_schedule": "auto (on for CUDA) / on / off: schedule step N+1 while step N runs on the device",
    "num_threads": "torch intra-op threads on CPU",
    "tp_size": "tensor parallelism: shard the model over this many devices (one process each)",
    "load_format": "auto: read the weights; dummy: seeded random weights from config.json (benchmarks)",
    "random_seed": "seed of the sampler",
    "log_level": f"engine log level, one of {LOG_LEVELS}",
}


@dataclass(frozen=True)
class ServerArgs:
    host: str = "127.0.0.1"
    port: int = 30000
    api_key: Optional[str] = None
    max_request_bytes: int = 16 * 1024 * 1024
    max_concurrent_requests: int = 1024
    graceful_shutdown_timeout: float = 30.0
    log_level: str = "warning"

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in [0, 65535], got {self.port}")
        if self.max_request_bytes < 1024:
            raise ConfigError(f"max_request_bytes must be >= 1024, got {self.max_request_bytes}")
        if self.max_concurrent_requests < 1:
            raise ConfigError(f"max_concurrent_requests must be >= 1, got {self.max_concurrent_requests}")
        if not self.graceful_shutdown_timeout >= 0:
            raise ConfigError(f"graceful_shutdown_timeout must be >= 0 seconds, got {self.graceful_shutdown_timeout}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {LOG_LEVELS}, got {self.log_level!r}")


SERVER_FLAG_HELP = {
    "host": "bind address (default loopback only)",
    "port": "TCP port",
    "api_key": "require `Authorization: Bearer KEY` on every route except /health",
    "max_request_bytes": "reject request bodies larger than this (HTTP 413)",
    "max_concurrent_requests": "requests in flight at once; more get HTTP 503",
    "graceful_shutdown_timeout": "on SIGTERM/SIGINT, seconds to let in-flight requests finish before "
                                 "aborting them (exit code 0 either way)",
    "log_level": f"server and engine log level, one of {LOG_LEVELS}",
}


def _flag_type(annotation: Any) -> Any:
    """The argparse type of a dataclass field annotation (string annotations, Optional[X])."""
    hint = {"int": int, "float": float, "str": str, "bool": bool}
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    for name, t in hint.items():
        if text in (name, f"Optional[{name}]", f"typing.Optional[{name}]"):
            return t
    args = typing.get_args(annotation)
    if args:
        return next(a for a in args if a is not type(None))
    return str


def _add_fields(parser: argparse.ArgumentParser, cls, help_text: dict, skip: Sequence[str] = ()) -> None:
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name == "extra":
            continue
        flag = "--" + f.name.replace("_", "-")
        t = _flag_type(f.type)
        default = f.default if f.default is not dataclasses.MISSING else None
        doc = f"{help_text.get(f.name, f.name)} (default: {default})"
        if t is bool:
            parser.add_argument(flag, dest=f.name, action="store_true", default=default, help=doc)
        else:
            parser.add_argument(flag, dest=f.name, type=t, default=default, help=doc)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgl-lang-server",
        description="Serve a model over HTTP: SGLang's native /generate plus OpenAI-compatible /v1 routes.")
    engine = parser.add_argument_group("engine")
    _add_fields(engine, EngineConfig, ENGINE_FLAG_HELP, skip=("log_level",))
    server = parser.add_argument_group("server")
    _add_fields(server, ServerArgs, SERVER_FLAG_HELP)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> tuple[dict, ServerArgs]:
    """argv -> (engine flags for Engine(**flags), ServerArgs). Raises ConfigError on bad values."""
    ns = vars(build_parser().parse_args(argv))
    server_names = {f.name for f in dataclasses.fields(ServerArgs)}
    server = ServerArgs(**{k: v for k, v in ns.items() if k in server_names})
    engine = {k: v for k, v in ns.items() if k not in server_names}
    engine["log_level"] = server.log_level
    EngineConfig.from_kwargs(**engine)  # validate now, before the model loads
    return engine, server
