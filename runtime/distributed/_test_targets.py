"""Rank entry points used by the tests of this package (spawned processes must import them)."""
from __future__ import annotations

import sys


def exit_at_once(rank: int, size: int, init_method: str, code: int) -> None:
    """A rank that dies before joining the group."""
    sys.exit(code)
