"""Llama family (SmolLM2, Llama 2/3.x, Mistral) as plain nn.Modules over the KV pool.

One decoder layer, with fused projections (fewer matmuls, less Python per token):

    h: [T, hidden] --norm--> qkv_proj --> [T, (Hq + 2*Hkv) * D] --rope(q,k)--> attention --> o_proj
                  --(+residual) norm--> gate_up_proj --> [T, 2*I] --silu*mul--> down_proj

The attention module is parametrised (qkv bias, per-head q/k norm) so Qwen2/Qwen3 reuse it.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import nn

from ..layers.activation import SiluAndMul
from ..layers.attention import AttentionBackend
from ..layers.decode_gemm import decode_silu_mul
from ..layers.embedding import ParallelLMHead, VocabParallelEmbedding
from ..layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear, read_whole
from ..layers.norm import RMSNorm
from ..layers.rotary import RotaryEmbedding
from .config_utils import ModelDims, rope_settings


class WeightLoadError(RuntimeError):
    """A checkpoint does not match the model: missing or unexpected tensors."""


class LlamaAttention(nn.Module):
    def __init__(self, dims: ModelDims, layer_id: int, qkv_bias: bool = False, o_bias: bool = False,
                 qk_norm: bool = False, tp_rank: int = 0, tp_size: int = 1):
        super().__init__()
        self.layer_id = layer_id
        self.qkv_proj = QKVParallelLinear(dims.hidden_size, dims.head_dim, dims.num_heads,
                                          dims.num_kv_heads, bias=qkv_bias,
                                          tp_rank=tp_rank, tp_size=tp_size)
        self.num_heads = self.qkv_proj.num_heads  # per rank
        self.num_kv_heads = self.qkv_proj.num_kv_heads
        self.head_dim = dims.head_dim
        heads = self.qkv_proj.heads  # o_proj's input columns follow this rank's q heads
        self.o_proj = RowParallelLinear(dims.num_heads * dims.head_dim, dims.hidden_size, bias=o_bias,
                                        tp_rank=tp_rank, tp_size=tp_size,
                                        in_shard=(heads.q_start * self.head_dim, heads.num_q * self.head_dim))
        self.qk_norm = qk_norm
        if qk_norm:
            self.q_norm = RMSNorm(dims.head_dim, dims.rms_norm_eps)
            self.k_norm = RMSNorm(dims.head_dim, dims.rms_norm_eps)

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, fb,
                kv_pool, attn: AttentionBackend) -> torch.Tensor:
        num_tokens = hidden.shape[0]
        hq, hkv, d = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = self.qkv_proj(hidden)  # [T, (Hq + 2*Hkv) * D]
        qk, v = qkv.split([(hq + hkv) * d, hkv * d], dim=-1)
        qk = qk.view(num_tokens, hq + hkv, d)  # [T, Hq + Hkv, D]
        v = v.view(num_tokens, hkv, d)  # [T, Hkv, D]
        # (Qwen3: per-head norms of q and k, then) the rotation of q and k, fused with the KV
        # store where the backend can
        norms = (self.q_norm, self.k_norm) if self.qk_norm else None
        out = attn.forward_rope(qk, v, cos, sin, self.layer_id, fb, kv_pool, norms)  # [T, Hq * D]
        return self.o_proj(out)


class LlamaMLP(nn.Module):
    def __init__(self, dims: ModelDims, bias: bool = False, tp_rank: int = 0, tp_size: int = 1):
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(
            dims.hidden_size, [dims.intermediate_size] * 2, bias=bias, tp_rank=tp_rank, tp_size=tp_size)
        self.down_proj = RowParallelLinear(dims.intermediate_size, dims.hidden_size, bias=bias,
                                           tp_rank=tp_rank, tp_size=tp_size)
        self.act = SiluAndMul()

    decode_gemm = False  # gate_up + SiLU-mul in one kernel for decode batches (layers/decode_gemm.py)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self.decode_gemm and self.gate_up_proj.bias is None
        act = decode_silu_mul(x, self.gate_up_proj.weight) if fused else None  # [T, I]
        if act is None:
            act = self.act(self.gate_up_proj(x))
        return self.down_proj(act)  # [T, hidden]


class LlamaDecoderLayer(nn.Module):
    def __init__(self, dims: ModelDims, layer_id: int, attn_kwargs: dict, mlp_bias: bool,
                 tp_rank: int, tp_size: int):
        super().__init__()
        self.self_attn = LlamaAttention(dims, layer_id, tp_rank=tp_rank, tp_size=tp_size, **attn_kwargs)
        self.mlp = LlamaMLP(dims, bias=mlp_bias, tp_rank=tp_rank, tp_size=tp_size)
        self.input_layernorm = RMSNorm(dims.hidden_size, dims.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(dims.hidden_size, dims.rms_norm_eps)

    def forward(self, hidden, residual: Optional[torch.Tensor], cos, sin, fb, kv_pool, attn):
        if residual is None:
            residual = hidden
            hidden = self.input_layernorm(hidden)
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(hidden, cos, sin, fb, kv_pool, attn)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(hidden), residual


class LlamaModel(nn.Module):
    def __init__(self, dims: ModelDims, rotary: RotaryEmbedding, attn_kwargs: dict, mlp_bias: bool,
                 tp_rank: int, tp_size: int):
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(dims.vocab_size, dims.hidden_size, tp_rank, tp_size)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(dims, i, attn_kwargs, mlp_bias, tp_rank, tp_size)
            for i in range(dims.num_layers))
        self.norm = RMSNorm(dims.hidden_size, dims.rms_norm_eps)
        self.rotary = rotary  # plain object, not a module: its tables are not weights

    def forward(self, fb, kv_pool, attn: AttentionBackend) -> torch.Tensor:
        hidden = self.embed_tokens(fb.input_ids)  # [T, hidden]
        cos, sin = self.rotary.cos_sin(fb.positions, hidden.dtype)  # [T, 1, D] each
        attn.init_forward_metadata(fb)
        residual = None
        for layer in self.layers:
            hidden, residual = layer(hidden, residual, cos, sin, fb, kv_pool, attn)
        hidden, _ = self.norm(hidden, residual)
        return hidden  # [T, hidden]


class LlamaForCausalLM(nn.Module):
    # checkpoint name piece -> (our fused parameter piece, shard id)
    stacked_params = (
        (".q_proj.", ".qkv_proj.", "q"),
        (".k_proj.", ".qkv_proj.", "k"),
        (".v_proj.", ".qkv_proj.", "v"),
        (".gate_proj.", ".gate_up_proj.", 0),
        (".up_proj.", ".gate_up_proj.", 1),
    )
    ignored_suffixes = ("rotary_emb.inv_freq",)

    def __init__(self, hf_config, tp_rank: int = 0, tp_size: int = 1):
        super().__init__()
        self.config = hf_config
        self.dims = ModelDims.from_hf(hf_config)
        theta, scaling = rope_settings(hf_config)
        rotary = RotaryEmbedding(self.dims.head_dim, self.dims.max_position, theta, scaling)
        self.model = LlamaModel(self.dims, rotary, self.attention_kwargs(hf_config),
                                bool(getattr(hf_config, "mlp_bias", False)), tp_rank, tp_size)
        self.lm_head = ParallelLMHead(self.dims.vocab_size, self.dims.hidden_size, tp_rank, tp_size)
        self.tie_weights()

    @staticmethod
    def attention_kwargs(hf_config) -> dict:
        bias = bool(getattr(hf_config, "attention_bias", False))
        return {"qkv_bias": bias, "o_bias": bias, "qk_norm": False}

    @property
    def is_tied(self) -> bool:
        return bool(getattr(self.config, "tie_word_embeddings", False))

    def tie_weights(self) -> None:
        """Share the LM head with the embedding when the config says so (again after to_empty)."""
        if self.is_tied:
            self.lm_head.tie_to(self.model.embed_tokens)

    def forward(self, fb, kv_pool, attn: AttentionBackend) -> torch.Tensor:
        """-> hidden states [fb.num_tokens, hidden] after the final norm."""
        return self.model(fb, kv_pool, attn)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [n, hidden] -> logits [n, vocab] float32."""
        return self.lm_head(hidden)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named checkpoint tensors into our (possibly fused) parameters. A tensor may be
        lazy (loader.CheckpointTensor): each weight_loader reads only this rank's part."""
        params = dict(self.named_parameters(remove_duplicate=False))
        unexpected, loaded = [], set()  # loaded: (our name, shard id)
        for name, tensor in weights:
            if name.endswith(self.ignored_suffixes) or (self.is_tied and name == "lm_head.weight"):
                continue
            shard_id = None
            for ckpt_piece, our_piece, sid in self.stacked_params:
                if ckpt_piece in name:
                    name, shard_id = name.replace(ckpt_piece, our_piece), sid
                    break
            param = params.get(name)
            if param is None:
                unexpected.append(name)
                continue
            module = self.get_submodule(name.rpartition(".")[0])
            loader = getattr(module, "weight_loader", None)
            with torch.no_grad():
                if loader is None:
                    _copy_whole(name, param, tensor)
                else:
                    loader(param, tensor, shard_id)
            loaded.add((name, shard_id))
        missing = sorted(f"{n}[{s}]" if s is not None else n
                         for n, s in self._required_shards() - loaded)
        if unexpected or missing:
            raise WeightLoadError(f"checkpoint does not match {type(self).__name__}: "
                                  f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                                  f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")

    def _required_shards(self) -> set[tuple[str, object]]:
        shards_of = {}
        for _, our_piece, sid in self.stacked_params:
            shards_of.setdefault(our_piece, []).append(sid)
        required = set()
        for name, _ in self.named_parameters():  # tied parameters appear once
            pieces = [p for p in shards_of if p in name]
            required.update((name, sid) for sid in (shards_of[pieces[0]] if pieces else [None]))
        return required


def _copy_whole(name: str, param: torch.Tensor, tensor) -> None:
    """tensor: a torch.Tensor or a lazy CheckpointTensor (read here, in full)."""
    if tuple(param.shape) != tuple(tensor.shape):
        raise WeightLoadError(f"{name}: expected shape {tuple(param.shape)}, got {tuple(tensor.shape)}")
    param.data.copy_(read_whole(tensor))
