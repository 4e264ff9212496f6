"""Tracing: run a program's body without a backend, recording the IR it would submit.

Arguments become Placeholders; reading `s[name]` gives a Placeholder too. Using a placeholder as
a str (an f-string, a method call) stops the trace there. The trace prints as an IR graph and
gives the constant leading text that run_batch uses to warm the prefix cache.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Optional

from .chat_template import ChatTemplate
from .ir import (Expr, ExprList, Placeholder, RoleBegin, RoleEnd, Text, VarScopeBegin, VarScopeEnd,
                 as_expr)
from .program_state import StateSurface
from .transcript import Transcript

_active = threading.local()


def is_tracing() -> bool:
    return getattr(_active, "depth", 0) > 0


@dataclass
class ForkRecord:
    """`s.fork(size)` inside a trace: each child's recorded nodes."""
    size: int
    children: list["TracerProgramState"]


@dataclass
class JoinRecord:
    mode: str


class TracerGroup:
    def __init__(self, children: list["TracerProgramState"], parent: "TracerProgramState"):
        self.children, self.parent = children, parent

    def __getitem__(self, i: int) -> "TracerProgramState":
        return self.children[i]

    def __iter__(self):
        return iter(self.children)

    def __len__(self) -> int:
        return len(self.children)

    def __iadd__(self, other: Any) -> "TracerGroup":
        if callable(other) and not isinstance(other, Expr):
            items = [other(i) for i in range(len(self.children))]
        elif isinstance(other, (list, tuple)):
            items = list(other)
        else:
            items = [other] * len(self.children)
        for child, item in zip(self.children, items):
            child += item
        return self

    def join(self, mode: str = "gather_variable") -> None:
        self.parent.nodes.append(JoinRecord(mode))


class TracerProgramState(StateSurface):
    """What `Program.trace()` returns: `.nodes`, `.stopped_at`, and `print(trace)` for the graph."""

    def __init__(self, program_name: str = "program", arguments: Optional[dict] = None):
        self.program_name = program_name
        self.arguments = dict(arguments or {})
        self.nodes: list = []  # Expr | ForkRecord | JoinRecord, in submission order
        self.stopped_at: Optional[str] = None  # why tracing stopped early, if it did
        self.ret_value: Any = None

    def __iadd__(self, other: Any) -> "TracerProgramState":
        expr = as_expr(other)
        self.nodes.extend(expr.items if isinstance(expr, ExprList) else (expr,))
        return self

    def __getitem__(self, name: Any) -> Placeholder:
        return Placeholder(str(name), "var")

    def __setitem__(self, name: Any, value: Any) -> None:
        pass

    def get_var(self, name: Any) -> Placeholder:
        return self[name]

    def sync(self) -> None:
        pass

    def error(self) -> None:
        return None

    def fork(self, size: int = 1, position_ids_offset: Optional[list] = None) -> TracerGroup:
        children = [TracerProgramState(f"{self.program_name}.fork[{i}]") for i in range(size)]
        self.nodes.append(ForkRecord(size, children))
        return TracerGroup(children, self)

    # ---- results ------------------------------------------------------------------------------

    def constant_prefix(self, template: ChatTemplate) -> str:
        """The text every run of the program starts with: leading constant text and roles, up to
        the first node whose text depends on arguments or generation."""
        transcript = Transcript(template)
        for node in self.nodes:
            if isinstance(node, Text):
                transcript.append(node.value)
            elif isinstance(node, RoleBegin):
                transcript.begin_role(node.role)
            elif isinstance(node, RoleEnd):
                transcript.end_role(node.role)
            elif not isinstance(node, (VarScopeBegin, VarScopeEnd)):
                break
        return transcript.text

    def graph(self, indent: str = "") -> str:
        lines = []
        for i, node in enumerate(self.nodes):
            if isinstance(node, ForkRecord):
                lines.append(f"{indent}{i:>3}  fork({node.size})")
                for k, child in enumerate(node.children):
                    lines.append(f"{indent}       fork[{k}]:")
                    lines.append(child.graph(indent + "         ") or f"{indent}         (nothing)")
            elif isinstance(node, JoinRecord):
                lines.append(f"{indent}{i:>3}  join({node.mode!r})")
            else:
                lines.append(f"{indent}{i:>3}  {node!r}")
        return "\n".join(lines)

    def __str__(self) -> str:
        args = ", ".join(self.arguments)
        head = f"Trace of {self.program_name}({args})"
        tail = f"\n  (tracing stopped: {self.stopped_at})" if self.stopped_at else ""
        return f"{head}\n{self.graph('  ')}{tail}"

    def __repr__(self) -> str:
        return f"TracerProgramState({self.program_name!r}, {len(self.nodes)} nodes)"


def trace_program(func, program_name: str, arguments: dict) -> TracerProgramState:
    """Run `func(tracer, **arguments)`; any exception from a placeholder ends the trace quietly
    (recorded in `stopped_at`), since the trace is only ever a prefix of the real run."""
    tracer = TracerProgramState(program_name, arguments)
    _active.depth = getattr(_active, "depth", 0) + 1
    try:
        tracer.ret_value = func(tracer, **arguments)
    except Exception as e:  # a placeholder used where a real value was needed; the prefix still holds
        tracer.stopped_at = f"{type(e).__name__}: {e}"
    finally:
        _active.depth -= 1
    return tracer


__all__ = ["TracerProgramState", "TracerGroup", "trace_program", "is_tracing"]
