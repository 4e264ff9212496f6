"""replace_linear_layers: swap a loaded model's linear layers (and LM head) for other modules, in
place — the one walk that weight transforms applied from outside (int8, prepacking) share."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from .embedding import ParallelLMHead
from .linear import LinearBase


def replace_linear_layers(model: nn.Module,
                          accept: Callable[[str, nn.Module, bool], bool],
                          make: Callable[[torch.Tensor, Optional[torch.Tensor], bool], nn.Module]) -> int:
    """For each LinearBase / ParallelLMHead `m` named `name` with accept(name, m, is_lm_head),
    put make(weight, bias, is_lm_head) in its place (the LM head passes bias None).
    Returns how many were replaced. `accept` may raise to refuse the whole model."""
    targets = []
    for name, module in model.named_modules():
        is_lm_head = isinstance(module, ParallelLMHead)
        if (isinstance(module, LinearBase) or is_lm_head) and accept(name, module, is_lm_head):
            targets.append((name, module, is_lm_head))
    for name, module, is_lm_head in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        bias = None if is_lm_head else module.bias
        with torch.no_grad():
            setattr(parent, child, make(module.weight, bias, is_lm_head))
    return len(targets)
