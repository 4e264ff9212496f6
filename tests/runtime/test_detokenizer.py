"""IncrementalDetokenizer: the one-token windows it decodes from the shared cache give the same
text, deltas and stop matches as decoding every window (the plain algorithm, kept here)."""
from __future__ import annotations

import random

import pytest

from sgl_lang.runtime.detokenizer import IncrementalDetokenizer


class PlainDetokenizer(IncrementalDetokenizer):
    """Decodes both windows at every token, as the detokenizer did before its cache."""

    def add_token(self, token_id: int) -> str:
        self.ids.append(token_id)
        if self.lazy:
            return ""
        prefix_text = self._decode(self.ids[self.prefix_offset:self.read_offset])
        new_text = self._decode(self.ids[self.prefix_offset:])
        if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
            return ""
        delta = new_text[len(prefix_text):]
        self.prefix_offset = self.read_offset
        self.read_offset = len(self.ids)
        return self._append(delta)


@pytest.fixture(scope="module")
def tokenizer():
    from sgl_lang.runtime.default_model import default_model_dir
    from sgl_lang.runtime.models.loader import load_tokenizer
    return load_tokenizer(default_model_dir())


@pytest.mark.parametrize("seed", range(16))
def test_cached_windows_match_plain_decoding(tokenizer, seed):
    rng = random.Random(seed)
    text = "Once upon a time, 12 cats\n\nlived by the sea. 猫はとても可愛い 🐈🐟 naïve café — done."
    pool = tokenizer.encode(text) + list(tokenizer.all_special_ids) + [rng.randrange(tokenizer.vocab_size)
                                                                       for _ in range(20)]
    short_texts = {True: {}, False: {}}
    for _ in range(6):  # detokenizers sharing one cache, as a runtime's do
        skip = rng.random() < 0.7
        stop = rng.choice([[], ["\n\n"], ["cat", "sea."], ["🐟"], ["ve c"]])
        ids = [rng.choice(pool) for _ in range(rng.randint(1, 40))]
        if rng.random() < 0.5:
            ids = tokenizer.encode(text)[:rng.randint(1, 40)]
        args = (tokenizer, skip, stop, rng.random() < 0.3)
        cached = IncrementalDetokenizer(*args, short_texts=short_texts[skip])
        plain = PlainDetokenizer(*args)
        for t in ids:
            assert cached.add_token(t) == plain.add_token(t)
            assert (cached.text, cached.sent_len, cached.matched_stop) == \
                (plain.text, plain.sent_len, plain.matched_stop)
            if plain.matched_stop is not None:
                break
        assert cached.finish() == plain.finish()
        assert cached.text == plain.text
