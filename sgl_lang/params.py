"""Building GenParams from user arguments (validated once, with named errors), and resolving a
gen's params against the program defaults: dtype -> regex constraint, template stop strings."""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import replace
from typing import Any, Optional

from .errors import InvalidArgument, UnsupportedFeature
from .ir import REGEX_BOOL, REGEX_FLOAT, REGEX_INT, REGEX_STR, GenParams

DTYPE_REGEX = {"int": REGEX_INT, "float": REGEX_FLOAT, "str": REGEX_STR, "bool": REGEX_BOOL}
_DTYPE_STOP = {"int": (" ", "\n"), "float": (" ", "\n")}
_DTYPE_NAMES = {int: "int", float: "float", str: "str", bool: "bool"}


def _int(name: str, v: Any, lo: Optional[int] = None) -> Optional[int]:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidArgument(f"{name} must be an int, got {type(v).__name__} {v!r}")
    if lo is not None and v < lo:
        raise InvalidArgument(f"{name} must be >= {lo}, got {v}")
    return v


def _float(name: str, v: Any, lo: float, hi: float, lo_open: bool = False) -> Optional[float]:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        raise InvalidArgument(f"{name} must be a number, got {type(v).__name__} {v!r}")
    if v < lo or v > hi or (lo_open and v == lo):
        bound = f"{'(' if lo_open else '['}{lo}, {hi}]"
        raise InvalidArgument(f"{name} must be in {bound}, got {v}")
    return float(v)


def _bool(name: str, v: Any) -> Optional[bool]:
    if v is not None and not isinstance(v, bool):
        raise InvalidArgument(f"{name} must be a bool, got {type(v).__name__} {v!r}")
    return v


def normalize_stop(stop: Any) -> Optional[tuple[str, ...]]:
    if stop is None:
        return None
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, (list, tuple)) and all(isinstance(s, str) for s in stop):
        return tuple(stop)
    raise InvalidArgument(f"stop must be a str or a list of str, got {stop!r}")


def normalize_dtype(dtype: Any) -> Optional[str]:
    if dtype is None:
        return None
    name = _DTYPE_NAMES.get(dtype, dtype) if not isinstance(dtype, str) else dtype
    if name not in DTYPE_REGEX:
        raise InvalidArgument(f"dtype must be one of int, float, str, bool (or their names), got {dtype!r}")
    return name


def normalize_regex(regex: Any) -> Optional[str]:
    if regex is None or regex == "":
        return None
    if not isinstance(regex, str):
        raise InvalidArgument(f"regex must be a str, got {type(regex).__name__}")
    try:
        re.compile(regex)
    except re.error as e:
        raise InvalidArgument(f"invalid regex {regex!r}: {e}") from None
    return regex


def normalize_json_schema(schema: Any) -> Optional[str]:
    """A JSON string (SGLang's form); a dict or a pydantic model class is serialised."""
    if schema is None or schema == "":
        return None
    if hasattr(schema, "model_json_schema"):
        schema = schema.model_json_schema()
    if isinstance(schema, dict):
        return json.dumps(schema)
    if not isinstance(schema, str):
        raise InvalidArgument(f"json_schema must be a JSON string or a dict, got {type(schema).__name__}")
    try:
        parsed = json.loads(schema)
    except json.JSONDecodeError as e:
        raise InvalidArgument(f"json_schema is not valid JSON: {e}") from None
    if not isinstance(parsed, (dict, bool)):
        raise InvalidArgument(f"json_schema must describe a JSON schema object, got {parsed!r}")
    return schema


def make_gen_params(*, max_new_tokens=None, min_new_tokens=None, n=None, stop=None, stop_token_ids=None,
                    stop_regex=None, temperature=None, top_p=None, top_k=None, min_p=None,
                    frequency_penalty=None, presence_penalty=None, ignore_eos=None, return_logprob=None,
                    logprob_start_len=None, top_logprobs_num=None, return_text_in_logprobs=None,
                    dtype=None, regex=None, json_schema=None, ebnf=None) -> GenParams:
    """Validate user-facing sampling arguments (None = inherit) into a GenParams."""
    if stop_regex is not None:
        raise UnsupportedFeature("stop_regex is not supported yet; use stop= or regex=")
    max_new_tokens = _int("max_tokens", max_new_tokens, 0)
    min_new_tokens = _int("min_tokens", min_new_tokens, 0)
    if max_new_tokens is not None and min_new_tokens is not None and min_new_tokens > max_new_tokens:
        raise InvalidArgument(f"min_tokens ({min_new_tokens}) must be <= max_tokens ({max_new_tokens})")
    top_k = _int("top_k", top_k)
    if top_k is not None and (top_k == 0 or top_k < -1):
        raise InvalidArgument(f"top_k must be -1 (whole vocabulary) or >= 1, got {top_k}")
    if stop_token_ids is not None:
        stop_token_ids = tuple(_int("stop_token_ids[]", t, 0) for t in stop_token_ids)
    regex, json_schema = normalize_regex(regex), normalize_json_schema(json_schema)
    if ebnf is not None and (not isinstance(ebnf, str) or not ebnf.strip()):
        raise InvalidArgument(f"ebnf: expected a non-empty grammar string, got {ebnf!r}")
    if sum(x is not None for x in (regex, json_schema, ebnf)) > 1:
        raise InvalidArgument("regex, json_schema and ebnf are mutually exclusive")
    return GenParams(
        max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, n=_int("n", n, 1),
        stop=normalize_stop(stop), stop_token_ids=stop_token_ids,
        temperature=_float("temperature", temperature, 0.0, float("inf")),
        top_p=_float("top_p", top_p, 0.0, 1.0, lo_open=True), top_k=top_k,
        min_p=_float("min_p", min_p, 0.0, 1.0),
        frequency_penalty=_float("frequency_penalty", frequency_penalty, -2.0, 2.0),
        presence_penalty=_float("presence_penalty", presence_penalty, -2.0, 2.0),
        ignore_eos=_bool("ignore_eos", ignore_eos), return_logprob=_bool("return_logprob", return_logprob),
        logprob_start_len=_int("logprob_start_len", logprob_start_len, -1),
        top_logprobs_num=_int("top_logprobs_num", top_logprobs_num, 0),
        return_text_in_logprobs=_bool("return_text_in_logprobs", return_text_in_logprobs),
        dtype=normalize_dtype(dtype), regex=regex, json_schema=json_schema, ebnf=ebnf,
    )


def _unique(items) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def resolve_gen_params(own: GenParams, defaults: GenParams, template_stop: tuple[str, ...]) -> GenParams:
    """The params a backend receives for one gen: `own` over the program defaults, a dtype turned
    into its regex (+ stops for int/float), and the chat template's stop strings appended."""
    p = own.merged_over(defaults)
    extra_stop: tuple[str, ...] = ()
    if p.dtype is not None:
        dtype_regex = DTYPE_REGEX[p.dtype]
        if p.regex is not None and p.regex != dtype_regex:
            warnings.warn(f"gen(dtype={p.dtype}) overrides regex={p.regex!r}", stacklevel=2)
        p = replace(p, regex=dtype_regex, json_schema=None)
        extra_stop = _DTYPE_STOP.get(p.dtype, ())
    return replace(p, stop=_unique((p.stop or ()) + extra_stop + tuple(template_stop)))
