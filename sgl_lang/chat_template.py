"""ChatTemplate: how roles become text. A small registry of named templates, matching by model
path, and `ChatTemplate.from_render_fn`, which derives a template from a tokenizer's own renderer."""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Optional, Sequence

from .errors import InvalidArgument

ROLES = ("system", "user", "assistant")


class ChatTemplateStyle(Enum):
    PLAIN = "plain"
    LLAMA2 = "llama2"  # the first system turn is folded into the first user turn's [INST]


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    default_system_prompt: Optional[str]
    role_prefix_and_suffix: dict[str, tuple[str, str]]
    stop_str: tuple[str, ...] = ()
    image_token: str = "<image>"
    audio_token: str = "<audio>"
    style: ChatTemplateStyle = ChatTemplateStyle.PLAIN
    #: text some tokenizer templates put before the first turn (a BOS); informational only
    document_prefix: str = ""

    def __post_init__(self):
        missing = [r for r in ROLES if r not in self.role_prefix_and_suffix]
        if missing:
            raise InvalidArgument(f"chat template {self.name!r} lacks roles {missing}")

    def get_prefix_and_suffix(self, role: str, hist_messages: Sequence[dict]) -> tuple[str, str]:
        """The text around one turn of `role`, given the turns before it."""
        if role not in self.role_prefix_and_suffix:
            raise InvalidArgument(f"unknown role {role!r}; expected one of {list(self.role_prefix_and_suffix)}")
        prefix, suffix = self.role_prefix_and_suffix[role]
        if self.style is ChatTemplateStyle.LLAMA2:
            if role == "system" and not hist_messages:
                user_prefix = self.role_prefix_and_suffix["user"][0]
                return user_prefix + prefix, suffix
            if role == "user" and len(hist_messages) == 1 and hist_messages[0]["role"] == "system":
                return "", suffix
        return prefix, suffix

    def get_prompt(self, messages: Sequence[dict]) -> str:
        """Render a whole conversation (list of {"role", "content"})."""
        out = []
        for i, msg in enumerate(messages):
            prefix, suffix = self.get_prefix_and_suffix(msg["role"], messages[:i])
            out.append(prefix + msg["content"] + suffix)
        return "".join(out)

    @classmethod
    def from_render_fn(cls, name: str, render: Callable[[list[dict]], str], *,
                       stop_str: Optional[Sequence[str]] = None) -> "ChatTemplate":
        """Derive a template from `render(messages) -> str` (e.g. a tokenizer's
        `apply_chat_template(m, tokenize=False)`) by rendering sentinel conversations and cutting
        the output at the sentinels. Captures a system prompt the renderer injects by itself."""
        return _derive_from_render_fn(cls, name, render, stop_str)


_SENT = ("SGLSENTINELZERO", "SGLSENTINELONE", "SGLSENTINELTWO")


def _cut(text: str, *sentinels: str) -> list[str]:
    """Split `text` around each sentinel, in order: [before_0, between_0_1, ..., after_last]."""
    parts, pos = [], 0
    for s in sentinels:
        at = text.find(s, pos)
        if at < 0:
            raise InvalidArgument(f"the chat template dropped or altered message content ({s!r} not in {text!r})")
        parts.append(text[pos:at])
        pos = at + len(s)
    parts.append(text[pos:])
    return parts


def _strip_start(text: str, start: str, what: str) -> str:
    if not text.startswith(start):
        raise InvalidArgument(f"cannot derive the {what} from the chat template: {text!r} does not start with {start!r}")
    return text[len(start):]


def _derive_from_render_fn(cls, name, render, stop_str) -> ChatTemplate:
    u, a, u2 = _SENT
    msg = lambda role, content: {"role": role, "content": content}  # noqa: E731
    # [head][user_prefix] U [user_suffix]
    head_and_user_prefix, user_suffix = _cut(render([msg("user", u)]), u)
    # ... U [user_suffix][assistant_prefix] A [assistant_suffix]
    _, between, assistant_suffix = _cut(render([msg("user", u), msg("assistant", a)]), u, a)
    assistant_prefix = _strip_start(between, user_suffix, "assistant prefix")
    # ... A [assistant_suffix][user_prefix] U2 ...
    _, _, between, _ = _cut(render([msg("user", u), msg("assistant", a), msg("user", u2)]), u, a, u2)
    user_prefix = _strip_start(between, assistant_suffix, "user prefix")
    if not head_and_user_prefix.endswith(user_prefix):
        raise InvalidArgument(f"cannot derive the user prefix of chat template {name!r}")
    head = head_and_user_prefix[:len(head_and_user_prefix) - len(user_prefix)]

    system, default_system_prompt, document_prefix = ("", ""), None, ""
    try:
        rendered = render([msg("system", u2), msg("user", u)])
    except Exception:  # the template refuses a system turn (e.g. gemma); keep an empty system role
        rendered = None
    if rendered is not None:
        system_prefix, between, _ = _cut(rendered, u2, u)
        if not between.endswith(user_prefix):
            raise InvalidArgument(f"cannot derive the system suffix of chat template {name!r}")
        system_suffix = between[:len(between) - len(user_prefix)]
        is_system_turn = (len(head) >= len(system_prefix) + len(system_suffix)
                          and head.startswith(system_prefix) and head.endswith(system_suffix))
        if head and is_system_turn:  # the renderer injects a system turn when none is given
            default_system_prompt = head[len(system_prefix):len(head) - len(system_suffix)]
        elif head and system_prefix.startswith(head):  # a BOS-like prefix before any turn
            document_prefix, system_prefix = head, system_prefix[len(head):]
        system = (system_prefix, system_suffix)
    if stop_str is None:
        stop_str = (assistant_suffix.strip(),) if assistant_suffix.strip() else ()
    return cls(name=name, default_system_prompt=default_system_prompt,
               role_prefix_and_suffix={"system": system, "user": (user_prefix, user_suffix),
                                       "assistant": (assistant_prefix, assistant_suffix)},
               stop_str=tuple(stop_str), document_prefix=document_prefix)


