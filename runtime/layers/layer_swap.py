"""replace_linear_layers: swap a loaded model's linear layers (and LM head) for other modules, in
place — the one walk that weight transforms applied from outside (int8, prepacking) share — and
SwappedLinear, the base of the modules they swap in."""
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


class SwappedLinear(nn.Module):
    """Base of a drop-in for a tp_size-1 linear layer: x [..., in] -> [..., out] (float32 when
    out_float32, as for the LM head). Subclasses hold the weight and implement _linear."""

    def __init__(self, weight: torch.Tensor, out_float32: bool = False):
        super().__init__()
        self.out_float32 = out_float32
        self.in_features = weight.shape[1]
        self.out_features = weight.shape[0]

    def _linear(self, x2: torch.Tensor) -> torch.Tensor:
        """x2 [n, in] -> [n, out]."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = self._linear(x.reshape(-1, self.in_features))  # [n, out]
        if self.out_float32:
            y = y.float()
        return y.reshape(*lead, self.out_features)

    @classmethod
    def replace_in(cls, model: nn.Module, accept: Callable[[str, nn.Module, bool], bool]) -> int:
        """replace_linear_layers with cls(weight, bias, out_float32=is_lm_head) as the new module."""
        return replace_linear_layers(model, accept, lambda w, b, is_lm_head: cls(w, b, out_float32=is_lm_head))
