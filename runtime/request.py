"""Req: one generation request as the scheduler tracks it (plain data, no tensors but KV slot ids)."""
from __future__ import annotations

import enum
import time
from array import array
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from .sampling_params import SamplingParams


class ReqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class ReqOutput:
    """What the engine hands back to the caller after each step that changed a request."""
    rid: str
    text: str  # cumulative output text (stop strings trimmed)
    output_ids: list[int]
    meta_info: dict
    finished: bool
    error: Optional[str] = None


@dataclass(eq=False)
class Req:
    rid: str
    prompt_ids: list[int]
    params: SamplingParams
    return_logprob: bool = False
    logprob_start_len: int = -1  # >= 0: return input logprobs for prompt_ids[logprob_start_len:]
    top_logprobs_num: int = 0
    on_output: Optional[Callable[[ReqOutput], None]] = None  # called from the engine thread
    stream: bool = False

    status: ReqStatus = ReqStatus.WAITING
    output_ids: list[int] = field(default_factory=list)
    # KV: slots of fill_ids[:kv_len]; the first `locked_len` of them belong to the radix cache
    # (locked through `last_node`), the rest are owned by this request. A compact int64 array:
    # a decode step appends one Python int, not a one-element tensor.
    kv_slots: array = field(default_factory=lambda: array("q"))
    kv_len: int = 0
    cached_len: int = 0  # prompt tokens served from the radix cache at (first) admission
    locked_len: int = 0
    last_node: Any = None
    num_retractions: int = 0
    # prefill progress of this step (set by the scheduler)
    extend_len: int = 0
    # overlapped scheduling: tokens sampled on the device but not yet in output_ids (0 or 1
    # between steps), and the row of the latest launched step's token tensor that holds it
    num_pending: int = 0
    pending_row: int = -1
    # its row of the device-side slot table (ReqToTokenTable) and how much of it is up to date
    table_row: int = -1
    table_len: int = 0
    # output state
    text: str = ""
    finish_reason: Optional[dict] = None
    grammar: Any = None  # a GrammarMatcher when the request is constrained
    grammar_future: Any = None
    detok: Any = None
    # logprobs: lists of (logprob, token_id)
    input_token_logprobs: list = field(default_factory=list)
    input_top_logprobs: list = field(default_factory=list)
    output_token_logprobs: list = field(default_factory=list)
    output_top_logprobs: list = field(default_factory=list)
    created_at: float = field(default_factory=time.perf_counter)
    first_token_at: Optional[float] = None
    finished_at: Optional[float] = None
    error: Optional[str] = None

    @property
    def kv_indices(self) -> torch.Tensor:
        """[kv_len] int64 CPU tensor: the KV slots of fill_ids[:kv_len] (a copy of kv_slots)."""
        if not self.kv_slots:
            return torch.empty(0, dtype=torch.int64)
        return torch.frombuffer(self.kv_slots, dtype=torch.int64).clone()

    @kv_indices.setter
    def kv_indices(self, value: torch.Tensor) -> None:
        self.kv_slots = array("q", bytes(8 * value.numel()))
        if value.numel():
            torch.frombuffer(self.kv_slots, dtype=torch.int64).copy_(value)
        self.table_len = 0  # the device table row no longer matches

    def append_kv(self, slots: Sequence[int]) -> None:
        """Record the KV slots of the tokens computed after fill_ids[:kv_len]."""
        self.kv_slots.extend(slots)

    @property
    def fill_ids(self) -> list[int]:
        """Every token of the sequence so far: prompt then output."""
        return self.prompt_ids + self.output_ids

    def tokens(self, start: int, end: int) -> list[int]:
        """fill_ids[start:end] without building the whole list (hot path: one decode token)."""
        n = len(self.prompt_ids)
        if start >= n:
            return self.output_ids[start - n:end - n]
        if end <= n:
            return self.prompt_ids[start:end]
        return self.prompt_ids[start:] + self.output_ids[:end - n]

    @property
    def seq_len(self) -> int:
        """Tokens of the sequence, counting those sampled but not yet read back (num_pending)."""
        return len(self.prompt_ids) + len(self.output_ids) + self.num_pending

    @property
    def num_output_tokens(self) -> int:
        """Output tokens sampled so far, read back or not."""
        return len(self.output_ids) + self.num_pending

    @property
    def num_uncomputed(self) -> int:
        """Tokens of fill_ids without KV yet; 1 means a plain decode step."""
        return self.seq_len - self.kv_len

    @property
    def is_finished(self) -> bool:
        return self.finish_reason is not None

    def finish(self, reason: dict) -> None:
        if self.finish_reason is None:
            self.finish_reason = reason
            self.finished_at = time.perf_counter()
