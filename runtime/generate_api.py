"""GenerateAPI: the caller-facing half of the Engine — validating and tokenizing requests, and
the blocking / async / streaming `generate` calls built on `add_request` and per-request output
callbacks. Mixed into Engine; it only calls Engine's public methods and reads its model facts."""
from __future__ import annotations

import queue
import threading
import uuid
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Union

from .errors import InvalidRequest
from .request import Req, ReqOutput
from .sampling_params import SamplingParams

_MAX_TOP_LOGPROBS = 20


class GenerateAPI:
    # ---- requests ------------------------------------------------------------------------------
    def make_request(self, prompt: Union[str, list[int], None], params: SamplingParams, *,
                     return_logprob: bool = False, logprob_start_len: Optional[int] = None,
                     top_logprobs_num: Optional[int] = None, rid: Optional[str] = None,
                     stream: bool = False) -> Req:
        """Validate and tokenize one request (raises InvalidRequest / InvalidSamplingParams)."""
        if isinstance(prompt, str):
            if prompt == "":
                raise InvalidRequest("prompt: must not be empty")
            ids = self.tokenizer.encode(prompt)
        elif isinstance(prompt, (list, tuple)) and set(map(type, prompt)) <= {int}:  # (no bools)
            ids = list(prompt)
            vocab = self.loaded.vocab_size
            if ids and not (min(ids) >= 0 and max(ids) < vocab):  # (C loops: 64 x 512 ids in ~1 ms)
                bad = [t for t in ids if not 0 <= t < vocab]
                raise InvalidRequest(f"input_ids: token ids must be in [0, {vocab}), got {bad[:5]}")
        else:
            raise InvalidRequest(f"prompt: expected a string or a list of token ids, got {type(prompt).__name__}")
        if not ids:
            raise InvalidRequest("prompt: tokenizes to zero tokens")
        if len(ids) >= self.max_context_len:
            raise InvalidRequest(f"prompt: {len(ids)} tokens does not fit the context window of "
                                 f"{self.max_context_len} tokens (one token must be left to generate)")
        if len(ids) + 1 > self.runner.pool.num_slots:
            raise InvalidRequest(f"prompt: {len(ids)} tokens does not fit the KV pool of "
                                 f"{self.runner.pool.num_slots} slots")
        room = self.max_context_len - len(ids)
        if params.max_new_tokens > room:
            raise InvalidRequest(f"sampling_params.max_new_tokens: must be <= {room} for this {len(ids)}-token "
                                 f"prompt (context window {self.max_context_len}), got {params.max_new_tokens}")
        start = -1 if logprob_start_len is None else logprob_start_len
        if not isinstance(start, int) or isinstance(start, bool) or start < -1 or start >= len(ids):
            raise InvalidRequest(f"logprob_start_len: must be -1 or in [0, {len(ids) - 1}] for this "
                                 f"{len(ids)}-token prompt, got {logprob_start_len!r}")
        k = top_logprobs_num or 0
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= _MAX_TOP_LOGPROBS:
            raise InvalidRequest(f"top_logprobs_num: must be in [0, {_MAX_TOP_LOGPROBS}], got {top_logprobs_num!r}")
        if start >= 0:
            return_logprob = True
        req = Req(rid=rid or uuid.uuid4().hex, prompt_ids=ids, params=params,
                  return_logprob=bool(return_logprob), logprob_start_len=start if return_logprob else -1,
                  top_logprobs_num=k, stream=stream)
        req.detok = self.processor.new_detokenizer(req)
        spec = params.grammar_spec
        if spec is not None:
            from .grammar import GrammarError
            try:
                req.grammar_future = self.grammar.compile_async(*spec)
            except GrammarError as e:
                raise InvalidRequest(f"sampling_params.{spec[0]}: {e}") from e
        return req

    # ---- convenience API -------------------------------------------------------------------------
    def generate(self, prompt: Union[str, list, None] = None, sampling_params: Union[dict, list, None] = None, *,
                 input_ids: Optional[list] = None, return_logprob: Union[bool, list] = False,
                 logprob_start_len: Union[int, list, None] = None, top_logprobs_num: Union[int, list, None] = None,
                 stream: bool = False):
        """SGLang-style generate. A single prompt gives one dict {text, output_ids, meta_info}; a list
        of prompts gives a list of dicts; stream=True gives an iterator of cumulative dicts."""
        reqs = self._build(prompt, sampling_params, input_ids, return_logprob, logprob_start_len,
                           top_logprobs_num, stream)
        single = not isinstance(reqs, list)
        if stream:
            if not single:
                raise InvalidRequest("stream=True takes a single prompt")
            return self._stream(reqs)
        results = self._wait_all([reqs] if single else reqs)
        return results[0] if single else results

    async def async_generate(self, prompt=None, sampling_params=None, **kw):
        """Awaitable generate (or an async iterator when stream=True)."""
        import asyncio
        stream = kw.pop("stream", False)
        loop = asyncio.get_running_loop()
        reqs = self._build(prompt, sampling_params, kw.pop("input_ids", None), kw.pop("return_logprob", False),
                           kw.pop("logprob_start_len", None), kw.pop("top_logprobs_num", None), stream)
        if kw:
            raise InvalidRequest(f"unknown argument(s) {sorted(kw)}")
        if stream:
            return self._astream(reqs, loop)
        lst = [reqs] if not isinstance(reqs, list) else reqs
        futs = []
        for req in lst:
            fut = loop.create_future()
            def on_output(o: ReqOutput, fut=fut):
                if o.finished:
                    loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(o))
            req.on_output = on_output
            futs.append(fut)
            self.add_request(req)
        outs = [self._to_dict(await f) for f in futs]
        return outs if isinstance(reqs, list) else outs[0]

    async def _astream(self, req: Req, loop):
        import asyncio
        q: asyncio.Queue = asyncio.Queue()
        with self._streaming(req, lambda o: loop.call_soon_threadsafe(q.put_nowait, o)):
            while True:
                o = await q.get()
                yield self._to_dict(o)
                if o.finished:
                    return

    def _build(self, prompt, sampling_params, input_ids, return_logprob, logprob_start_len,
               top_logprobs_num, stream):
        if (prompt is None) == (input_ids is None):
            raise InvalidRequest("give exactly one of prompt (text) or input_ids")
        src = prompt if prompt is not None else input_ids
        batch = isinstance(src, list) and bool(src) and (isinstance(src[0], (list, str)))
        items = src if batch else [src]
        if batch and not items:
            raise InvalidRequest("prompt: empty batch")

        def pick(v, i):
            return v[i] if isinstance(v, list) else v

        def parse(sp) -> SamplingParams:
            return sp if isinstance(sp, SamplingParams) else SamplingParams.from_dict(sp)

        # one sampling_params for every prompt is parsed once (SamplingParams is frozen)
        shared = None if isinstance(sampling_params, list) else parse(sampling_params)
        reqs = []
        for i, item in enumerate(items):
            params = shared if shared is not None else parse(sampling_params[i])
            reqs.append(self.make_request(item, params, return_logprob=bool(pick(return_logprob, i)),
                                          logprob_start_len=pick(logprob_start_len, i),
                                          top_logprobs_num=pick(top_logprobs_num, i), stream=stream))
        return reqs if batch else reqs[0]

    def _wait_all(self, reqs: list[Req]) -> list[dict]:
        results: list[Optional[ReqOutput]] = [None] * len(reqs)
        done = threading.Event()
        remaining = [len(reqs)]
        lock = threading.Lock()
        for i, req in enumerate(reqs):
            def on_output(o: ReqOutput, i=i):
                if o.finished:
                    results[i] = o
                    with lock:
                        remaining[0] -= 1
                        if remaining[0] == 0:
                            done.set()
            req.on_output = on_output
        for req in reqs:
            self.add_request(req)
        done.wait()
        return [self._to_dict(o) for o in results]

    def _stream(self, req: Req) -> Iterator[dict]:
        q: "queue.SimpleQueue[ReqOutput]" = queue.SimpleQueue()
        with self._streaming(req, q.put):
            while True:
                o = q.get()
                yield self._to_dict(o)
                if o.finished:
                    return

    @contextmanager
    def _streaming(self, req: Req, on_output: Callable[[ReqOutput], None]) -> Iterator[None]:
        """What _stream and _astream share: route req's outputs to on_output and queue it; on the
        way out (finished, or the caller stopped iterating) abort it unless it finished."""
        req.on_output = on_output
        self.add_request(req)
        try:
            yield
        finally:
            if not req.is_finished:
                self.abort(req.rid)

    @staticmethod
    def _to_dict(o: ReqOutput) -> dict:
        d = {"text": o.text, "output_ids": o.output_ids, "meta_info": o.meta_info}
        if o.error:
            d["error"] = o.error
        return d
