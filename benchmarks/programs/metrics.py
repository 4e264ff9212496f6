"""RunMetrics: what one benchmark run measured, and how it is computed from raw observations."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]; nan for no values."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class TokenCounts:
    """Counters read before and after a run; their difference is the run's work."""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    jump_forward_tokens: int = 0
    has_cache_counts: bool = True  # False: the backend reports usage only (OpenAI), no cache hits

    def __sub__(self, other: "TokenCounts") -> "TokenCounts":
        return TokenCounts(self.prompt_tokens - other.prompt_tokens, self.cached_tokens - other.cached_tokens,
                           self.completion_tokens - other.completion_tokens,
                           self.jump_forward_tokens - other.jump_forward_tokens,
                           self.has_cache_counts and other.has_cache_counts)

    @staticmethod
    def total(counts: list["TokenCounts"]) -> "TokenCounts":
        return TokenCounts(sum(c.prompt_tokens for c in counts), sum(c.cached_tokens for c in counts),
                           sum(c.completion_tokens for c in counts), sum(c.jump_forward_tokens for c in counts),
                           all(c.has_cache_counts for c in counts))


@dataclass(frozen=True)
class RunMetrics:
    workload: str
    config: str  # "cache on", "cache off", "jump-forward off", "openai @ url", ...
    num_programs: int
    num_valid: int  # programs whose output passed the workload's check
    num_errors: int
    wall_s: float
    tokens: Optional[TokenCounts]  # None where the backend reports no counters
    latencies_s: list[float] = field(default_factory=list, repr=False)  # per finished program
    first_error: str = ""

    @property
    def programs_per_s(self) -> float:
        """Finished programs (failed ones excluded) per second of wall time."""
        return (self.num_programs - self.num_errors) / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def output_tokens_per_s(self) -> Optional[float]:
        return self.tokens.completion_tokens / self.wall_s if self.tokens and self.wall_s > 0 else None

    @property
    def total_tokens_per_s(self) -> Optional[float]:
        """Prompt + output tokens per second (cached prompt tokens count: the program used them)."""
        if not self.tokens or self.wall_s <= 0:
            return None
        return (self.tokens.prompt_tokens + self.tokens.completion_tokens) / self.wall_s

    @property
    def cache_hit_rate(self) -> Optional[float]:
        if not self.tokens or not self.tokens.has_cache_counts or self.tokens.prompt_tokens <= 0:
            return None
        return self.tokens.cached_tokens / self.tokens.prompt_tokens

    def latency(self, q: float) -> float:
        return percentile(self.latencies_s, q)

    def row(self) -> list:
        """The cells of the summary table (see HEADERS)."""
        def num(v, fmt):
            return "n/a" if v is None else format(v, fmt)
        return [self.workload, self.config, self.num_programs, f"{self.num_valid}/{self.num_programs}",
                f"{self.programs_per_s:.3f}", num(self.output_tokens_per_s, ".1f"),
                num(self.total_tokens_per_s, ".0f"), f"{self.latency(50):.2f}", f"{self.latency(90):.2f}",
                f"{self.latency(99):.2f}", num(self.cache_hit_rate, ".1%"),
                num(self.tokens.jump_forward_tokens if self.tokens and self.tokens.has_cache_counts else None, "d")]

    @classmethod
    def pooled(cls, runs: list["RunMetrics"]) -> "RunMetrics":
        """Repeats of one (workload, config) as one run: programs, wall time, tokens and latencies
        summed or concatenated, so programs/s is total programs over total time."""
        first = runs[0]
        tokens = None
        if all(r.tokens is not None for r in runs):
            tokens = TokenCounts.total([r.tokens for r in runs])
        return cls(first.workload, first.config, sum(r.num_programs for r in runs), sum(r.num_valid for r in runs),
                   sum(r.num_errors for r in runs), sum(r.wall_s for r in runs), tokens,
                   [x for r in runs for x in r.latencies_s], next((r.first_error for r in runs if r.first_error), ""))

    @classmethod
    def from_dict(cls, d: dict) -> "RunMetrics":
        """The inverse of to_dict (derived fields are recomputed, not read)."""
        tokens = TokenCounts(**d["tokens"]) if d.get("tokens") is not None else None
        return cls(d["workload"], d["config"], d["num_programs"], d["num_valid"], d["num_errors"], d["wall_s"],
                   tokens, list(d.get("latencies_s", [])), d.get("first_error", ""))

    def to_dict(self) -> dict:
        return {"workload": self.workload, "config": self.config, "num_programs": self.num_programs,
                "num_valid": self.num_valid, "num_errors": self.num_errors, "wall_s": self.wall_s,
                "programs_per_s": self.programs_per_s, "output_tokens_per_s": self.output_tokens_per_s,
                "total_tokens_per_s": self.total_tokens_per_s, "cache_hit_rate": self.cache_hit_rate,
                "p50_s": self.latency(50), "p90_s": self.latency(90), "p99_s": self.latency(99),
                "tokens": None if self.tokens is None else vars(self.tokens), "latencies_s": self.latencies_s,
                "first_error": self.first_error}


HEADERS = ["workload", "config", "programs", "valid", "programs/s", "out tok/s", "total tok/s",
           "p50 s", "p90 s", "p99 s", "hit rate", "jump-fwd tok"]
