"""ProgramState (the user's `s`) and ProgramStateGroup (what `s.fork(n)` returns)."""
from __future__ import annotations

import asyncio
from contextlib import contextmanager
from typing import Any, AsyncIterator, Iterator, Optional

from .errors import InvalidArgument, ProgramError
from .interpreter import Executor
from .ir import Expr, ExprList, RoleBegin, RoleEnd, VarScopeBegin, VarScopeEnd, as_expr


class StateSurface:
    """What `s` offers on top of `s += x`: role scopes and var_scope. Shared with the tracer."""

    def __iadd__(self, other: Any):  # pragma: no cover - overridden
        raise NotImplementedError

    def _role(self, role: str, expr: Any):
        if expr is not None:
            exprs = ExprList.of(RoleBegin(role), expr, RoleEnd(role))
            self += exprs
            return exprs
        return self._role_scope(role)

    @contextmanager
    def _role_scope(self, role: str):
        self += RoleBegin(role)
        yield
        self += RoleEnd(role)

    def system(self, expr: Any = None):
        return self._role("system", expr)

    def user(self, expr: Any = None):
        return self._role("user", expr)

    def assistant(self, expr: Any = None):
        return self._role("assistant", expr)

    @contextmanager
    def var_scope(self, name: str):
        """Every piece of text appended inside the block becomes variable `name`."""
        self += VarScopeBegin(name)
        yield
        self += VarScopeEnd(name)


class ProgramState(StateSurface):
    """The state of one running program. Reading waits for the work it depends on."""

    def __init__(self, executor: Executor):
        self.stream_executor = executor
        self.ret_value: Any = None

    def __iadd__(self, other: Any) -> "ProgramState":
        self.stream_executor.submit(as_expr(other))
        return self

    def __getitem__(self, name: Any) -> Any:
        return self.stream_executor.get_var(name)

    def __setitem__(self, name: Any, value: Any) -> None:
        self.stream_executor.set_var(name, value)

    def __contains__(self, name: Any) -> bool:
        return name in self.stream_executor.variables

    get_var = __getitem__
    set_var = __setitem__

    def sync(self) -> None:
        self.stream_executor.sync()

    def error(self) -> Optional[BaseException]:
        """The exception that stopped this program, or None."""
        self.sync()
        return self.stream_executor.error

    def text(self) -> str:
        self.sync()
        self.stream_executor.raise_if_error()
        return self.stream_executor.transcript.text

    def messages(self) -> list[dict]:
        self.sync()
        self.stream_executor.raise_if_error()
        return [dict(m) for m in self.stream_executor.transcript.messages]

    def get_meta_info(self, name: Any) -> Any:
        return self.stream_executor.get_meta_info(name)

    def fork(self, size: int = 1, position_ids_offset: Optional[list] = None) -> "ProgramStateGroup":
        """`size` independent copies of this state; they run concurrently. `position_ids_offset` is
        accepted for SGLang compatibility and ignored."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InvalidArgument(f"fork size must be an int >= 1, got {size!r}")
        ex = self.stream_executor
        ex.sync()
        ex.raise_if_error()
        if size > 1 and ex.transcript.text:
            ex.backend.cache_prefix(ex.transcript.text)  # so every child hits the shared prefix
        return ProgramStateGroup([ProgramState(ex.fork_child()) for _ in range(size)], self)

    @contextmanager
    def copy(self, position_ids_offset: Optional[list] = None):
        """`with s.copy() as c:` work on a fork of one; its new variables come back as lists."""
        forks = self.fork(1, position_ids_offset)
        yield forks[0]
        forks.join()

    def text_iter(self, var_name: Any = None) -> Iterator[Any]:
        """Stream mode: deltas of the whole text (or of one variable) as they arrive. Otherwise the
        full text (or value) once."""
        if not self.stream_executor.stream:
            yield self.text() if var_name is None else self[var_name]
            return
        yield from self.stream_executor.iter_deltas(var_name)

    async def text_async_iter(self, var_name: Any = None, return_meta_data: bool = False) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        it = self.text_iter(var_name)
        done = object()
        while True:
            delta = await loop.run_in_executor(None, next, it, done)
            if delta is done:
                return
            if return_meta_data:
                yield delta, self.stream_executor.partial_meta(var_name)
            else:
                yield delta

    def __repr__(self) -> str:
        self.sync()
        return f"ProgramState({self.stream_executor.transcript.text!r})"


class ProgramStateGroup:
    """The forks of a state: indexable, iterable, `forks += x` broadcasts, `join()` gathers."""

    def __init__(self, states: list[ProgramState], parent: ProgramState):
        self.states = states
        self.parent = parent

    def __getitem__(self, i: int) -> ProgramState:
        return self.states[i]

    def __iter__(self) -> Iterator[ProgramState]:
        return iter(self.states)

    def __len__(self) -> int:
        return len(self.states)

    def __iadd__(self, other: Any) -> "ProgramStateGroup":
        """A callable `i -> expr`, a list with one item per fork, or one str/expr for all forks."""
        if callable(other) and not isinstance(other, Expr):
            items = [other(i) for i in range(len(self.states))]
        elif isinstance(other, (list, tuple)):
            if len(other) != len(self.states):
                raise InvalidArgument(f"forks += list needs {len(self.states)} items, got {len(other)}")
            items = list(other)
        else:
            items = [other] * len(self.states)
        for state, item in zip(self.states, items):
            state += item
        return self

    def join(self, mode: str = "gather_variable") -> None:
        """gather_variable: variables new in the forks come back to the parent as lists in fork
        order (the parent text is unchanged). concate_and_append: the forks' own text is appended
        to the parent, in order."""
        if mode not in ("gather_variable", "concate_and_append"):
            raise InvalidArgument(f"join mode must be 'gather_variable' or 'concate_and_append', got {mode!r}")
        children = [s.stream_executor for s in self.states]
        for i, child in enumerate(children):
            child.sync()
            if child.error is not None:
                raise ProgramError(child.error, child.error_traceback,
                                   f"fork {i}: {child.error_context}") from child.error
        parent = self.parent.stream_executor
        parent.sync()
        if mode == "gather_variable":
            before = set(parent.variables)
            names = [n for n in dict.fromkeys(n for c in children for n in c.variables) if n not in before]
            for name in names:
                parent.set_var(name, [c.variables.get(name) for c in children],
                               [c.meta_info.get(name) for c in children])
        else:
            self.parent += "".join(c.transcript.text[c.fork_start_pos:] for c in children)
        for child in children:
            child.end()
