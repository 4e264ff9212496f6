"""LocalBackend / Runtime: the frontend's only bridge into sgl_lang.runtime (imported lazily).

`sgl.Runtime(model_path=None, **engine_flags)` starts an in-process Engine; with no model path it
serves the default model (SmolLM2-135M-Instruct). Backends see value objects only.
"""
from __future__ import annotations

import json
from typing import Any, Iterator, Optional

from ..ir import GenParams
from .base import Backend, GenerateRequest, GenerateResult, ScoreRequest, ScoreResult, StreamChunk

_SAMPLING_FIELDS = ("max_new_tokens", "min_new_tokens", "stop", "stop_token_ids", "temperature", "top_p",
                    "top_k", "min_p", "frequency_penalty", "presence_penalty", "repetition_penalty",
                    "ignore_eos", "regex", "json_schema", "ebnf", "seed")


def sampling_dict(p: GenParams) -> dict:
    """GenParams -> the runtime's sampling_params dict (SGLang names)."""
    d = {k: v for k, v in p.to_dict().items() if k in _SAMPLING_FIELDS}
    return d


def logprob_kwargs(p: GenParams) -> dict:
    out = {}
    if p.return_logprob:
        out["return_logprob"] = True
        if p.logprob_start_len is not None:
            out["logprob_start_len"] = p.logprob_start_len
        if p.top_logprobs_num:
            out["top_logprobs_num"] = p.top_logprobs_num
    return out


class Runtime(Backend):
    """In-process local runtime backend."""

    def __init__(self, model_path: Optional[str] = None, **flags: Any):
        from sgl_lang.runtime.engine import Engine  # the lazy bridge
        flags.pop("log_level", None) if flags.get("log_level") is None else None
        self.engine = Engine(model_path=model_path, **flags)
        self.tokenizer = self.engine.tokenizer
        self._chat_template = None

    # SGLang's Runtime exposes `.endpoint`; the interpreter unwraps it
    @property
    def endpoint(self) -> "Runtime":
        return self

    def get_model_name(self) -> str:
        return self.engine.config.served_model_name or self.engine.model_dir

    def get_tokenizer(self):
        return self.tokenizer

    def get_chat_template(self):
        if self._chat_template is None:
            from ..chat_template import ChatTemplate, get_chat_template_by_model_path
            if getattr(self.tokenizer, "chat_template", None):
                render = lambda msgs: self.tokenizer.apply_chat_template(msgs, tokenize=False)
                eos = [self.tokenizer.decode([t]) for t in self.engine.eos_token_ids]
                self._chat_template = ChatTemplate.from_render_fn(
                    self.get_model_name(), render, stop_str=[s for s in eos if s])
            else:
                self._chat_template = get_chat_template_by_model_path(self.get_model_name())
        return self._chat_template

    def generate(self, req: GenerateRequest) -> GenerateResult:
        out = self.engine.generate(req.text, sampling_dict(req.params), **logprob_kwargs(req.params))
        _raise_on_error(out)
        return GenerateResult(out["text"], out["meta_info"])

    def generate_stream(self, req: GenerateRequest) -> Iterator[StreamChunk]:
        sent = 0
        for out in self.engine.generate(req.text, sampling_dict(req.params), stream=True,
                                        **logprob_kwargs(req.params)):
            _raise_on_error(out)
            text = out["text"]
            yield StreamChunk(text[sent:], out["meta_info"])
            sent = len(text)

    def score(self, req: ScoreRequest) -> ScoreResult:
        """All choices in one batched prefill after the shared context is cached."""
        tok = self.tokenizer
        ctx_ids = tok.encode(req.text)
        self.engine.generate(input_ids=ctx_ids, sampling_params={"max_new_tokens": 0})
        fulls = [tok.encode(req.text + c) for c in req.choices]
        starts = []
        for ids in fulls:
            common = 0
            while common < min(len(ids), len(ctx_ids)) and ids[common] == ctx_ids[common]:
                common += 1
            # score from the first token that differs from the context (token healing: a choice
            # may merge with the context's last token); keep the token before it as the "None" entry
            starts.append(max(min(common, len(ids) - 1) - 1, 0))
        outs = self.engine.generate(input_ids=fulls, sampling_params=[{"max_new_tokens": 0}] * len(fulls),
                                    return_logprob=True, logprob_start_len=starts)
        input_lps, output_lps, normalized = [], [], []
        for out in outs:
            _raise_on_error(out)
            lps = out["meta_info"]["input_token_logprobs"][1:]  # the choice's own tokens
            input_lps.append(lps)
            output_lps.append(out["meta_info"]["output_token_logprobs"])
            vals = [x[0] for x in lps if x[0] is not None]
            normalized.append(sum(vals) / len(vals) if vals else 0.0)
        uncond = None
        if req.need_unconditional:
            # each choice's scored tokens alone, with no context
            ids_lists = [[x[1] for x in lps] for lps in input_lps]
            uo = self.engine.generate(input_ids=ids_lists, sampling_params=[{"max_new_tokens": 0}] * len(ids_lists),
                                      return_logprob=True, logprob_start_len=[0] * len(ids_lists))
            uncond = [o["meta_info"]["input_token_logprobs"] for o in uo]
        return ScoreResult(input_lps, output_lps, normalized, uncond)

    def cache_prefix(self, text: str) -> None:
        if text:
            self.engine.generate(text, {"max_new_tokens": 0})

    def flush_cache(self) -> bool:
        return self.engine.flush_cache()

    def get_server_info(self) -> dict:
        cfg = self.engine.config
        info = {k: v for k, v in vars(cfg).items() if k != "extra"}
        info["model_dir"] = self.engine.model_dir
        info["internal_states"] = [self.engine.get_stats()]
        return info

    def shutdown(self) -> None:
        self.engine.shutdown()


def _raise_on_error(out: dict) -> None:
    if out.get("error"):
        from ..errors import BackendError
        raise BackendError(f"local runtime: {out['error']}")
