"""sgl_lang: a structured-generation language for LLM programs, following SGLang's frontend API.

    import sgl_lang as sgl

    @sgl.function
    def qa(s, question):
        s += sgl.user(question)
        s += sgl.assistant(sgl.gen("answer", max_tokens=64))

Importing this package never imports torch: the local runtime is loaded only when `sgl.Runtime`
is first used.
"""
from __future__ import annotations

from importlib import import_module

from .api import (assistant, assistant_begin, assistant_end, flush_cache, function, gen, gen_int, gen_string,
                  get_server_info, image, select, set_default_backend, system, system_begin, system_end, user,
                  user_begin, user_end, video)
from .backend.base import Backend
from .chat_template import ChatTemplate, get_chat_template, get_chat_template_by_model_path
from .choices import (ChoicesDecision, greedy_token_selection, token_length_normalized,
                      unconditional_likelihood_normalized)
from .errors import BackendError, InvalidArgument, NoBackendError, ProgramError, SglError, UnsupportedFeature
from .global_config import global_config
from .program import Program
from .program_state import ProgramState, ProgramStateGroup

__version__ = "0.1.0"

# Backends that pull in heavy dependencies, imported on first use.
_LAZY = {
    "Runtime": ("sgl_lang.backend.local", "Runtime"),
    "RuntimeEndpoint": ("sgl_lang.backend.runtime_endpoint", "RuntimeEndpoint"),
    "OpenAI": ("sgl_lang.backend.openai", "OpenAI"),
}


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sgl_lang' has no attribute {name!r}")


__all__ = [
    # language
    "function", "gen", "gen_int", "gen_string", "select", "image", "video",
    "system", "user", "assistant", "system_begin", "system_end", "user_begin", "user_end",
    "assistant_begin", "assistant_end",
    # backends
    "set_default_backend", "flush_cache", "get_server_info", "Runtime", "RuntimeEndpoint", "OpenAI", "Backend",
    # choices methods
    "token_length_normalized", "greedy_token_selection", "unconditional_likelihood_normalized", "ChoicesDecision",
    # state and program objects
    "Program", "ProgramState", "ProgramStateGroup", "ChatTemplate", "get_chat_template",
    "get_chat_template_by_model_path", "global_config",
    # errors
    "SglError", "BackendError", "InvalidArgument", "UnsupportedFeature", "NoBackendError", "ProgramError",
    "__version__",
]
