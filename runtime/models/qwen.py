"""Qwen2 (bias on q/k/v) and Qwen3 (per-head RMSNorm on q and k, no bias): Llama with one switch.

Both checkpoints use HF Llama's parameter names (q_proj, k_proj, ..., and q_norm/k_norm for Qwen3),
so weight loading is inherited unchanged.
"""
from __future__ import annotations

from .llama import LlamaForCausalLM


class Qwen2ForCausalLM(LlamaForCausalLM):
    @staticmethod
    def attention_kwargs(hf_config) -> dict:
        return {"qkv_bias": True, "o_bias": False, "qk_norm": False}


class Qwen3ForCausalLM(LlamaForCausalLM):
    @staticmethod
    def attention_kwargs(hf_config) -> dict:
        bias = bool(getattr(hf_config, "attention_bias", False))
        return {"qkv_bias": bias, "o_bias": bias, "qk_norm": True}
