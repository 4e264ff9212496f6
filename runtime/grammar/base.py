"""The grammar layer's three nouns: backend -> compiled grammar -> matcher.

    backend = XGrammarBackend(vocab)            # one per tokenizer; holds the library's tokenizer info
    grammar = backend.compile("json_schema", s)  # immutable, cached by the registry, shared by requests
    matcher = grammar.new_matcher()              # one per request; all the mutable state lives here

Each decode step the engine asks every constrained request's matcher to fill its row of a packed
int32 bitmask (bit j of word i set = token 32*i + j allowed), samples under that mask, then feeds
the sampled token back with accept_token. The bitmask kernel (sgl_lang.kernels) never sees grammar
code; the matchers never see logits.
"""
from __future__ import annotations

import codecs
from abc import ABC, abstractmethod
from typing import Literal

import torch

from .token_vocab import TokenVocab

GrammarKind = Literal["json_schema", "regex", "ebnf", "json"]
GRAMMAR_KINDS: tuple[str, ...] = ("json_schema", "regex", "ebnf", "json")


class GrammarError(ValueError):
    """Base class of the grammar layer's user-facing errors."""


class GrammarCompileError(GrammarError):
    """A spec could not be compiled; the message names the backend(s) and the problem."""


class GrammarBackendMissing(GrammarError):
    """The library behind a backend is not installed; the message says what to pip install."""


class GrammarMatcher(ABC):
    """Per-request grammar state. Not thread-safe; one owner (the scheduler) at a time."""

    @abstractmethod
    def accept_token(self, token_id: int) -> bool:
        """Advance by one token. Returns False (state unchanged) when the grammar forbids it.
        A stop token is accepted only where the grammar may end; it terminates the matcher."""

    @abstractmethod
    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        """Write the allowed-next-token set into bitmask[row] (CPU int32 [bs, ceil(vocab/32)]).
        Special tokens are never allowed; stop tokens only where the grammar may end.
        After termination only the stop tokens are allowed."""

    @abstractmethod
    def rollback(self, num_tokens: int) -> None:
        """Undo the last `num_tokens` accepted tokens (jump-forward retokenization, speculation)."""

    @abstractmethod
    def is_terminated(self) -> bool:
        """True once a stop token was accepted (or the grammar cannot continue at all)."""

    @abstractmethod
    def is_accepting(self) -> bool:
        """True when the text so far is a complete match (a stop token would be accepted)."""

    @abstractmethod
    def jump_forward_string(self) -> str:
        """The text the grammar forces next (e.g. '"name":' after '{'), "" when none."""

    def error(self) -> str:
        """Why the grammar cannot continue (library error, resource limit); "" when it can.
        When non-empty the matcher is terminated: finish the request with this as the reason."""
        return ""


class CompiledGrammar(ABC):
    """An immutable compiled spec. Cheap to share across requests and threads."""

    backend_name: str
    kind: str
    spec: str

    @abstractmethod
    def new_matcher(self) -> GrammarMatcher:
        """A fresh matcher at the start of the grammar."""

    def __repr__(self) -> str:
        spec = self.spec if len(self.spec) <= 60 else self.spec[:57] + "..."
        return f"{type(self).__name__}(backend={self.backend_name!r}, kind={self.kind!r}, spec={spec!r})"


class GrammarBackend(ABC):
    """Turns specs into CompiledGrammars for one vocabulary. Thread-safe `compile`."""

    name: str
    kinds: tuple[str, ...]  # the grammar kinds this backend can compile

    def __init__(self, vocab: TokenVocab):
        self.vocab = vocab

    @abstractmethod
    def compile(self, kind: GrammarKind, spec: str) -> CompiledGrammar:
        """Compile `spec` (a JSON-schema string, a regex, an EBNF grammar; ignored for "json").
        Raises GrammarCompileError naming the problem."""

    def _unsupported(self, kind: str) -> GrammarCompileError:
        return GrammarCompileError(
            f"{self.name}: grammar kind {kind!r} is not supported; supported: {list(self.kinds)}")


def check_bitmask_row(bitmask: torch.Tensor, row: int, vocab_size: int) -> torch.Tensor:
    """Validate a bitmask and return its row `row` (a contiguous CPU int32 view)."""
    width = (vocab_size + 31) // 32
    if bitmask.dtype != torch.int32:
        raise TypeError(f"bitmask: expected dtype torch.int32, got {bitmask.dtype}")
    if bitmask.device.type != "cpu":
        raise ValueError(f"bitmask: expected a CPU tensor, got device {bitmask.device}")
    if bitmask.dim() != 2 or bitmask.shape[1] != width:
        raise ValueError(f"bitmask: expected shape [bs, {width}], got {list(bitmask.shape)}")
    if not 0 <= row < bitmask.shape[0]:
        raise IndexError(f"bitmask row {row} outside [0, {bitmask.shape[0]})")
    view = bitmask[row]
    if not view.is_contiguous():
        raise ValueError("bitmask: expected contiguous rows")
    return view


def decode_forced(data: bytes) -> str:
    """Forced bytes as text: the whole characters at the front; "" when `data` starts inside a
    character (the text so far ends mid-character, so nothing can be appended as text)."""
    if not data or (data[0] & 0xC0) == 0x80:
        return ""
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(data)  # drops a partial tail
    except UnicodeDecodeError as e:
        return data[:e.start].decode("utf-8")


def _set_token_bits(row: torch.Tensor, token_ids, is_allowed: bool) -> None:
    """row[t // 32] bit (t % 32) = is_allowed, for each t in `token_ids` (row: [width] int32)."""
    for t in token_ids:
        word, bit = divmod(int(t), 32)
        value = int(row[word]) & 0xFFFFFFFF  # the word as unsigned 32 bits
        value = value | (1 << bit) if is_allowed else value & ~(1 << bit)
        row[word] = value - (1 << 32) if value >= 1 << 31 else value  # store as signed int32


def allow_tokens(row: torch.Tensor, token_ids) -> None:
    """Also allow `token_ids` in one bitmask row ([width] int32); other bits are kept."""
    _set_token_bits(row, token_ids, True)


def ban_tokens(row: torch.Tensor, token_ids) -> None:
    """Disallow `token_ids` in one bitmask row ([width] int32); other bits are kept."""
    _set_token_bits(row, token_ids, False)


def allow_only_tokens(row: torch.Tensor, token_ids) -> None:
    """Set one bitmask row ([width] int32) to allow exactly `token_ids`."""
    row.zero_()
    allow_tokens(row, token_ids)
