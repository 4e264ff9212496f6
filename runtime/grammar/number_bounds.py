"""Numeric bounds too wide to guide generation, taken out of the schema a grammar library compiles.

llguidance and xgrammar compile `minimum` / `maximum` into a digit-by-digit range grammar that has
no exponent form, so `1.19e+308` under `maximum: 1.7976931348623157e+308` is refused although it
is valid (JSONSchemaBench: 172 of the 323 valid instances `auto` refused). A bound of magnitude
>= 2**53 (past the exactly representable integers: Long.MAX_VALUE, Double.MAX_VALUE...) constrains
nothing a model writes in plain digits, so the grammar goes without it and the schema check before
the stop token (verified_grammar.py) enforces it. Only for verified JSON grammars ("auto").

    drop_wide_bounds(spec) -> spec'     JSON text in, JSON text out (the same text when no change)
"""
from __future__ import annotations

import json

WIDE_BOUND = 2.0 ** 53
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_DRAFT4_FLAGS = {"minimum": "exclusiveMinimum", "maximum": "exclusiveMaximum"}
_DATA_KEYWORDS = ("const", "enum", "default", "examples")  # instances, not schemas: left as they are


def _is_wide(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) >= WIDE_BOUND


def _relax(node) -> bool:
    """Drop wide bounds in place; True when something was dropped."""
    changed = False
    if isinstance(node, dict):
        for key in _BOUNDS:
            if _is_wide(node.get(key)):
                del node[key]
                flag = _DRAFT4_FLAGS.get(key)
                if flag is not None and isinstance(node.get(flag), bool):
                    del node[flag]  # draft-4 exclusiveness of the bound just dropped
                changed = True
        for key, value in node.items():
            if key not in _DATA_KEYWORDS:
                changed |= _relax(value)
    elif isinstance(node, list):
        for item in node:
            changed |= _relax(item)
    return changed


def drop_wide_bounds(spec: str) -> str:
    """See the module docstring."""
    try:
        schema = json.loads(spec)
    except ValueError:
        return spec  # not ours to judge here: the backend reports a bad schema
    return json.dumps(schema) if _relax(schema) else spec
