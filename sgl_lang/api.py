"""The language's constructors. Each validates its arguments (named errors) and builds IR nodes;
nothing here runs a program or talks to a backend except the three backend helpers at the end."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from .choices import ChoicesMethod, token_length_normalized
from .errors import InvalidArgument, NoBackendError, UnsupportedFeature
from .global_config import global_config
from .ir import Expr, ExprList, Gen, RoleBegin, RoleEnd, Select
from .params import make_gen_params


def function(func: Optional[Callable] = None, num_api_spec_tokens: Optional[int] = None):
    """`@function` or `@function(num_api_spec_tokens=N)`: turn `def prog(s, ...)` into a Program."""
    from .program import Program

    def decorate(f: Callable):
        return Program(f, num_api_spec_tokens=num_api_spec_tokens)

    return decorate(func) if func is not None else decorate


def _check_name(name: Any) -> None:
    if name is not None and not isinstance(name, str):
        raise InvalidArgument(f"a variable name must be a str, got {type(name).__name__} {name!r}")


def gen(name: Optional[str] = None, max_tokens: Optional[int] = None, min_tokens: Optional[int] = None,
        n: Optional[int] = None, stop=None, stop_token_ids=None, stop_regex=None,
        temperature: Optional[float] = None, top_p: Optional[float] = None, top_k: Optional[int] = None,
        min_p: Optional[float] = None, frequency_penalty: Optional[float] = None,
        presence_penalty: Optional[float] = None, ignore_eos: Optional[bool] = None,
        return_logprob: Optional[bool] = None, logprob_start_len: Optional[int] = None,
        top_logprobs_num: Optional[int] = None, return_text_in_logprobs: Optional[bool] = None,
        dtype=None, choices: Optional[Sequence[str]] = None,
        choices_method: Optional[ChoicesMethod] = None, regex: Optional[str] = None,
        json_schema=None, ebnf: Optional[str] = None) -> Expr:
    """Generate text into variable `name`. None arguments inherit the defaults given to run().
    With `choices`, this is a `select`. `ebnf` (beyond SGLang's frontend) constrains the output to
    an EBNF grammar (xgrammar's dialect, or Lark through llguidance)."""
    _check_name(name)
    if choices is not None:
        if regex is not None or json_schema is not None or ebnf is not None or dtype is not None:
            raise InvalidArgument("gen(choices=...) cannot be combined with regex, json_schema, ebnf or dtype")
        return select(name, choices, temperature if temperature is not None else 0.0,
                      choices_method or token_length_normalized)
    params = make_gen_params(
        max_new_tokens=max_tokens, min_new_tokens=min_tokens, n=n, stop=stop, stop_token_ids=stop_token_ids,
        stop_regex=stop_regex, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
        frequency_penalty=frequency_penalty, presence_penalty=presence_penalty, ignore_eos=ignore_eos,
        return_logprob=return_logprob, logprob_start_len=logprob_start_len,
        top_logprobs_num=top_logprobs_num, return_text_in_logprobs=return_text_in_logprobs,
        dtype=dtype, regex=regex, json_schema=json_schema, ebnf=ebnf)
    return Gen(name, params)


def gen_int(name: Optional[str] = None, max_tokens: Optional[int] = None, n=None, stop=None,
            stop_token_ids=None, stop_regex=None, temperature=None, top_p=None, top_k=None, min_p=None,
            frequency_penalty=None, presence_penalty=None, ignore_eos=None, return_logprob=None,
            logprob_start_len=None, top_logprobs_num=None, return_text_in_logprobs=None) -> Expr:
    """`gen(..., dtype=int)`: an integer (regex-constrained, stops at a space or newline)."""
    return gen(name, max_tokens, None, n, stop, stop_token_ids, stop_regex, temperature, top_p, top_k,
               min_p, frequency_penalty, presence_penalty, ignore_eos, return_logprob, logprob_start_len,
               top_logprobs_num, return_text_in_logprobs, dtype=int)


def gen_string(name: Optional[str] = None, max_tokens: Optional[int] = None, n=None, stop=None,
               stop_token_ids=None, stop_regex=None, temperature=None, top_p=None, top_k=None, min_p=None,
               frequency_penalty=None, presence_penalty=None, ignore_eos=None, return_logprob=None,
               logprob_start_len=None, top_logprobs_num=None, return_text_in_logprobs=None) -> Expr:
    """`gen(..., dtype=str)`: a double-quoted string."""
    return gen(name, max_tokens, None, n, stop, stop_token_ids, stop_regex, temperature, top_p, top_k,
               min_p, frequency_penalty, presence_penalty, ignore_eos, return_logprob, logprob_start_len,
               top_logprobs_num, return_text_in_logprobs, dtype=str)


def select(name: Optional[str] = None, choices: Optional[Sequence[str]] = None, temperature: float = 0.0,
           choices_method: ChoicesMethod = token_length_normalized) -> Select:
    """Append the most likely of `choices` (scored by `choices_method`) and store it in `name`."""
    _check_name(name)
    if choices is None:
        raise InvalidArgument("select() needs choices=[...]")
    if isinstance(choices, str) or not isinstance(choices, Sequence):
        raise InvalidArgument(f"choices must be a list of str, got {type(choices).__name__} {choices!r}")
    if len(choices) == 0:
        raise InvalidArgument("choices must not be empty")
    bad = [c for c in choices if not isinstance(c, str)]
    if bad:
        raise InvalidArgument(f"every choice must be a str, got {bad!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
        raise InvalidArgument(f"temperature must be a number >= 0, got {temperature!r}")
    if not callable(choices_method):
        raise InvalidArgument(f"choices_method must be a choices method such as sgl.token_length_normalized, "
                              f"got {choices_method!r}")
    return Select(name, tuple(choices), float(temperature), choices_method)


def _role(role: str, expr: Any) -> ExprList:
    if expr is None:
        return ExprList((RoleBegin(role), RoleEnd(role)))
    return ExprList.of(RoleBegin(role), expr, RoleEnd(role))


def system(expr: Any = None) -> ExprList:
    return _role("system", expr)


def user(expr: Any = None) -> ExprList:
    return _role("user", expr)


def assistant(expr: Any = None) -> ExprList:
    return _role("assistant", expr)


def system_begin() -> RoleBegin:
    return RoleBegin("system")


def system_end() -> RoleEnd:
    return RoleEnd("system")


def user_begin() -> RoleBegin:
    return RoleBegin("user")


def user_end() -> RoleEnd:
    return RoleEnd("user")


def assistant_begin() -> RoleBegin:
    return RoleBegin("assistant")


def assistant_end() -> RoleEnd:
    return RoleEnd("assistant")


def image(expr: Any) -> Expr:
    raise UnsupportedFeature("sgl.image is not supported yet by sgl_lang")


def video(path: str, num_frames: int) -> Expr:
    raise UnsupportedFeature("sgl.video is not supported yet by sgl_lang")


# ---------------------------------------------------------------------------------------------
# Backend helpers (SGLang keeps these in api.py too).

def set_default_backend(backend: Any) -> None:
    global_config.default_backend = backend


def resolve_backend(backend: Any = None):
    """The backend to use: the given one or the default; a Runtime is unwrapped through `.endpoint`
    when it is not itself a backend."""
    from .backend.base import Backend
    backend = backend if backend is not None else global_config.default_backend
    if backend is None:
        raise NoBackendError("no backend: pass backend=... or call sgl.set_default_backend(...) first")
    if not isinstance(backend, Backend) and hasattr(backend, "endpoint"):
        backend = backend.endpoint
    if not callable(getattr(backend, "generate", None)):
        raise InvalidArgument(f"{type(backend).__name__} is not a backend (it has no generate method)")
    return backend


def flush_cache(backend: Any = None) -> bool:
    if backend is None and global_config.default_backend is None:
        return False
    return resolve_backend(backend).flush_cache()


def get_server_info(backend: Any = None) -> Optional[dict]:
    if backend is None and global_config.default_backend is None:
        return None
    return resolve_backend(backend).get_server_info()

