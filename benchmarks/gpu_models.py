"""Random-weight models of real shapes, built straight on the target device (no downloads).

    SHAPES[name] -> an HF-style config dict (the real model's dimensions)
    random_loaded_model(config, dtype, device, seed) -> LoadedModel (meta-device build, random fill)
    random_engine(config, **engine_flags) -> Engine whose loader returns that model and whose
        tokenizer is NumberTokenizer (ids <-> "<id>"), since weights' values do not change step cost
    dummy_engine(config, **engine_flags) -> Engine with load_format="dummy" over a folder holding
        only config.json: every rank (tp_size > 1 too) builds its own random shard on its device
"""
from __future__ import annotations

import contextlib
import math
import tempfile

import torch

LLAMA_COMMON = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
                    rms_norm_eps=1e-5, attention_bias=False, mlp_bias=False, bos_token_id=1,
                    eos_token_id=2)

SHAPES = {
    "smollm2-135m": dict(LLAMA_COMMON, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                         max_position_embeddings=8192, rope_theta=100000.0, tie_word_embeddings=True),
    "llama-3.2-1b": dict(LLAMA_COMMON, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                         max_position_embeddings=8192, rope_theta=500000.0, tie_word_embeddings=True),
    "llama-3.1-8b": dict(LLAMA_COMMON, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                         max_position_embeddings=8192, rope_theta=500000.0, tie_word_embeddings=False),
    "llama-3.1-70b": dict(LLAMA_COMMON, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                          num_attention_heads=64, num_key_value_heads=8, vocab_size=128256,
                          max_position_embeddings=8192, rope_theta=500000.0, tie_word_embeddings=False),
    "tiny": dict(LLAMA_COMMON, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
                 max_position_embeddings=2048, rope_theta=10000.0, tie_word_embeddings=False),
}


class NumberTokenizer:
    """A stand-in tokenizer: token id i is the text "<i>"; prompts are passed as ids."""
    eos_token_id = None
    chat_template = None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [int(p) for p in text.replace(">", " ").replace("<", " ").split()]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(f"<{int(i)}>" for i in ids)


def hf_config(config: dict):
    from transformers import LlamaConfig
    return LlamaConfig(**{k: v for k, v in config.items() if k not in ("model_type",)})


def random_loaded_model(config: dict, dtype: torch.dtype, device: str, seed: int = 0):
    """Build on the meta device, allocate on `device` in `dtype`, fill with N(0, 1/fan_in) weights
    (norm weights 1) drawn on the CPU in float32 from `seed`, so every device gets the same values."""
    from sgl_lang.runtime.models.config_utils import ModelDims
    from sgl_lang.runtime.models.loader import LoadedModel
    from sgl_lang.runtime.models.registry import get_model_class

    cfg = hf_config(config)
    cls = get_model_class(cfg.architectures)
    with torch.device("meta"):
        model = cls(cfg)
    model = model.to(dtype).to_empty(device=device)
    model.tie_weights()
    gen = torch.Generator().manual_seed(seed)
    big = torch.device(device).type == "cuda" and sum(p.numel() for p in model.parameters()) > 5e8
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            elif big:  # large models: draw on the device (fast); values need not match the CPU
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[-1]))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))
    model.eval()
    dims = ModelDims.from_hf(cfg)
    return LoadedModel(model=model, hf_config=cfg, num_layers=dims.num_layers,
                       num_kv_heads=dims.num_kv_heads, head_dim=dims.head_dim, num_q_heads=dims.num_heads,
                       vocab_size=dims.vocab_size, max_context_len=dims.max_position, dtype=dtype,
                       device=torch.device(device))


@contextlib.contextmanager
def _patched_loader(config: dict, seed: int):
    from sgl_lang.runtime.models import loader
    saved = loader.load_model, loader.load_tokenizer
    loader.load_model = lambda _dir, dtype, device="cpu", **kw: random_loaded_model(config, dtype, device, seed)
    loader.load_tokenizer = lambda _dir: NumberTokenizer()
    try:
        yield
    finally:
        loader.load_model, loader.load_tokenizer = saved


def random_engine(config: dict, seed: int = 0, **flags):
    """An Engine over random_loaded_model(config); flags are EngineConfig flags."""
    from sgl_lang.runtime.engine import Engine
    with _patched_loader(config, seed):
        return Engine(model_path="random-weights", **flags)


def dummy_model_dir(config: dict) -> str:
    """A temporary folder holding only config.json for `config` (for load_format="dummy")."""
    folder = tempfile.mkdtemp(prefix="sgl-dummy-model-")
    hf_config(config).save_pretrained(folder)
    return folder


def dummy_engine(config: dict, seed: int = 0, **flags):
    """An Engine with load_format="dummy" (random weights drawn per rank on its device, so spawned
    tensor-parallel ranks build theirs too: they cannot see a monkeypatched loader); rank 0's
    tokenizer is NumberTokenizer. flags are EngineConfig flags."""
    from sgl_lang.runtime.engine import Engine
    from sgl_lang.runtime.models import loader
    saved = loader.load_tokenizer
    loader.load_tokenizer = lambda _dir: NumberTokenizer()
    try:
        return Engine(model_path=dummy_model_dir(config), load_format="dummy", random_seed=seed, **flags)
    finally:
        loader.load_tokenizer = saved
