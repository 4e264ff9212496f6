"""IR nodes of a program, and GenParams, the backend-neutral sampling parameters."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Optional

REGEX_INT = r"[-+]?[0-9]+[ \n]*"
REGEX_FLOAT = r"[-+]?[0-9]*\.?[0-9]+[ \n]*"
REGEX_BOOL = r"(True|False)"
REGEX_STR = r"\"[\w\d\s]*\""


@dataclass(frozen=True)
class GenParams:
    """Sampling parameters. None means "inherit" until resolved against the program defaults
    from run(); after `resolve` every field a backend reads has a value."""
    max_new_tokens: Optional[int] = None
    min_new_tokens: Optional[int] = None
    n: Optional[int] = None
    stop: Optional[tuple[str, ...]] = None
    stop_token_ids: Optional[tuple[int, ...]] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    min_p: Optional[float] = None
    frequency_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    repetition_penalty: Optional[float] = None
    ignore_eos: Optional[bool] = None
    return_logprob: Optional[bool] = None
    logprob_start_len: Optional[int] = None
    top_logprobs_num: Optional[int] = None
    return_text_in_logprobs: Optional[bool] = None
    dtype: Optional[str] = None  # "int" | "float" | "str" | "bool"
    regex: Optional[str] = None
    json_schema: Optional[str] = None  # a JSON string
    ebnf: Optional[str] = None
    seed: Optional[int] = None

    def merged_over(self, defaults: "GenParams") -> "GenParams":
        """self's non-None fields override `defaults`."""
        return replace(defaults, **{f.name: getattr(self, f.name) for f in fields(self)
                                    if getattr(self, f.name) is not None})

    def to_dict(self) -> dict[str, Any]:
        """Non-None fields, as plain Python values."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


DEFAULT_RUN_PARAMS = GenParams(
    max_new_tokens=128, min_new_tokens=0, n=1, stop=(), stop_token_ids=(), temperature=1.0, top_p=1.0,
    top_k=-1, min_p=0.0, frequency_penalty=0.0, presence_penalty=0.0, repetition_penalty=1.0,
    ignore_eos=False,
)
