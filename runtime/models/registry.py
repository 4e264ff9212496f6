"""Model registry: HF `architectures` name -> our nn.Module class, imported lazily."""
from __future__ import annotations

import importlib
from typing import Sequence

# architecture -> (module under sgl_lang.runtime.models, class name)
_MODELS = {
    "LlamaForCausalLM": ("llama", "LlamaForCausalLM"),
    "MistralForCausalLM": ("llama", "LlamaForCausalLM"),
    "Qwen2ForCausalLM": ("qwen", "Qwen2ForCausalLM"),
    "Qwen3ForCausalLM": ("qwen", "Qwen3ForCausalLM"),
}
SUPPORTED_ARCHITECTURES = tuple(_MODELS)


class UnsupportedModel(ValueError):
    """No model class implements any of the config's architectures."""


def get_model_class(architectures: Sequence[str] | None):
    """The class for the first supported name in a config's `architectures` list."""
    for arch in architectures or ():
        if arch in _MODELS:
            module_name, class_name = _MODELS[arch]
            module = importlib.import_module(f"{__package__}.{module_name}")
            return getattr(module, class_name)
    raise UnsupportedModel(f"model architectures {list(architectures or [])} are not supported; "
                           f"supported: {list(SUPPORTED_ARCHITECTURES)}")
