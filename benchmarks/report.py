"""Shared helpers: print a table and replace a named section of docs/benchmarks.md."""
from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks.md")


def machine() -> str:
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    cpu = platform.processor() or "cpu"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        m = re.search(r"Model name:\s*(.+)", out)
        cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        return f"{v:,.1f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, command: str) -> None:
    """Replace (or append) the section `## name` of docs/benchmarks.md."""
    header = f"## {name}"
    stamp = f"Measured {datetime.date.today().isoformat()} on {machine()} with `{command}`."
    section = f"{header}\n\n{stamp}\n\n{body.strip()}\n"
    text = open(DOC).read() if os.path.exists(DOC) else "# Benchmarks\n\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    with open(DOC, "w") as f:
        f.write(text)
