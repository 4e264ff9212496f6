"""ModelDims: the numbers a decoder needs, read once from an HF config (transformers 4.x or 5.x)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class ModelDims:
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    max_position: int

    @classmethod
    def from_hf(cls, cfg) -> "ModelDims":
        num_heads = int(cfg.num_attention_heads)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // num_heads
        return cls(
            hidden_size=int(cfg.hidden_size),
            intermediate_size=int(cfg.intermediate_size),
            num_layers=int(cfg.num_hidden_layers),
            num_heads=num_heads,
            num_kv_heads=int(getattr(cfg, "num_key_value_heads", None) or num_heads),
            head_dim=int(head_dim),
            vocab_size=int(cfg.vocab_size),
            rms_norm_eps=float(getattr(cfg, "rms_norm_eps", 1e-6)),
            max_position=int(getattr(cfg, "max_position_embeddings", 4096)),
        )


def rope_settings(cfg) -> tuple[float, Optional[dict]]:
    """(rope theta, scaling dict or None). transformers 5 keeps both in `rope_parameters`;
    4.x has `rope_theta` and `rope_scaling`."""
    params = getattr(cfg, "rope_parameters", None)
    if params:
        params = dict(params)
        theta = float(params.pop("rope_theta", getattr(cfg, "rope_theta", 10000.0)))
        rope_type = params.get("rope_type", params.get("type", "default"))
        return theta, (params if rope_type != "default" else None)
    scaling = getattr(cfg, "rope_scaling", None)
    return float(getattr(cfg, "rope_theta", 10000.0)), (dict(scaling) if scaling else None)


def sliding_window(cfg) -> Optional[int]:
    """The attention window if the model uses one (Mistral v0.1), else None."""
    window = getattr(cfg, "sliding_window", None)
    if window is None or getattr(cfg, "use_sliding_window", True) is False:
        return None
    return int(window)
