"""`python -m sgl_lang.router --worker URL ... [--policy prefix|round_robin|least_load]` or
`python -m sgl_lang.router --dp-size N [engine flags]`: the cache-aware data-parallel router.
`--help` lists every flag. It lives in sgl_lang.runtime.router; importing this module loads nothing."""
from __future__ import annotations

from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> None:
    from sgl_lang.runtime.router.launch import main as launch_router
    launch_router(argv)


if __name__ == "__main__":
    main()
