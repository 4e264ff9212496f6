"""load_model / load_tokenizer: an HF-style folder -> our nn.Module with weights, and its tokenizer.

The model is built on the meta device (no memory, no init), given real storage on the target
device in the target dtype, then filled from the safetensors files (one file or an indexed
shard set) through each parameter's weight_loader.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from .config_utils import ModelDims, sliding_window
from .registry import get_model_class


class ModelFilesNotFound(FileNotFoundError):
    """The model folder lacks config.json or safetensors weights."""


@dataclass(frozen=True)
class LoadedModel:
    model: nn.Module  # forward(fb, kv_pool, attn) -> hidden; compute_logits(hidden) -> float32
    hf_config: Any  # transformers PretrainedConfig
    num_layers: int
    num_kv_heads: int  # per tensor-parallel rank
    head_dim: int
    vocab_size: int
    max_context_len: int
    dtype: torch.dtype
    device: torch.device


def safetensors_files(model_dir: str) -> list[str]:
    """Weight files of a folder: the shards named by model.safetensors.index.json, or
    model.safetensors, or every *.safetensors file."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        return [os.path.join(model_dir, s) for s in shards]
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.isfile(single):
        return [single]
    files = sorted(f for f in os.listdir(model_dir) if f.endswith(".safetensors"))
    if not files:
        raise ModelFilesNotFound(f"no safetensors weights in {model_dir} "
                                 f"(expected model.safetensors or model.safetensors.index.json)")
    return [os.path.join(model_dir, f) for f in files]


def iterate_weights(model_dir: str) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    for path in safetensors_files(model_dir):
        with safe_open(path, framework="pt", device="cpu") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


def load_config(model_dir: str):
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ModelFilesNotFound(f"{model_dir} has no config.json; pass an HF-style model folder")
    from transformers import AutoConfig
    return AutoConfig.from_pretrained(model_dir)


def load_model(model_dir: str, dtype: torch.dtype, device: str | torch.device = "cpu",
               tp_rank: int = 0, tp_size: int = 1) -> LoadedModel:
    hf_config = load_config(model_dir)
    model_cls = get_model_class(getattr(hf_config, "architectures", None))
    device = torch.device(device)
    with torch.device("meta"):
        model = model_cls(hf_config, tp_rank=tp_rank, tp_size=tp_size)
    model = model.to(dtype).to_empty(device=device)
    model.tie_weights()  # to_empty gave the tied pair separate storage
    model.load_weights(iterate_weights(model_dir))
    model.eval()
    dims = ModelDims.from_hf(hf_config)
    window = sliding_window(hf_config)
    max_len = dims.max_position if window is None else min(dims.max_position, window)
    return LoadedModel(model=model, hf_config=hf_config, num_layers=dims.num_layers,
                       num_kv_heads=max(1, dims.num_kv_heads // tp_size), head_dim=dims.head_dim,
                       vocab_size=dims.vocab_size, max_context_len=max_len, dtype=dtype, device=device)


def load_tokenizer(model_dir: str):
    """The HF fast tokenizer (with chat template) saved beside the weights."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(model_dir)
