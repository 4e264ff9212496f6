"""IR nodes of a program, and GenParams, the backend-neutral sampling parameters."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Optional

from .errors import InvalidArgument, TracingStopped

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


# ---------------------------------------------------------------------------------------------
# Expression nodes. `s += node` hands one of these to the interpreter; nothing here executes.


class Expr:
    """Base of every node. `a + b` builds an ExprList, so `"A: " + gen("x")` works."""
    __slots__ = ()

    def __add__(self, other: Any) -> "ExprList":
        return ExprList.of(self, other)

    def __radd__(self, other: Any) -> "ExprList":
        return ExprList.of(other, self)


def as_expr(value: Any) -> Expr:
    """A str becomes Text; an Expr stays; anything else is a user error."""
    if isinstance(value, Expr):
        return value
    if isinstance(value, str):
        return Text(value)
    if value is None:
        raise InvalidArgument("cannot append None to a program state (expected a str or an sgl expression)")
    raise InvalidArgument(f"cannot append {type(value).__name__} {value!r} to a program state "
                          f"(expected a str or an sgl expression)")


@dataclass(frozen=True, repr=False)
class Text(Expr):
    value: str

    def __repr__(self) -> str:
        shown = self.value if len(self.value) <= 60 else self.value[:57] + "..."
        return f"Text({shown!r})"


@dataclass(frozen=True, repr=False)
class Gen(Expr):
    name: Optional[str]
    params: GenParams = GenParams()

    def __repr__(self) -> str:
        args = [repr(self.name)] + [f"{k}={v!r}" for k, v in self.params.to_dict().items()]
        return f"Gen({', '.join(args)})"


@dataclass(frozen=True, repr=False)
class Select(Expr):
    name: Optional[str]
    choices: tuple[str, ...]
    temperature: float = 0.0
    choices_method: Any = None  # a sgl_lang.choices.ChoicesMethod

    def __repr__(self) -> str:
        method = getattr(self.choices_method, "name", type(self.choices_method).__name__)
        return f"Select({self.name!r}, choices={list(self.choices)!r}, method={method})"


@dataclass(frozen=True)
class RoleBegin(Expr):
    role: str


@dataclass(frozen=True)
class RoleEnd(Expr):
    role: str


@dataclass(frozen=True)
class VarScopeBegin(Expr):
    name: str


@dataclass(frozen=True)
class VarScopeEnd(Expr):
    name: str


@dataclass(frozen=True, repr=False)
class ExprList(Expr):
    items: tuple[Expr, ...]

    @staticmethod
    def of(*values: Any) -> "ExprList":
        """Flattened: nested ExprLists are spliced in, strs become Text."""
        items: list[Expr] = []
        for v in values:
            e = as_expr(v)
            items.extend(e.items if isinstance(e, ExprList) else (e,))
        return ExprList(tuple(items))

    def __repr__(self) -> str:
        return f"ExprList({list(self.items)!r})"


@dataclass(frozen=True)
class Placeholder(Expr):
    """Tracing only: a value unknown until run time (a program argument, or a variable read
    with s[name]). Appending it is recorded; turning it into a str stops the trace."""
    name: str
    kind: str = "arg"  # "arg" | "var"

    def __str__(self) -> str:
        raise TracingStopped(f"the {self.kind} {self.name!r} is used as a str while tracing")

    def __format__(self, spec: str) -> str:
        raise TracingStopped(f"the {self.kind} {self.name!r} is formatted while tracing")


# SGLang's names for the nodes, for programs and tests that import them from the ir module.
SglExpr = Expr
SglExprList = ExprList
SglGen = Gen
SglSelect = Select
SglRoleBegin = RoleBegin
SglRoleEnd = RoleEnd
