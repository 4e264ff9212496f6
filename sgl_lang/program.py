"""Program: what `@sgl.function` returns. Binds arguments and runs the body against a backend
(run / run_batch / trace / cache)."""
from __future__ import annotations

import inspect
import os
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Callable, Iterator, Optional, Union

from .api import resolve_backend
from .errors import InvalidArgument, ProgramError
from .global_config import global_config
from .interpreter import Executor
from .ir import DEFAULT_RUN_PARAMS, GenParams, Placeholder
from .params import make_gen_params
from .program_state import ProgramState
from .tracer import TracerProgramState, is_tracing, trace_program

_BATCH_CHUNK = 200  # generator_style submits this many programs at a time
_BODY_NOT_STARTED = -1  # no thread has this ident


class Program:
    def __init__(self, func: Callable, num_api_spec_tokens: Optional[int] = None,
                 bind_arguments: Optional[dict] = None):
        params = list(inspect.signature(func).parameters.values())
        if not params or params[0].name != "s":
            raise InvalidArgument(f"the first parameter of sgl program {func.__name__!r} must be named 's'")
        self.func = func
        self.num_api_spec_tokens = num_api_spec_tokens
        self.bind_arguments = dict(bind_arguments or {})
        self.arg_names = [p.name for p in params[1:]
                          if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.POSITIONAL_ONLY)]
        self.arg_defaults = {p.name: p.default for p in params[1:] if p.default is not p.empty}
        self.__name__ = getattr(func, "__name__", "program")
        self.__doc__ = func.__doc__

    def __repr__(self) -> str:
        return f"Program({self.__name__}({', '.join(self.arg_names)}))"

    # ---- arguments ----------------------------------------------------------------------------

    def bind(self, **kwargs: Any) -> "Program":
        """A new program with some arguments fixed (num_api_spec_tokens is dropped, as in SGLang)."""
        unknown = [k for k in kwargs if k not in self.arg_names]
        if unknown:
            raise InvalidArgument(f"bind(): {unknown} are not arguments of {self.__name__}({', '.join(self.arg_names)})")
        return Program(self.func, bind_arguments={**self.bind_arguments, **kwargs})

    def _arguments(self, args: tuple, kwargs: dict) -> dict:
        free = [n for n in self.arg_names if n not in self.bind_arguments]
        if len(args) > len(free):
            raise InvalidArgument(f"{self.__name__} takes {len(free)} positional arguments, got {len(args)}")
        out = {**self.bind_arguments, **dict(zip(free, args))}
        for k, v in kwargs.items():
            if k in out and k not in self.bind_arguments:
                raise InvalidArgument(f"{self.__name__} got multiple values for argument {k!r}")
            out[k] = v
        missing = [n for n in self.arg_names if n not in out and n not in self.arg_defaults]
        if missing:
            raise InvalidArgument(f"{self.__name__} is missing arguments {missing}")
        return out

    def _batch_item(self, index: int, item: Any) -> dict:
        if isinstance(item, dict):
            return self._arguments((), item)
        if isinstance(item, (list, tuple)):
            free = [n for n in self.arg_names if n not in self.bind_arguments]
            num_required = len([n for n in free if n not in self.arg_defaults])
            if not num_required <= len(item) <= len(free):
                raise InvalidArgument(f"Given arguments mismatch the SGL function signature: batch item {index} "
                                      f"has {len(item)} values, {self.__name__} takes {num_required}..{len(free)}")
            return self._arguments(tuple(item), {})
        raise InvalidArgument(f"batch item {index} must be a dict or a list of arguments, got {type(item).__name__}")

    # ---- running ------------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any):
        """`run(...)`, or a trace when called inside another program's trace."""
        if is_tracing():
            return self.trace(**self._arguments(args, kwargs))
        return self.run(*args, **kwargs)

    def run(self, *args, max_new_tokens=128, n=1, stop=None, stop_token_ids=None, stop_regex=None,
            temperature=1.0, top_p=1.0, top_k=-1, min_p=0.0, frequency_penalty=0.0, presence_penalty=0.0,
            ignore_eos=False, return_logprob=None, logprob_start_len=None, top_logprobs_num=None,
            return_text_in_logprobs=None, stream=False, backend=None, use_thread=True,
            **kwargs) -> ProgramState:
        """Start the program; returns its state without waiting (reading a variable waits).
        Keyword arguments other than the sampling defaults are the program's arguments."""
        defaults = _run_defaults(max_new_tokens, n, stop, stop_token_ids, stop_regex, temperature, top_p, top_k,
                                 min_p, frequency_penalty, presence_penalty, ignore_eos, return_logprob,
                                 logprob_start_len, top_logprobs_num, return_text_in_logprobs)
        arguments = self._arguments(args, kwargs)
        return self._start(resolve_backend(backend), arguments, defaults, stream=stream, use_thread=use_thread)

    def _start(self, backend, arguments: dict, defaults: GenParams, *, stream: bool, use_thread: bool,
               sync: bool = False) -> ProgramState:
        state = ProgramState(Executor(backend, defaults, stream=stream, use_thread=use_thread,
                                      arguments=arguments, num_api_spec_tokens=self.num_api_spec_tokens))
        if stream:  # the body runs in its own thread so text_iter can start at once
            state.stream_executor.body_thread = _BODY_NOT_STARTED  # readers wait for its submissions
            threading.Thread(target=self._body, args=(state, arguments, sync, True), daemon=True).start()
        else:
            self._body(state, arguments, sync, False)
        return state

    def _body(self, state: ProgramState, arguments: dict, sync: bool, capture: bool) -> None:
        ex = state.stream_executor
        ex.body_thread = threading.get_ident()
        try:
            state.ret_value = self.func(state, **arguments)
        except Exception as e:
            if not capture:
                raise
            ex.record_error(e, traceback.format_exc(), f"in the body of {self.__name__}")
        finally:
            ex.end()
        if sync:
            ex.sync()
        if global_config.verbosity >= 2:
            print(ex.transcript.text)

    def run_batch(self, batch_kwargs, *, max_new_tokens=128, n=1, stop=None, stop_token_ids=None,
                  stop_regex=None, temperature=1.0, top_p=1.0, top_k=-1, min_p=0.0, frequency_penalty=0.0,
                  presence_penalty=0.0, ignore_eos=False, return_logprob=None, logprob_start_len=None,
                  top_logprobs_num=None, return_text_in_logprobs=None, backend=None,
                  num_threads: Union[str, int] = "auto", progress_bar: bool = False,
                  generator_style: bool = False) -> Union[list[ProgramState], Iterator[ProgramState]]:
        """Run the program once per item (a dict of arguments or a positional list) on a thread
        pool; states come back in input order."""
        if not isinstance(batch_kwargs, (list, tuple)):
            raise InvalidArgument(f"run_batch takes a list of argument dicts, got {type(batch_kwargs).__name__}")
        if len(batch_kwargs) == 0:
            return []
        items = [self._batch_item(i, item) for i, item in enumerate(batch_kwargs)]
        defaults = _run_defaults(max_new_tokens, n, stop, stop_token_ids, stop_regex, temperature, top_p, top_k,
                                 min_p, frequency_penalty, presence_penalty, ignore_eos, return_logprob,
                                 logprob_start_len, top_logprobs_num, return_text_in_logprobs)
        backend = resolve_backend(backend)
        if len(items) > 1 and global_config.enable_precache_with_tracing:
            self._cache(backend, min_chars=global_config.precache_min_chars)
        if num_threads == "auto":
            num_threads = max(96, (os.cpu_count() or 1) * 16)
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise InvalidArgument(f"num_threads must be 'auto' or an int >= 1, got {num_threads!r}")
        num_threads = min(num_threads, len(items))

        def run_one(arguments: dict) -> ProgramState:
            return self._start(backend, arguments, defaults, stream=False, use_thread=False, sync=True)

        if generator_style:
            return self._batch_generator(items, run_one, num_threads, progress_bar)
        return self._batch_list(items, run_one, num_threads, progress_bar)

    @staticmethod
    def _collect(index: int, future) -> ProgramState:
        try:
            return future.result()
        except Exception as e:
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            raise ProgramError(e, tb, f"run_batch item {index}") from e

    def _batch_list(self, items, run_one, num_threads, progress_bar) -> list[ProgramState]:
        bar = _progress(len(items)) if progress_bar else None
        with ThreadPoolExecutor(num_threads) as pool:
            futures = [pool.submit(run_one, arguments) for arguments in items]
            if bar is not None:
                for _ in as_completed(futures):
                    bar.update(1)
                bar.close()
            return [self._collect(i, f) for i, f in enumerate(futures)]

    def _batch_generator(self, items, run_one, num_threads, progress_bar) -> Iterator[ProgramState]:
        bar = _progress(len(items)) if progress_bar else None
        with ThreadPoolExecutor(num_threads) as pool:
            for start in range(0, len(items), _BATCH_CHUNK):
                futures = [pool.submit(run_one, a) for a in items[start:start + _BATCH_CHUNK]]
                for k, f in enumerate(futures):
                    state = self._collect(start + k, f)
                    if bar is not None:
                        bar.update(1)
                    yield state
        if bar is not None:
            bar.close()

    # ---- tracing and caching ------------------------------------------------------------------

    def trace(self, *, backend=None, **kwargs: Any) -> TracerProgramState:
        """Run the body without a backend, recording its IR; print the result to see the graph."""
        arguments = {n: Placeholder(n) for n in self.arg_names}
        arguments.update(self.bind_arguments)
        arguments.update(kwargs)
        return trace_program(self.func, self.__name__, arguments)

    def cache(self, backend=None) -> str:
        """Warm the backend's prefix cache with the program's constant leading text; returns it."""
        return self._cache(resolve_backend(backend), min_chars=1)

    def _cache(self, backend, min_chars: int) -> str:
        prefix = self.trace().constant_prefix(backend.get_chat_template())
        if len(prefix) >= min_chars:
            backend.cache_prefix(prefix)
        return prefix


def _run_defaults(max_new_tokens, n, stop, stop_token_ids, stop_regex, temperature, top_p, top_k, min_p,
                  frequency_penalty, presence_penalty, ignore_eos, return_logprob, logprob_start_len,
                  top_logprobs_num, return_text_in_logprobs) -> GenParams:
    p = make_gen_params(max_new_tokens=max_new_tokens, n=n, stop=stop, stop_token_ids=stop_token_ids,
                        stop_regex=stop_regex, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                        frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                        ignore_eos=ignore_eos, return_logprob=return_logprob, logprob_start_len=logprob_start_len,
                        top_logprobs_num=top_logprobs_num, return_text_in_logprobs=return_text_in_logprobs)
    return p.merged_over(DEFAULT_RUN_PARAMS)


def _progress(total: int):
    from tqdm import tqdm
    return tqdm(total=total)
