"""TokenVocab: the tokenizer seen as bytes, the one input every grammar backend is built from.

Grammar libraries need to know, for every token id, which raw bytes it emits. Byte-level BPE
tokenizers (GPT-2 style, SmolLM2) store tokens as printable stand-ins for bytes ("Ġ" is b" ");
SentencePiece-style ones use "▁" for a space and "<0xAB>" for byte fallback. We decode both here,
once, so that the three adapters agree on the vocabulary and none of them goes to the network.

Special tokens (control tokens such as <|im_start|>) get no bytes: no grammar may ever allow them.
Stop tokens (EOS) are allowed only where the grammar can end.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence


class TokenizerNotSupported(ValueError):
    """The tokenizer's vocabulary cannot be mapped back to bytes."""


def _byte_level_table() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: printable stand-in char -> byte value."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    table = {chr(b): b for b in printable}
    shift = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + shift)] = b
            shift += 1
    return table


_BYTE_LEVEL = _byte_level_table()


def _decode_byte_level(token: str) -> Optional[bytes]:
    try:
        return bytes(_BYTE_LEVEL[c] for c in token)
    except KeyError:
        return None  # not a byte-level piece (e.g. an added plain-text token)


def _decode_sentencepiece(token: str) -> bytes:
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        return bytes([int(token[3:5], 16)])
    return token.replace("\u2581", " ").encode("utf-8")


@dataclass(frozen=True)
class TokenVocab:
    """Per token id its bytes; `None` for special tokens and ids the tokenizer does not define.

    vocab_size is the model's (the logits width), which may exceed the tokenizer's size.
    """

    token_bytes: tuple[Optional[bytes], ...]  # [vocab_size]
    stop_token_ids: tuple[int, ...]  # allowed only where the grammar may end; first is EOS
    special_token_ids: tuple[int, ...]  # never allowed inside a grammar (stop ids excluded)
    encode: Optional[Callable[[str], list[int]]] = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if not self.stop_token_ids:
            raise ValueError("TokenVocab needs at least one stop token id (EOS)")
        for t in self.stop_token_ids:
            if not 0 <= t < self.vocab_size:
                raise ValueError(f"stop token id {t} outside the vocabulary [0, {self.vocab_size})")

    @property
    def vocab_size(self) -> int:
        return len(self.token_bytes)

    @property
    def eos_token_id(self) -> int:
        return self.stop_token_ids[0]

    @property
    def bitmask_width(self) -> int:
        """int32 words per bitmask row: ceil(vocab_size / 32)."""
        return (self.vocab_size + 31) // 32

    @classmethod
    def from_tokens(cls, tokens: Sequence[Optional[bytes]], stop_token_ids: Sequence[int],
                    encode: Optional[Callable[[str], list[int]]] = None) -> "TokenVocab":
        """A synthetic vocabulary (tests): `None` marks a special token."""
        stops = tuple(dict.fromkeys(int(t) for t in stop_token_ids))
        specials = tuple(i for i, b in enumerate(tokens) if b is None and i not in stops)
        return cls(tuple(tokens), stops, specials, encode)

    @classmethod
    def from_hf_tokenizer(cls, tokenizer, vocab_size: int,
                          stop_token_ids: Sequence[int] = ()) -> "TokenVocab":
        """Decode a Hugging Face fast tokenizer (anything with `backend_tokenizer`, or a
        `tokenizers.Tokenizer`). EOS is added to the stop ids when the tokenizer names one."""
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        if not hasattr(backend, "to_str"):
            raise TokenizerNotSupported(
                f"expected a Hugging Face fast tokenizer or tokenizers.Tokenizer, got "
                f"{type(tokenizer).__name__}")
        spec = json.loads(backend.to_str())
        added = {t["id"]: t for t in spec.get("added_tokens", [])}
        decoder = json.dumps(spec.get("decoder") or {})
        is_byte_level = '"ByteLevel"' in decoder
        if not is_byte_level and "\u2581" not in decoder and '"ByteFallback"' not in decoder \
                and '"Metaspace"' not in decoder:
            raise TokenizerNotSupported(
                f"expected a byte-level BPE or SentencePiece-style decoder, got {decoder[:200]}")

        token_bytes: list[Optional[bytes]] = [None] * vocab_size
        for piece, idx in backend.get_vocab(with_added_tokens=True).items():
            if idx >= vocab_size:
                continue
            entry = added.get(idx)
            if entry is not None:
                token_bytes[idx] = None if entry.get("special") else entry["content"].encode("utf-8")
                continue
            if is_byte_level:
                token_bytes[idx] = _decode_byte_level(piece)
                if token_bytes[idx] is None:
                    token_bytes[idx] = piece.encode("utf-8")
            else:
                token_bytes[idx] = _decode_sentencepiece(piece)

        stops = [int(t) for t in stop_token_ids]
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is not None and eos not in stops:
            stops.insert(0, int(eos))
        stops = tuple(dict.fromkeys(stops))
        if not stops:
            raise TokenizerNotSupported("the tokenizer names no EOS token; pass stop_token_ids")
        specials = tuple(i for i, b in enumerate(token_bytes) if b is None and i not in stops)

        def encode(text: str) -> list[int]:
            return backend.encode(text, add_special_tokens=False).ids

        return cls(tuple(token_bytes), stops, specials, encode)
