"""IncrementalDetokenizer: output ids -> text, one token at a time, plus stop-string checks.

Decoding a token alone can yield half a UTF-8 character or lose a leading space, so we decode a
small window: ids[prefix_offset:] minus ids[prefix_offset:read_offset] and only emit text once it
does not end in the replacement character.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence


def plain_decoder(tokenizer) -> Callable[..., str]:
    """decode(ids, skip_special_tokens=...) -> str, as tokenizer.decode gives it. For an HF fast
    tokenizer that does no clean-up of the text, its Rust tokenizer's own decode gives the same
    text without the Python wrapper (about half the cost of a short decode)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and getattr(tokenizer, "clean_up_tokenization_spaces", None) is False:
        return backend.decode
    return tokenizer.decode


class IncrementalDetokenizer:
    def __init__(self, tokenizer, skip_special_tokens: bool = True, stop: Sequence[str] = (),
                 no_stop_trim: bool = False, lazy: bool = False,
                 short_texts: Optional[dict[int, str]] = None):
        self.tokenizer = tokenizer
        self._plain_decode = plain_decoder(tokenizer)
        # decode of windows of at most one token, by its id (-1: empty), for this tokenizer and
        # skip_special_tokens; a runtime shares one among its detokenizers
        self._short_texts = {} if short_texts is None else short_texts
        # lazy: nobody reads the text before the end (no stop strings, no streaming), so tokens
        # are only collected and decoded once by finish()
        self.lazy = lazy and not stop
        self.skip_special_tokens = skip_special_tokens
        self.stop = tuple(stop)
        self.max_stop_len = max((len(s) for s in self.stop), default=0)
        self.no_stop_trim = no_stop_trim
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.text = ""  # decoded text so far (trimmed at a matched stop string)
        self.sent_len = 0  # text[:sent_len] has been handed out as deltas
        self.matched_stop: Optional[str] = None

    def _decode(self, ids: list[int]) -> str:
        return self._plain_decode(ids, skip_special_tokens=self.skip_special_tokens)

    def add_token(self, token_id: int) -> str:
        """Append one token; return the newly emitted text (may be '' while a char is partial).
        After a stop string is matched, `matched_stop` is set and the text is trimmed."""
        ids = self.ids
        ids.append(token_id)
        if self.lazy:
            return ""
        start, end = self.prefix_offset, self.read_offset
        if end - start <= 1:  # (the common case: the token emitted last, one decode saved)
            key = ids[start] if end > start else -1
            prefix_text = self._short_texts.get(key)
            if prefix_text is None:
                prefix_text = self._short_texts[key] = self._decode(ids[start:end])
        else:
            prefix_text = self._decode(ids[start:end])
        new_text = self._decode(ids[start:])
        if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
            return ""
        delta = new_text[len(prefix_text):]
        self.prefix_offset = self.read_offset
        self.read_offset = len(self.ids)
        return self._append(delta)

    def flush(self) -> str:
        """At finish: emit whatever is still held back (e.g. an incomplete character)."""
        if self.matched_stop is not None or self.read_offset == len(self.ids):
            return ""
        prefix_text = self._decode(self.ids[self.prefix_offset:self.read_offset])
        new_text = self._decode(self.ids[self.prefix_offset:])
        self.read_offset = len(self.ids)
        return self._append(new_text[len(prefix_text):])

    def _append(self, delta: str) -> str:
        if self.matched_stop is not None:
            return ""
        before = len(self.text)
        self.text += delta
        if self.stop:
            # a stop string may straddle the previous text and the new delta
            start = max(0, before - self.max_stop_len + 1)
            best = None
            for s in self.stop:
                pos = self.text.find(s, start)
                if pos != -1 and (best is None or pos < best[0]):
                    best = (pos, s)
            if best is not None:
                pos, s = best
                self.matched_stop = s
                self.text = self.text[:pos + len(s) if self.no_stop_trim else pos]
                return self._take(len(self.text))
        return self._take(len(self.text) - self._stop_prefix_holdback())

    def _stop_prefix_holdback(self) -> int:
        """Length of the longest tail of text (shorter than the longest stop string) that could
        still grow into a stop string. Only tails that start with a stop string's first
        character are tried."""
        window = self.text[max(0, len(self.text) - self.max_stop_len + 1):] if self.max_stop_len > 1 else ""
        longest = 0
        for s in self.stop:
            i = window.find(s[0])
            while i != -1 and len(window) - i > longest:
                if s.startswith(window[i:]):
                    longest = len(window) - i
                    break
                i = window.find(s[0], i + 1)
        return longest

    def _take(self, end: int) -> str:
        """Emit text[sent:end] (never re-emitting)."""
        end = max(end, self.sent_len)
        out = self.text[self.sent_len:end]
        self.sent_len = end
        return out

    def finish(self) -> str:
        """At finish: the held-back tail (incomplete characters, stop-prefix candidates)."""
        out = self.flush()
        return out + self._take(len(self.text))
