"""The backend protocol and the value objects that cross it.

The interpreter builds a GenerateRequest / ScoreRequest from program state and hands it to a
backend; the backend answers with a GenerateResult / ScoreResult. Backends never see or mutate
interpreter state.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from ..ir import GenParams


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class GenerateRequest:
    text: str  # the whole prompt so far (chat template already applied by the interpreter)
    messages: tuple[Message, ...]  # completed turns, for chat-style backends
    params: GenParams  # resolved sampling params (program defaults merged with the gen's own)
    is_in_assistant_turn: bool = False  # the text ends right after an assistant role prefix


@dataclass(frozen=True)
class GenerateResult:
    text: str
    meta_info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StreamChunk:
    delta: str  # new text since the previous chunk
    meta_info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreRequest:
    """Score each `text + choice` continuation (for select)."""
    text: str
    choices: tuple[str, ...]
    need_unconditional: bool = False  # also return unconditional logprobs of each choice's tokens
    messages: tuple[Message, ...] = ()


# A token logprob entry as SGLang returns it: (logprob or None, token_id, token_text or None)
TokenLogprob = tuple


@dataclass(frozen=True)
class ScoreResult:
    # One list per choice, each entry (logprob, token_id, text). The first scored entry of each
    # list may be a context token (token healing), as SGLang's server returns.
    input_token_logprobs: list
    output_token_logprobs: list
    normalized_prompt_logprobs: list  # one float per choice: mean of its scored logprobs
    unconditional_token_logprobs: Optional[list] = None
    meta_info: dict = field(default_factory=dict)


class Backend(ABC):
    """What every frontend backend implements. Methods are thread-safe: run_batch calls them
    from many threads at once."""

    #: whether `select` is implemented by scoring (ScoreRequest) on this backend
    supports_score: bool = True
    #: whether the backend expects chat messages (OpenAI chat models) rather than raw text
    is_chat_model: bool = False

    def get_chat_template(self):
        """A sgl_lang.chat_template.ChatTemplate used to render roles into text."""
        from ..chat_template import get_chat_template
        return get_chat_template("default")

    @abstractmethod
    def generate(self, req: GenerateRequest) -> GenerateResult: ...

    def generate_stream(self, req: GenerateRequest) -> Iterator[StreamChunk]:
        """Default: one chunk with the whole result."""
        res = self.generate(req)
        yield StreamChunk(res.text, res.meta_info)

    def score(self, req: ScoreRequest) -> ScoreResult:
        from ..errors import UnsupportedFeature
        raise UnsupportedFeature(f"{type(self).__name__} cannot score choices (select)")

    def cache_prefix(self, text: str) -> None:
        """Warm the backend's prefix cache with `text` (no output). Default: nothing."""

    def flush_cache(self) -> bool:
        return False

    def get_server_info(self) -> Optional[dict[str, Any]]:
        return None

    def shutdown(self) -> None:
        pass
