"""SamplingParams: one request's sampling options, SGLang's names, validated on construction."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Optional


class InvalidSamplingParams(ValueError):
    """A sampling parameter is out of range or of the wrong type; the message names the field."""


_MAX_STOP_STRINGS = 64


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    min_new_tokens: int = 0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    no_stop_trim: bool = False
    regex: Optional[str] = None
    json_schema: Optional[str] = None
    ebnf: Optional[str] = None
    seed: Optional[int] = None
    n: int = 1
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        def bad(name, msg):
            raise InvalidSamplingParams(f"sampling_params.{name}: {msg}")

        def num(name, v, kinds=(int, float)):
            if isinstance(v, bool) or not isinstance(v, kinds):
                bad(name, f"expected a number, got {type(v).__name__} {v!r}")

        for name in ("max_new_tokens", "min_new_tokens", "top_k", "n"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                bad(name, f"expected an integer, got {type(v).__name__} {v!r}")
        for name in ("temperature", "top_p", "min_p", "frequency_penalty", "presence_penalty",
                     "repetition_penalty"):
            num(name, getattr(self, name))
        if self.max_new_tokens < 0:
            bad("max_new_tokens", f"must be >= 0, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            bad("min_new_tokens", f"must satisfy 0 <= min_new_tokens <= max_new_tokens "
                                  f"({self.max_new_tokens}), got {self.min_new_tokens}")
        if self.temperature < 0 or self.temperature != self.temperature:
            bad("temperature", f"must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            bad("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.top_k == 0 or self.top_k < -1:
            bad("top_k", f"must be -1 (disabled) or >= 1, got {self.top_k}")
        if not 0 <= self.min_p <= 1:
            bad("min_p", f"must be in [0, 1], got {self.min_p}")
        for name in ("frequency_penalty", "presence_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                bad(name, f"must be in [-2, 2], got {getattr(self, name)}")
        if not 0 < self.repetition_penalty <= 2:
            bad("repetition_penalty", f"must be in (0, 2], got {self.repetition_penalty}")
        if self.n < 1:
            bad("n", f"must be >= 1, got {self.n}")
        if len(self.stop) > _MAX_STOP_STRINGS:
            bad("stop", f"at most {_MAX_STOP_STRINGS} stop strings, got {len(self.stop)}")
        for s in self.stop:
            if not isinstance(s, str) or not s:
                bad("stop", f"stop strings must be non-empty strings, got {s!r}")
        for t in self.stop_token_ids:
            if isinstance(t, bool) or not isinstance(t, int) or t < 0:
                bad("stop_token_ids", f"token ids must be non-negative integers, got {t!r}")
        specs = [n for n in ("regex", "json_schema", "ebnf") if getattr(self, n)]
        if len(specs) > 1:
            bad(specs[1], f"regex, json_schema and ebnf are mutually exclusive; got {specs}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            bad("seed", f"expected an integer, got {self.seed!r}")

    # (cached: the engine asks these of every request at every step)
    @cached_property
    def is_greedy(self) -> bool:
        return self.temperature < 1e-6 or self.top_k == 1

    @cached_property
    def has_penalties(self) -> bool:
        return bool(self.frequency_penalty or self.presence_penalty or self.repetition_penalty != 1.0)

    @cached_property
    def is_plain_greedy(self) -> bool:
        """Greedy with nothing that makes its sampling tensors depend on the request or the step
        (seed, min_new_tokens, penalties)."""
        return self.is_greedy and self.seed is None and self.min_new_tokens == 0 and not self.has_penalties

    @property
    def grammar_spec(self) -> Optional[tuple[str, str]]:
        """("regex"|"json_schema"|"ebnf", text) or None."""
        for kind in ("json_schema", "regex", "ebnf"):
            v = getattr(self, kind)
            if v:
                return kind, v
        return None

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "SamplingParams":
        """Build from a request dict (SGLang names). Unknown keys raise, naming them."""
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise InvalidSamplingParams(f"sampling_params: expected an object, got {type(d).__name__}")
        d = dict(d)
        aliases = {"sampling_seed": "seed", "max_tokens": "max_new_tokens", "min_tokens": "min_new_tokens"}
        for a, b in aliases.items():
            if a in d:
                d[b] = d.pop(a)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InvalidSamplingParams(f"sampling_params: unknown field(s) {unknown}")
        if isinstance(d.get("stop"), str):
            d["stop"] = (d["stop"],)
        for k in ("stop", "stop_token_ids"):
            if d.get(k) is None:
                d.pop(k, None)
            elif isinstance(d[k], (list, tuple, set)):
                d[k] = tuple(d[k])
            else:
                raise InvalidSamplingParams(f"sampling_params.{k}: expected a list, got {d[k]!r}")
        for k in ("regex", "json_schema", "ebnf"):
            if d.get(k) == "":
                d[k] = None
        d = {k: v for k, v in d.items() if v is not None or k in ("regex", "json_schema", "ebnf", "seed")}
        return cls(**d)
