"""`python -m sgl_lang.launch_server --model-path PATH --port 30000 ...` (and the `sgl-lang-server`
console script). `--help` lists every flag. The server lives in sgl_lang.runtime.server; importing
this module does not load it."""
from __future__ import annotations

from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> None:
    from sgl_lang.runtime.server.launch import launch_server
    launch_server(argv)


if __name__ == "__main__":
    main()