# ---------------------------------------------------------------------------------------------
# Registry

_TEMPLATES: dict[str, ChatTemplate] = {}
_MATCHERS: list[Callable[[str], Optional[str]]] = []


def register_chat_template(template: ChatTemplate) -> ChatTemplate:
    _TEMPLATES[template.name] = template
    return template


def get_chat_template(name: str = "default") -> ChatTemplate:
    try:
        return _TEMPLATES[name]
    except KeyError:
        raise InvalidArgument(f"unknown chat template {name!r}; registered: {sorted(_TEMPLATES)}") from None


def list_chat_templates() -> list[str]:
    return sorted(_TEMPLATES)


def register_chat_template_matching_function(fn: Callable[[str], Optional[str]]) -> Callable:
    """`fn(model_path) -> template name or None`; tried in registration order."""
    _MATCHERS.append(fn)
    return fn


def get_chat_template_by_model_path(model_path: str) -> ChatTemplate:
    for fn in _MATCHERS:
        name = fn(model_path)
        if name is not None:
            return get_chat_template(name)
    return get_chat_template("default")


def _chatml(name: str, system_prompt: Optional[str]) -> ChatTemplate:
    turn = lambda role: (f"<|im_start|>{role}\n", "<|im_end|>\n")  # noqa: E731
    return ChatTemplate(name, system_prompt, {r: turn(r) for r in ROLES}, stop_str=("<|im_end|>",))


def _llama3_turn(role: str) -> tuple[str, str]:
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n", "<|eot_id|>"


for _t in (
    ChatTemplate("default", None, {"system": ("SYSTEM:", "\n"), "user": ("USER:", "\n"),
                                   "assistant": ("ASSISTANT:", "\n")}),
    ChatTemplate("claude", None, {"system": ("", ""), "user": ("\n\nHuman: ", ""),
                                  "assistant": ("\n\nAssistant:", "")}),
    _chatml("chatml", None),
    _chatml("qwen", "You are a helpful assistant."),
    _chatml("smollm2", "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
    ChatTemplate("vicuna_v1.1",
                 "A chat between a curious user and an artificial intelligence assistant. The assistant "
                 "gives helpful, detailed, and polite answers to the user's questions.",
                 {"system": ("", " "), "user": ("USER:", " "), "assistant": ("ASSISTANT:", "</s>")}),
    ChatTemplate("llama-2-chat", None, {"system": ("<<SYS>>\n", "\n<</SYS>>\n\n"), "user": ("[INST] ", " [/INST]"),
                                        "assistant": ("", " </s><s>")}, style=ChatTemplateStyle.LLAMA2),
    ChatTemplate("mistral", None, {"system": ("[SYSTEM_PROMPT] ", " [/SYSTEM_PROMPT]"), "user": ("[INST] ", " [/INST]"),
                                   "assistant": ("", " </s><s>")}, stop_str=("</s>",)),
    ChatTemplate("llama-3-instruct", None, {r: _llama3_turn(r) for r in ROLES}, stop_str=("<|eot_id|>",)),
    ChatTemplate("gemma-it", None, {"system": ("", ""), "user": ("<start_of_turn>user\n", "<end_of_turn>\n"),
                                    "assistant": ("<start_of_turn>model\n", "<end_of_turn>\n")},
                 stop_str=("<end_of_turn>",)),
):
    register_chat_template(_t)

for _pattern, _name in (
    (r"smollm", "smollm2"),
    (r"qwen.*(chat|instruct)", "qwen"),
    (r"llama-3.*instruct", "llama-3-instruct"),
    (r"llama-2.*chat", "llama-2-chat"),
    (r"tinyllama", "chatml"),
    (r"mistral|mixtral", "mistral"),
    (r"vicuna|llava-v1\.5", "vicuna_v1.1"),
    (r"gemma.*-it", "gemma-it"),
    (r"claude", "claude"),
):
    register_chat_template_matching_function(
        lambda path, _p=re.compile(_pattern, re.IGNORECASE), _n=_name: _n if _p.search(path) else None)
