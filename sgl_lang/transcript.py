"""Transcript: a program's text and chat messages, and how roles extend them (via a ChatTemplate).
Shared by the interpreter and the tracer so both render roles identically."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .chat_template import ChatTemplate
from .errors import NestedRoleError, SglError


@dataclass
class Transcript:
    template: ChatTemplate
    text: str = ""
    messages: list[dict] = field(default_factory=list)
    cur_role: Optional[str] = None
    cur_role_begin_pos: int = 0  # index in `text` where the open role's content starts

    def append(self, value: str) -> None:
        self.text += value

    def begin_role(self, role: str) -> None:
        if self.cur_role is not None:
            raise NestedRoleError(f"Nested roles are not allowed. ({role!r} began inside {self.cur_role!r})")
        default_system = self.template.default_system_prompt
        if not self.messages and role != "system" and default_system is not None:
            self.begin_role("system")
            self.append(default_system)
            self.end_role("system")
        prefix, _ = self.template.get_prefix_and_suffix(role, self.messages)
        self.append(prefix)
        self.cur_role, self.cur_role_begin_pos = role, len(self.text)

    def end_role(self, role: str) -> None:
        if self.cur_role != role:
            raise SglError(f"role end {role!r} does not match the open role {self.cur_role!r}")
        content = self.text[self.cur_role_begin_pos:]
        _, suffix = self.template.get_prefix_and_suffix(role, self.messages)
        self.append(suffix)
        self.messages.append({"role": role, "content": content})
        self.cur_role = None

    def is_in_assistant_turn(self) -> bool:
        """True right after an assistant prefix (what chat-model backends need before a gen)."""
        return self.cur_role == "assistant" and len(self.text) == self.cur_role_begin_pos

    def copy(self) -> "Transcript":
        return Transcript(self.template, self.text, [dict(m) for m in self.messages],
                          self.cur_role, self.cur_role_begin_pos)
