"""OutputProcessor: applies one step's model results to the requests (tokens, logprobs, stop
checks, detokenization) and builds the outputs handed back to callers."""
from __future__ import annotations

import logging
import time

from .detokenizer import IncrementalDetokenizer
from .step_output import RunnerOutput
from .request import Req, ReqOutput
from .scheduled_batch import ScheduledBatch

logger = logging.getLogger("sgl_lang.runtime")


class OutputProcessor:
    def __init__(self, tokenizer, eos_token_ids: tuple[int, ...], max_context_len: int,
                 jump_forward: bool = True):
        self.tokenizer = tokenizer
        self.jump_forward = jump_forward
        self.num_jump_forward_tokens = 0
        self.eos_token_ids = frozenset(eos_token_ids)
        self.max_context_len = max_context_len
        # per skip_special_tokens: the detokenizers' shared texts of single tokens
        self._short_texts: dict[bool, dict[int, str]] = {True: {}, False: {}}

    def new_detokenizer(self, req: Req) -> IncrementalDetokenizer:
        p = req.params
        return IncrementalDetokenizer(self.tokenizer, p.skip_special_tokens, p.stop, p.no_stop_trim,
                                      lazy=not req.stream,
                                      short_texts=self._short_texts[bool(p.skip_special_tokens)])

    def process(self, batch: ScheduledBatch, out: RunnerOutput) -> None:
        tokens = out.next_token_ids
        for i, req in enumerate(batch.reqs):
            if req.finish_reason is not None:  # req.is_finished
                continue
            token = tokens[i]
            if token is not None and not req.return_logprob and req.grammar is None and not req.error:
                self._append_plain_token(req, token)
            else:
                self._process_one(batch, out, i, req)

    def _append_plain_token(self, req: Req, token: int) -> None:
        """What _process_one does for a sampled token of a request with no logprobs, grammar or
        error (most requests, most steps), without its general branches: this runs for every
        request and step. (Without logprobs there are no input logprobs: logprob_start_len < 0.)"""
        p = req.params
        try:
            if req.first_token_at is None:
                req.first_token_at = time.perf_counter()
            req.output_ids.append(token)
            if token in p.stop_token_ids or (not p.ignore_eos and token in self.eos_token_ids):
                req.finish({"type": "stop", "matched": token})
            else:
                detok = req.detok
                detok.add_token(token)
                if detok.matched_stop is not None:
                    req.finish({"type": "stop", "matched": detok.matched_stop})
            if req.finish_reason is None:
                if len(req.output_ids) >= p.max_new_tokens:
                    req.finish({"type": "length", "length": p.max_new_tokens})
                elif len(req.prompt_ids) + len(req.output_ids) >= self.max_context_len:
                    req.finish({"type": "length", "length": len(req.output_ids)})
        except Exception as e:  # tokenizer code failing ends only this request
            req.error = req.error or f"{type(e).__name__}: {e}"
            if not req.is_finished:
                req.finish({"type": "abort", "message": req.error})
        if req.stream or req.finish_reason is not None:
            self.emit(req)

    def _process_one(self, batch: ScheduledBatch, out: RunnerOutput, i: int, req: Req) -> None:
        """Apply batch.reqs[i]'s results of the step (any request that has not finished)."""
        if out.input_logprobs and out.input_logprobs[i]:
            if not req.input_token_logprobs:
                start = req.logprob_start_len
                req.input_token_logprobs.append((None, req.prompt_ids[start]))
                req.input_top_logprobs.append(None)
            req.input_token_logprobs.extend(out.input_logprobs[i])
            req.input_top_logprobs.extend(out.input_top_logprobs[i] or [None] * len(out.input_logprobs[i]))
        elif req.logprob_start_len == len(req.prompt_ids) - 1 and not req.input_token_logprobs \
                and req.kv_len >= len(req.prompt_ids):
            req.input_token_logprobs.append((None, req.prompt_ids[-1]))
            req.input_top_logprobs.append(None)
        token = out.next_token_ids[i]
        if token is None:
            # prefill-only request (max_new_tokens == 0) whose last chunk was this step (judged
            # on the step itself: with overlap the next step may already be committed)
            reached_end = batch.prefix_lens[i] + batch.extend_lens[i] >= req.seq_len
            if reached_end and req.num_output_tokens >= req.params.max_new_tokens:
                req.finish({"type": "length", "length": 0})
                self.emit(req)
            return
        self._append_token(req, token, out.next_token_logprobs[i], out.next_top_logprobs[i])
        if req.stream or req.is_finished:
            self.emit(req)

    def _append_token(self, req: Req, token: int, logprob, top) -> None:
        try:
            self._append_token_unguarded(req, token, logprob, top)
        except Exception as e:  # grammar / tokenizer code failing ends only this request
            req.error = req.error or f"{type(e).__name__}: {e}"
        if req.error and not req.is_finished:
            req.finish({"type": "abort", "message": req.error})

    def _append_token_unguarded(self, req: Req, token: int, logprob, top) -> None:
        if req.error:  # e.g. its grammar failed while filling this step's mask
            return
        if req.first_token_at is None:
            req.first_token_at = time.perf_counter()
        req.output_ids.append(token)
        if req.return_logprob:
            req.output_token_logprobs.append((logprob, token))
            req.output_top_logprobs.append(top)
        p = req.params
        if req.grammar is not None and not req.grammar.accept_token(token):
            req.error = req.grammar.error() or f"grammar rejected sampled token {token}"
            req.finish({"type": "abort", "message": req.error})
            return
        if token in p.stop_token_ids:
            req.finish({"type": "stop", "matched": token})
        elif not p.ignore_eos and token in self.eos_token_ids:
            req.finish({"type": "stop", "matched": token})
        else:
            req.detok.add_token(token)
            if req.detok.matched_stop is not None:
                req.finish({"type": "stop", "matched": req.detok.matched_stop})
            elif req.grammar is not None and req.grammar.is_terminated():
                req.finish({"type": "stop", "matched": None})
        if not req.is_finished and self.jump_forward and req.grammar is not None and not req.return_logprob:
            self._jump_forward(req)
        if not req.is_finished:
            if len(req.output_ids) >= p.max_new_tokens:
                req.finish({"type": "length", "length": p.max_new_tokens})
            elif len(req.prompt_ids) + len(req.output_ids) >= self.max_context_len:
                req.finish({"type": "length", "length": len(req.output_ids)})

    def _jump_forward(self, req: Req) -> None:
        """Append the text the grammar forces next as tokens, without sampling them: the
        scheduler sees several uncomputed tokens and computes them in one extend step."""
        forced = req.grammar.jump_forward_string()
        if not forced:
            return
        budget = req.params.max_new_tokens - len(req.output_ids) - 1  # leave room for one sample
        for token in self.tokenizer.encode(forced, add_special_tokens=False)[:max(budget, 0)]:
            if not req.grammar.accept_token(token):
                break  # the grammar wants another split here; sampling continues from this state
            req.output_ids.append(token)
            self.num_jump_forward_tokens += 1
            req.detok.add_token(token)
            if req.detok.matched_stop is not None:
                req.finish({"type": "stop", "matched": req.detok.matched_stop})
                return

    def emit(self, req: Req) -> None:
        if req.is_finished:
            req.detok.finish()
        if req.on_output is not None:
            try:
                req.on_output(self.build_output(req))
            except Exception:  # a caller's callback failing (e.g. its event loop closed) is its problem
                logger.exception("output callback of request %s raised; its output is dropped", req.rid)

    def build_output(self, req: Req) -> ReqOutput:
        is_finished = req.is_finished
        text = req.detok.text if is_finished else req.detok.text[:req.detok.sent_len]
        meta = {
            "id": req.rid,
            "finish_reason": req.finish_reason,
            "prompt_tokens": len(req.prompt_ids),
            "completion_tokens": len(req.output_ids),
            "cached_tokens": req.cached_len,
            "num_retractions": req.num_retractions,
        }
        if is_finished:
            meta["e2e_latency"] = req.finished_at - req.created_at
        if req.first_token_at is not None:
            meta["ttft"] = req.first_token_at - req.created_at
        if req.return_logprob:
            dec = self._token_text
            meta["input_token_logprobs"] = [(lp, t, dec(t)) for lp, t in req.input_token_logprobs]
            meta["output_token_logprobs"] = [(lp, t, dec(t)) for lp, t in req.output_token_logprobs]
            if req.top_logprobs_num > 0:
                meta["input_top_logprobs"] = [None if x is None else [(lp, t, dec(t)) for lp, t in x]
                                              for x in req.input_top_logprobs]
                meta["output_top_logprobs"] = [None if x is None else [(lp, t, dec(t)) for lp, t in x]
                                               for x in req.output_top_logprobs]
        return ReqOutput(req.rid, text, list(req.output_ids), meta, is_finished, req.error)

    def _token_text(self, token: int) -> str:
        return self.tokenizer.decode([token])
