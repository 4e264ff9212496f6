"""GlobalConfig: process-wide settings of the frontend (SGLang's `sgl.global_config`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass
class GlobalConfig:
    """Mutable on purpose: users set `sgl.global_config.verbosity = 2` and the like."""
    #: 2 prints each program's final text after it runs
    verbosity: int = 0
    #: the backend used when run() gets none; set by sgl.set_default_backend
    default_backend: Optional[Any] = None
    skip_special_tokens_in_output: bool = True
    spaces_between_special_tokens_in_out: bool = True
    #: run_batch traces the program and warms the prefix cache with its constant leading text
    enable_precache_with_tracing: bool = True
    enable_parallel_encoding: bool = True
    #: run_batch with more than one item warms the cache only when the constant prefix is longer
    precache_min_chars: int = 64


global_config = GlobalConfig()
