"""A ChatTemplate from a server-reported Jinja chat template (the tokenizer's own), rendered with
jinja2 the way transformers renders it. Used by RuntimeEndpoint; jinja2 is optional."""
from __future__ import annotations

from ..errors import InvalidArgument


def template_from_model_info(info: dict):
    """ChatTemplate derived from `info["chat_template"]`, or None when the server sent none, jinja2
    is not installed, or the template cannot be cut into role prefixes/suffixes."""
    source = info.get("chat_template")
    if not isinstance(source, str) or not source:
        return None
    try:
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        return None
    from ..chat_template import ChatTemplate

    def raise_exception(message: str):
        raise jinja2.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        compiled = env.from_string(source)
    except jinja2.TemplateError:
        return None
    bos, eos = info.get("bos_token") or "", info.get("eos_token") or ""

    def render(messages: list) -> str:
        return compiled.render(messages=messages, add_generation_prompt=False, bos_token=bos, eos_token=eos)

    name = info.get("served_model_name") or info.get("model_path") or "server"
    try:
        return ChatTemplate.from_render_fn(name, render, stop_str=[eos] if eos else None)
    except (InvalidArgument, jinja2.TemplateError):
        return None


__all__ = ["template_from_model_info"]
