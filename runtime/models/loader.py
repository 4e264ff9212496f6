"""load_model / load_tokenizer: an HF-style folder -> our nn.Module with weights, and its tokenizer.

The model is built on the meta device (no memory, no init), given real storage on the target
device in the target dtype, then filled from the safetensors files (one file or an indexed
shard set) through each parameter's weight_loader. Checkpoint tensors are handed over lazily
(CheckpointTensor), so a tensor-parallel rank reads only its own rows/columns from disk.

load_format "dummy" reads config.json only and fills this rank's shard with small seeded random
values on its device (benchmarks: a 70B model never exists whole on one rank or on the host).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from ..config import LOAD_FORMATS
from ..layers.linear import shard_heads
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
    num_q_heads: int  # per tensor-parallel rank
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


class CheckpointTensor:
    """One tensor of a safetensors file, read from disk only where narrowed. Weight loaders use
    `.shape` and `.narrow(dim, start, length)` (as on a torch.Tensor), so each rank reads its part."""

    def __init__(self, st_slice):
        self._slice = st_slice
        self.shape = torch.Size(st_slice.get_shape())

    def narrow(self, dim: int, start: int, length: int) -> torch.Tensor:
        index = [slice(None)] * len(self.shape)
        index[dim] = slice(start, start + length)
        return self._slice[tuple(index)]


def iterate_weights(model_dir: str) -> Iterator[tuple[str, CheckpointTensor]]:
    from safetensors import safe_open

    for path in safetensors_files(model_dir):
        with safe_open(path, framework="pt", device="cpu") as f:
            for name in f.keys():
                yield name, CheckpointTensor(f.get_slice(name))


@torch.no_grad()
def fill_dummy_weights(model: nn.Module, seed: int) -> None:
    """Norm weights 1, other vectors (biases) 0, matrices N(0, 1/fan_in), drawn on the
    parameters' device from `seed` (give each rank its own seed)."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() == 1:
            p.fill_(1.0 if "norm" in name else 0.0)
        else:
            p.normal_(0.0, 1.0 / math.sqrt(p.shape[-1]), generator=gen)


def load_config(model_dir: str):
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ModelFilesNotFound(f"{model_dir} has no config.json; pass an HF-style model folder")
    from transformers import AutoConfig
    return AutoConfig.from_pretrained(model_dir)


def load_model(model_dir: str, dtype: torch.dtype, device: str | torch.device = "cpu",
               tp_rank: int = 0, tp_size: int = 1, load_format: str = "auto", seed: int = 0) -> LoadedModel:
    """This rank's shard of the model; load_format "dummy" fills it with random values from
    seed + tp_rank instead of reading weights."""
    if load_format not in LOAD_FORMATS:
        raise ValueError(f"load_format must be one of {LOAD_FORMATS}, got {load_format!r}")
    hf_config = load_config(model_dir)
    model_cls = get_model_class(getattr(hf_config, "architectures", None))
    device = torch.device(device)
    with torch.device("meta"):
        model = model_cls(hf_config, tp_rank=tp_rank, tp_size=tp_size)
    model = model.to(dtype).to_empty(device=device)
    model.tie_weights()  # to_empty gave the tied pair separate storage
    if load_format == "dummy":
        fill_dummy_weights(model, seed + tp_rank)
    else:
        model.load_weights(iterate_weights(model_dir))
    model.eval()
    dims = ModelDims.from_hf(hf_config)
    heads = shard_heads(dims.num_heads, dims.num_kv_heads, tp_rank, tp_size)
    window = sliding_window(hf_config)
    max_len = dims.max_position if window is None else min(dims.max_position, window)
    return LoadedModel(model=model, hf_config=hf_config, num_layers=dims.num_layers,
                       num_kv_heads=heads.num_kv, head_dim=dims.head_dim, num_q_heads=heads.num_q,
                       vocab_size=dims.vocab_size, max_context_len=max_len, dtype=dtype, device=device)


def load_tokenizer(model_dir: str):
    """The HF fast tokenizer (with chat template) saved beside the weights."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(model_dir)
