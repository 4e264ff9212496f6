"""RouterConfig: every router flag, validated once, frozen."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

POLICIES = ("prefix", "round_robin", "least_load")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class RouterConfigError(ValueError):
    """A router flag has an invalid value."""


@dataclass(frozen=True)
class RouterConfig:
    worker_urls: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 30000
    policy: str = "prefix"
    # prefix policy: follow the cache when at least this fraction of the prompt was seen by a worker
    cache_threshold: float = 0.5
    # ... unless loads are too uneven: max - min > abs AND max > rel * min -> least load instead
    balance_abs_threshold: int = 8
    balance_rel_threshold: float = 1.5
    chunk_len: int = 16  # characters (text) or tokens (ids) per prefix-tree node
    max_chunks_per_worker: int = 65536  # prefix-tree budget per worker (~1M chars at 16)
    health_check_interval_s: float = 5.0
    health_check_timeout_s: float = 2.0
    connect_timeout_s: float = 5.0
    request_timeout_s: Optional[float] = None  # None: a generation may take as long as it takes
    max_retries: int = 1  # other workers tried when one fails before anything was streamed
    log_level: str = "warning"

    def __post_init__(self):
        def check(ok: bool, msg: str):
            if not ok:
                raise RouterConfigError(msg)

        check(len(self.worker_urls) >= 1, "at least one worker URL is needed (--worker URL or --dp-size N)")
        for url in self.worker_urls:
            check(url.startswith(("http://", "https://")), f"worker URL must start with http:// or https://, got {url!r}")
        check(len(set(self.worker_urls)) == len(self.worker_urls), f"duplicate worker URLs in {list(self.worker_urls)}")
        check(self.policy in POLICIES, f"policy must be one of {POLICIES}, got {self.policy!r}")
        check(0.0 <= self.cache_threshold <= 1.0, f"cache_threshold must be in [0, 1], got {self.cache_threshold}")
        check(self.balance_abs_threshold >= 0, f"balance_abs_threshold must be >= 0, got {self.balance_abs_threshold}")
        check(self.balance_rel_threshold >= 1.0, f"balance_rel_threshold must be >= 1, got {self.balance_rel_threshold}")
        check(self.chunk_len >= 1, f"chunk_len must be >= 1, got {self.chunk_len}")
        check(self.max_chunks_per_worker >= 1, f"max_chunks_per_worker must be >= 1, got {self.max_chunks_per_worker}")
        check(self.health_check_interval_s > 0, f"health_check_interval_s must be > 0, got {self.health_check_interval_s}")
        check(self.max_retries >= 0, f"max_retries must be >= 0, got {self.max_retries}")
        check(0 <= self.port <= 65535, f"port must be in [0, 65535], got {self.port}")
        check(self.log_level in LOG_LEVELS, f"log_level must be one of {LOG_LEVELS}, got {self.log_level!r}")
