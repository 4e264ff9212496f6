"""Executor: runs a program's IR nodes against a backend. This is the ONE dispatch over node types.

Each ProgramState owns one Executor. Nodes are submitted in order; with `use_thread` a worker
thread runs them (so `s += gen(...)` returns at once and `s["x"]` blocks until x is ready),
otherwise they run inline. The first failure stops the executor: later nodes are skipped and every
reader gets a ProgramError carrying the failure's traceback.
"""
from __future__ import annotations

import queue
import re
import sys
import threading
import traceback
from dataclasses import replace
from typing import Any, Iterator, Optional

from .backend.base import GenerateRequest, GenerateResult, Message, ScoreRequest, ScoreResult
from .errors import ProgramError, SglError, UnsupportedFeature
from .ir import (Expr, ExprList, Gen, GenParams, Placeholder, RoleBegin, RoleEnd, Select, Text,
                 VarScopeBegin, VarScopeEnd)
from .params import resolve_gen_params
from .transcript import Transcript

_END = object()  # sentinel that stops the worker thread
_PKG_DIR = __file__.rsplit("/", 1)[0]


def _user_location() -> str:
    """file:line of the first frame outside sgl_lang (where the user wrote `s += ...`)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_PKG_DIR):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"


def _produced_names(expr: Expr) -> list:
    if isinstance(expr, ExprList):
        return [n for item in expr.items for n in _produced_names(item)]
    if isinstance(expr, (Gen, Select, VarScopeBegin)):
        return [expr.name]
    return []


class Executor:
    def __init__(self, backend, defaults: GenParams, *, stream: bool = False, use_thread: bool = True,
                 transcript: Optional[Transcript] = None, variables: Optional[dict] = None,
                 meta_info: Optional[dict] = None, arguments: Optional[dict] = None,
                 num_api_spec_tokens: Optional[int] = None):
        self.backend = backend
        self.defaults = defaults
        self.stream = stream
        self.arguments = dict(arguments or {})
        self.num_api_spec_tokens = num_api_spec_tokens  # stored for API speculative execution
        self.transcript = transcript if transcript is not None else Transcript(backend.get_chat_template())
        self.variables: dict = dict(variables or {})
        self.meta_info: dict = dict(meta_info or {})
        self.fork_start_pos = len(self.transcript.text)  # where a forked child's own text begins
        self.error: Optional[BaseException] = None
        self.error_traceback = ""
        self.error_context = ""
        self._cond = threading.Condition()
        self._expected: set = set()  # names submitted but not produced yet
        self._partial: dict = {}  # name -> text streamed so far
        self._partial_meta: dict = {}  # name -> meta_info of the latest stream chunk
        self._scope_starts: dict = {}
        self._pending = 0
        self._ended = False
        #: the thread running the program body; readers elsewhere wait for names it may still submit
        self.body_thread: Optional[int] = None
        self._queue: Optional[queue.Queue] = None
        if use_thread:
            self._queue = queue.Queue()
            threading.Thread(target=self._worker, name="sgl-executor", daemon=True).start()

    # ---- submission and lifecycle -------------------------------------------------------------

    def submit(self, expr: Expr) -> None:
        where = _user_location()
        with self._cond:
            if self._ended:
                raise SglError("this program state has ended; it accepts no more expressions")
            self._pending += 1
            self._expected.update(_produced_names(expr))
        if self._queue is not None:
            self._queue.put((expr, where))
        else:
            self._run_one(expr, where)

    def _worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            self._run_one(*item)

    def _run_one(self, expr: Expr, where: str) -> None:
        try:
            if self.error is None:
                self._execute(expr)
        except Exception as e:  # recorded and re-raised to every reader as ProgramError
            self.record_error(e, traceback.format_exc(), f"while running {expr!r} submitted at {where}")
        finally:
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()

    def record_error(self, error: BaseException, tb: str, context: str = "") -> None:
        with self._cond:
            if self.error is None:
                self.error, self.error_traceback, self.error_context = error, tb, context
            self._cond.notify_all()

    def raise_if_error(self) -> None:
        if self.error is not None:
            raise ProgramError(self.error, self.error_traceback, self.error_context) from self.error

    def end(self) -> None:
        """No more submissions; the worker exits once the queue is drained."""
        with self._cond:
            if self._ended:
                return
            self._ended = True
            self._cond.notify_all()
        if self._queue is not None:
            self._queue.put(_END)

    def sync(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._pending == 0)

    @property
    def is_finished(self) -> bool:
        return self._ended and self._pending == 0

    # ---- variables ----------------------------------------------------------------------------

    def _never_produced(self, name: Any) -> bool:
        """Nothing submitted will produce `name`, and nothing can be submitted any more from the
        reader's point of view (the body ended, or the reader is the body itself)."""
        if name in self._expected:
            return False
        return self._ended or self.body_thread in (None, threading.get_ident())

    def get_var(self, name: Any) -> Any:
        with self._cond:
            self._cond.wait_for(lambda: name in self.variables or self.error is not None
                                or self._never_produced(name))
            if name in self.variables:
                return self.variables[name]
        self.raise_if_error()
        raise KeyError(f"variable {name!r} was never produced by this program; "
                       f"known: {sorted(map(str, self.variables))}")

    def get_meta_info(self, name: Any) -> Any:
        self.get_var(name)
        return self.meta_info.get(name)

    def set_var(self, name: Any, value: Any, meta_info: Any = None) -> None:
        with self._cond:
            self.variables[name] = value
            if meta_info is not None:
                self.meta_info[name] = meta_info
            self._expected.discard(name)
            self._partial.pop(name, None)
            self._cond.notify_all()

    # ---- streaming ----------------------------------------------------------------------------

    def iter_deltas(self, name: Any = None) -> Iterator[str]:
        """Yield new text of the whole program (name=None) or of one variable as it is produced."""
        pos = 0

        def current() -> Any:
            if name is None:
                return self.transcript.text
            return self.variables[name] if name in self.variables else self._partial.get(name, "")

        def done() -> bool:
            if self.error is not None or self.is_finished:
                return True
            return name is not None and (name in self.variables or self._never_produced(name))

        while True:
            with self._cond:
                self._cond.wait_for(lambda: done() or len(current()) > pos)
                value, finished = current(), done()
            if not isinstance(value, str):  # e.g. a list gathered by join
                yield value
                break
            if len(value) > pos:
                yield value[pos:]
                pos = len(value)
            elif finished:
                break
        self.raise_if_error()

    def partial_meta(self, name: Any) -> dict:
        return self.meta_info.get(name) or self._partial_meta.get(name, {})

    # ---- the dispatch -------------------------------------------------------------------------

    def _execute(self, expr: Expr) -> None:
        if isinstance(expr, ExprList):
            for item in expr.items:
                self._execute(item)
        elif isinstance(expr, Text):
            self._append(expr.value)
        elif isinstance(expr, Gen):
            self._gen(expr)
        elif isinstance(expr, Select):
            self._select(expr)
        elif isinstance(expr, RoleBegin):
            self._locked(self.transcript.begin_role, expr.role)
        elif isinstance(expr, RoleEnd):
            self._locked(self.transcript.end_role, expr.role)
        elif isinstance(expr, VarScopeBegin):
            self._scope_starts[expr.name] = len(self.transcript.text)
        elif isinstance(expr, VarScopeEnd):
            start = self._scope_starts.pop(expr.name)
            self.set_var(expr.name, self.transcript.text[start:])
        elif isinstance(expr, Placeholder):
            raise SglError(f"{expr!r} is a tracing placeholder and cannot run")
        else:
            raise UnsupportedFeature(f"the interpreter has no rule for {type(expr).__name__}")

    def _locked(self, fn, *args) -> None:
        with self._cond:
            fn(*args)
            self._cond.notify_all()

    def _append(self, text: str) -> None:
        self._locked(self.transcript.append, text)

    def _request(self, params: GenParams) -> GenerateRequest:
        t = self.transcript
        return GenerateRequest(text=t.text, messages=tuple(Message(m["role"], m["content"]) for m in t.messages),
                               params=params, is_in_assistant_turn=t.is_in_assistant_turn())

    def _gen(self, node: Gen) -> None:
        params = resolve_gen_params(node.params, self.defaults, self.transcript.template.stop_str)
        req = self._request(params)
        if self.stream:
            meta: dict = {}
            with self._cond:
                self._partial[node.name] = ""
            for chunk in self.backend.generate_stream(req):
                meta.update(chunk.meta_info)
                with self._cond:
                    self.transcript.append(chunk.delta)
                    self._partial[node.name] += chunk.delta
                    self._partial_meta[node.name] = chunk.meta_info
                    self._cond.notify_all()
            self.set_var(node.name, self._partial[node.name], meta)
            return
        result = self.backend.generate(req)
        if not isinstance(result, GenerateResult):
            raise SglError(f"{type(self.backend).__name__}.generate returned {type(result).__name__}, "
                           f"expected GenerateResult")
        value = result.text  # a list when the backend returns n > 1 completions
        self._append(value[0] if isinstance(value, list) else value)
        self.set_var(node.name, value, dict(result.meta_info))

    def _select(self, node: Select) -> None:
        method = node.choices_method
        if getattr(self.backend, "supports_score", True):
            t = self.transcript
            result = self.backend.score(ScoreRequest(
                text=t.text, choices=node.choices,
                need_unconditional=getattr(method, "requires_unconditional_logprobs", False),
                messages=tuple(Message(m["role"], m["content"]) for m in t.messages)))
            if not isinstance(result, ScoreResult):
                raise SglError(f"{type(self.backend).__name__}.score returned {type(result).__name__}, "
                               f"expected ScoreResult")
            decision = method(
                choices=list(node.choices), normalized_prompt_logprobs=result.normalized_prompt_logprobs,
                input_token_logprobs=result.input_token_logprobs,
                output_token_logprobs=result.output_token_logprobs,
                unconditional_token_logprobs=result.unconditional_token_logprobs)
            chosen = decision.decision
            meta = {**result.meta_info, **decision.meta_info,
                    "choices_method": getattr(method, "name", repr(method))}
        else:
            chosen, meta = self._select_by_generation(node)
        self._append(chosen)
        self.set_var(node.name, chosen, meta)

    def _select_by_generation(self, node: Select) -> tuple[str, dict]:
        """For backends that cannot score: constrained generation over the alternation of the choices."""
        pattern = "(" + "|".join(re.escape(c) for c in node.choices) + ")"
        params = replace(self.defaults, n=1, min_new_tokens=0, temperature=node.temperature, regex=pattern,
                         json_schema=None, dtype=None, stop=tuple(self.transcript.template.stop_str),
                         max_new_tokens=max(len(c.encode()) for c in node.choices) + 1)
        result = self.backend.generate(self._request(params))
        text = result.text[0] if isinstance(result.text, list) else result.text
        if text in node.choices:
            chosen = text
        else:  # a backend that ignored the regex: take the choice sharing the longest prefix
            def shared(c: str) -> int:
                return next((i for i, (a, b) in enumerate(zip(c, text)) if a != b), min(len(c), len(text)))
            chosen = max(node.choices, key=shared)
        return chosen, {**result.meta_info, "choices_method": "constrained_generation",
                        "generated_text": text}

    # ---- fork ---------------------------------------------------------------------------------

    def fork_child(self) -> "Executor":
        """A new executor (own worker thread) starting from a copy of this one's state."""
        child = Executor(self.backend, self.defaults, stream=self.stream, use_thread=True,
                         transcript=self.transcript.copy(), variables=self.variables,
                         meta_info=self.meta_info, arguments=self.arguments,
                         num_api_spec_tokens=self.num_api_spec_tokens)
        child.body_thread = self.body_thread
        return child


def __getattr__(name: str):
    # SGLang's module exposes ProgramState here; ours lives in program_state.py.
    if name in ("ProgramState", "ProgramStateGroup"):
        from . import program_state
        return getattr(program_state, name)
    if name == "StreamExecutor":
        return Executor
    raise AttributeError(name)
