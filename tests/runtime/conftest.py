import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def chat_prompt(tokenizer, question: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)


@pytest.fixture(scope="session")
def chat():
    """chat(tokenizer, question) -> a ChatML prompt ending with the assistant prefix."""
    return chat_prompt


@pytest.fixture(scope="session")
def engine_fp32():
    """The real default model in fp32 (exact comparisons across batch shapes)."""
    from sgl_lang.runtime.engine import Engine
    eng = Engine(dtype="float32", max_total_tokens=4096)
    yield eng
    eng.shutdown()
