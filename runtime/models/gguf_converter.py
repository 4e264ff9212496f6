"""GGUFConverter: turn a llama-architecture GGUF file into an HF-style model folder.

The folder holds `config.json` (LlamaConfig fields), `model.safetensors` (dequantized weights in
HF Llama naming), tokenizer files (with the chat template) and `generation_config.json`, so both
our loader and transformers' `LlamaForCausalLM.from_pretrained` read it.

llama.cpp's converter permutes the rows of Q and K so that its RoPE can rotate adjacent pairs
(interleaved layout). HF Llama rotates halves (`rotate_half`), so we undo that permutation here:

    HF rows of one head:   [x0 x1 ... x(d/2-1) | y0 y1 ... y(d/2-1)]
    GGUF rows of one head: [x0 y0 x1 y1 ... x(d/2-1) y(d/2-1)]
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import numpy as np
import torch


class GGUFConversionError(RuntimeError):
    """The GGUF file cannot be converted (unsupported architecture or missing metadata)."""


# GGUF tensor name (after the `blk.N.` prefix) -> HF Llama parameter name
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(.+)$")


def unpermute_rope_rows(w: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation. w: [num_heads * head_dim, in_features]."""
    out_features = w.shape[0]
    head_dim = out_features // num_heads
    # [num_heads, head_dim/2, 2, in] -> [num_heads, 2, head_dim/2, in]
    return (w.reshape(num_heads, head_dim // 2, 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


@dataclass(frozen=True)
class GGUFConverter:
    gguf_path: str
    dtype: torch.dtype = torch.bfloat16  # dtype of the saved weights

    def convert(self, out_dir: str) -> None:
        """Write config, weights, tokenizer and generation config into out_dir (must exist)."""
        import gguf

        reader = gguf.GGUFReader(self.gguf_path)
        meta = self._metadata(reader)
        arch = meta.get("general.architecture")
        if arch != "llama":
            raise GGUFConversionError(f"only llama-architecture GGUF files are supported, got {arch!r} "
                                      f"in {self.gguf_path}")
        tensors = self._weights(reader, meta)
        config = self._config(meta, has_lm_head="lm_head.weight" in tensors)
        from safetensors.torch import save_file
        save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        gen = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
        with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
            json.dump(gen, f, indent=2)
        self._tokenizer(out_dir, meta, config)

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _metadata(reader) -> dict:
        meta = {}
        for key, field in reader.fields.items():
            if key.startswith("tokenizer.ggml.") and key not in (
                    "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                    "tokenizer.ggml.padding_token_id", "tokenizer.ggml.unknown_token_id",
                    "tokenizer.ggml.add_bos_token"):
                continue  # vocab arrays are large; the tokenizer path reads them itself
            try:
                meta[key] = field.contents()
            except Exception as e:  # noqa: BLE001 - unknown field types are skipped, named
                meta[key] = GGUFConversionError(f"unreadable field {key}: {e}")
        return meta

    def _weights(self, reader, meta: dict) -> dict[str, torch.Tensor]:
        from gguf.quants import dequantize

        num_heads = int(meta["llama.attention.head_count"])
        num_kv_heads = int(meta.get("llama.attention.head_count_kv", num_heads))
        out: dict[str, torch.Tensor] = {}
        for t in reader.tensors:
            m = _BLOCK_RE.match(t.name)
            if m:
                hf_suffix = _LAYER_NAMES.get(m.group(2))
                hf_name = f"model.layers.{m.group(1)}.{hf_suffix}" if hf_suffix else None
            else:
                hf_name = _GLOBAL_NAMES.get(t.name)
            if hf_name is None:
                continue  # e.g. rope_freqs: recomputed from the config
            w = dequantize(t.data, t.tensor_type).astype(np.float32)  # [out, in] or [n]
            if hf_name.endswith("q_proj.weight"):
                w = unpermute_rope_rows(w, num_heads)
            elif hf_name.endswith("k_proj.weight"):
                w = unpermute_rope_rows(w, num_kv_heads)
            out[hf_name] = torch.from_numpy(np.ascontiguousarray(w)).to(self.dtype)
        return out

    def _config(self, meta: dict, has_lm_head: bool) -> dict:
        def get(key, default=None):
            v = meta.get(f"llama.{key}", default)
            if v is None:
                raise GGUFConversionError(f"GGUF metadata lacks llama.{key} ({self.gguf_path})")
            return v

        num_heads = int(get("attention.head_count"))
        hidden = int(get("embedding_length"))
        head_dim = int(meta.get("llama.attention.key_length", hidden // num_heads))
        vocab = meta.get("llama.vocab_size")
        if vocab is None:
            raise GGUFConversionError(f"GGUF metadata lacks llama.vocab_size ({self.gguf_path})")
        bos = int(meta.get("tokenizer.ggml.bos_token_id", 1))
        eos = int(meta.get("tokenizer.ggml.eos_token_id", 2))
        pad = int(meta.get("tokenizer.ggml.padding_token_id", eos))
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": hidden,
            "intermediate_size": int(get("feed_forward_length")),
            "num_hidden_layers": int(get("block_count")),
            "num_attention_heads": num_heads,
            "num_key_value_heads": int(get("attention.head_count_kv", num_heads)),
            "head_dim": head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": int(get("context_length")),
            # stored as float32 in GGUF (9.9999997e-06); print it back as the decimal it was
            "rms_norm_eps": float(f"{float(get('attention.layer_norm_rms_epsilon')):.6g}"),
            "rope_theta": float(get("rope.freq_base", 10000.0)),
            "rope_scaling": None,
            "attention_bias": False,
            "mlp_bias": False,
            "vocab_size": int(vocab),
            "tie_word_embeddings": not has_lm_head,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": pad,
            "torch_dtype": str(self.dtype).removeprefix("torch."),
            "use_cache": True,
        }

    def _tokenizer(self, out_dir: str, meta: dict, config: dict) -> None:
        """Build the fast tokenizer from GGUF metadata via transformers, then make its
        tokenizer_config.json self-contained (chat template, length, BOS policy)."""
        from transformers import AutoTokenizer

        gguf_dir, gguf_file = os.path.split(os.path.abspath(self.gguf_path))
        tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
        tok.save_pretrained(out_dir)
        cfg_path = os.path.join(out_dir, "tokenizer_config.json")
        with open(cfg_path) as f:
            tok_cfg = json.load(f)
        template = meta.get("tokenizer.chat_template") or getattr(tok, "chat_template", None)
        if isinstance(template, str):
            tok_cfg["chat_template"] = template
        tok_cfg["model_max_length"] = config["max_position_embeddings"]
        tok_cfg["add_bos_token"] = bool(meta.get("tokenizer.ggml.add_bos_token", False))
        tok_cfg.pop("local_files_only", None)
        tok_cfg.pop("is_local", None)
        with open(cfg_path, "w") as f:
            json.dump(tok_cfg, f, indent=2)
