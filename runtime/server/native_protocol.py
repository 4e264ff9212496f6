"""GenerateReqInput: SGLang's native POST /generate body, validated, and its expansion into one
engine item per (prompt, sample) — a batch of prompts and `n` > 1 both become lists."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, ValidationError

from .api_error import bad_request, from_validation_error

# Fields SGLang's GenerateReqInput has that this server accepts and ignores.
IGNORED_FIELDS = ("rid", "session_params", "lora_path", "modalities", "custom_logit_processor",
                  "return_hidden_states", "log_metrics", "data_parallel_rank", "bootstrap_host",
                  "bootstrap_port", "bootstrap_room", "routed_dp_rank", "token_ids_logprob")
_MEDIA_FIELDS = ("image_data", "video_data", "audio_data")
MAX_N = 64


class GenerateReqInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Optional[Union[str, list[str]]] = None
    input_ids: Optional[Union[list[StrictInt], list[list[StrictInt]]]] = None
    sampling_params: Optional[Union[dict, list[dict]]] = None
    stream: StrictBool = False
    return_logprob: Optional[Union[StrictBool, list[StrictBool]]] = None
    logprob_start_len: Optional[Union[StrictInt, list[StrictInt]]] = None
    top_logprobs_num: Optional[Union[StrictInt, list[StrictInt]]] = None
    return_text_in_logprobs: StrictBool = False
    image_data: Any = None
    video_data: Any = None
    audio_data: Any = None


@dataclass(frozen=True)
class GenerateItems:
    """The request expanded: one entry per engine request, in response order."""
    prompts: list  # str or list[int] each
    sampling: list[dict]
    logprob_kwargs: dict  # return_logprob / logprob_start_len / top_logprobs_num, each a list
    is_batch: bool  # answer with a list (several prompts, or n > 1)


def parse_generate(body: dict) -> tuple[GenerateReqInput, GenerateItems]:
    body = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
    try:
        req = GenerateReqInput.model_validate(body)
    except ValidationError as e:
        raise from_validation_error(e) from None
    for name in _MEDIA_FIELDS:
        if getattr(req, name):
            raise bad_request(f"{name}: this server serves text-only models", param=name)
    if (req.text is None) == (req.input_ids is None):
        raise bad_request("give exactly one of text or input_ids", param="text")
    src = req.text if req.text is not None else req.input_ids
    field = "text" if req.text is not None else "input_ids"
    if isinstance(src, list) and not src:
        raise bad_request(f"{field}: must not be empty", param=field)
    is_batch = isinstance(src, list) and bool(src) and isinstance(src[0], (str, list))
    prompts = list(src) if is_batch else [src]

    def per_prompt(value: Any, name: str) -> list:
        if isinstance(value, list):
            if len(value) != len(prompts):
                raise bad_request(f"{name}: a list must have one entry per prompt ({len(prompts)}), "
                                  f"got {len(value)}", param=name)
            return list(value)
        return [value] * len(prompts)

    sampling = [dict(sp or {}) for sp in per_prompt(req.sampling_params, "sampling_params")]
    for sp in sampling:
        _take_stop_regex(sp)
    kwargs = {"return_logprob": per_prompt(req.return_logprob, "return_logprob"),
              "logprob_start_len": per_prompt(req.logprob_start_len, "logprob_start_len"),
              "top_logprobs_num": per_prompt(req.top_logprobs_num, "top_logprobs_num")}
    kwargs["logprob_start_len"] = [_default_start(start, want, sp) for start, want, sp
                                   in zip(kwargs["logprob_start_len"], kwargs["return_logprob"], sampling)]
    counts = [_take_n(sp) for sp in sampling]
    if any(n > 1 for n in counts):
        is_batch = True

    def expand(values: list) -> list:
        return [v for v, n in zip(values, counts) for _ in range(n)]

    items = GenerateItems(expand(prompts), expand(sampling),
                          {k: expand(v) for k, v in kwargs.items()}, is_batch)
    return req, items


def _default_start(start: Optional[int], want_logprob: Optional[bool], sp: dict) -> Optional[int]:
    """A prefill-only request (max_new_tokens 0) that asks for logprobs without a start gets the
    whole prompt's: there are no output logprobs, and SGLang's frontend relies on this for
    `unconditional_likelihood_normalized` (it sends `input_ids` with no `logprob_start_len`)."""
    if start is None and want_logprob and sp.get("max_new_tokens", sp.get("max_tokens")) == 0:
        return 0
    return start


def _take_stop_regex(sp: dict) -> None:
    """SGLang's frontend always sends `stop_regex` (None unless set); accept the empty value and
    refuse a real one clearly, since the engine stops on strings and token ids only."""
    value = sp.pop("stop_regex", None)
    if value not in (None, "", [], ()):
        raise bad_request("sampling_params.stop_regex: regex stop conditions are not supported by "
                          "this server; use `stop` strings or a `regex` constraint",
                          param="sampling_params.stop_regex")


def _take_n(sp: dict) -> int:
    """Remove `n` from a sampling dict (the server expands it into n requests)."""
    n = sp.pop("n", 1)
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise bad_request(f"sampling_params.n: must be an integer in [1, {MAX_N}], got {n!r}",
                          param="sampling_params.n")
    return n


def strip_logprob_text(meta: dict) -> None:
    """SGLang sends token text in logprob entries only with return_text_in_logprobs."""
    for key in ("input_token_logprobs", "output_token_logprobs"):
        if key in meta:
            meta[key] = [(lp, t, None) for lp, t, _ in meta[key]]
    for key in ("input_top_logprobs", "output_top_logprobs"):
        if key in meta:
            meta[key] = [None if row is None else [(lp, t, None) for lp, t, _ in row] for row in meta[key]]
