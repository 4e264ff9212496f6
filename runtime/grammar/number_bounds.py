"""Numeric bounds of a JSON schema, taken out of what a grammar library compiles.

llguidance and xgrammar compile `minimum` / `maximum` / `multipleOf` into digit-by-digit rules
that have no exponent form, so `1.19e+308` under `maximum: 1.7976931348623157e+308`, or `1e-06`
under `minimum: 0`, is refused although it is valid (JSONSchemaBench: 172 of the 323 valid
instances `auto` refused). Two remedies, both only for verified JSON grammars ("auto", where the
schema check before the stop token, verified_grammar.py, still enforces every bound):

    drop_wide_bounds(spec)    bounds of magnitude >= 2**53 (Long.MAX_VALUE, Double.MAX_VALUE...):
                              they constrain nothing a model writes in plain digits, so the
                              grammar goes without them
    drop_number_bounds(spec)  every minimum/maximum/exclusive*/multipleOf: the grammar that
                              exponent_grammar.py follows once a number takes an exponent

Both take and return JSON text, the same text when nothing was dropped. Values under `const`,
`enum`, `default` and `examples` are instances, not schemas, and are left alone.
"""
from __future__ import annotations

import json

WIDE_BOUND = 2.0 ** 53
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_DRAFT4_FLAGS = {"minimum": "exclusiveMinimum", "maximum": "exclusiveMaximum"}
_DATA_KEYWORDS = ("const", "enum", "default", "examples")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _relax(node, keys: tuple[str, ...], wide_only: bool) -> bool:
    """Drop the bounds in place; True when something was dropped."""
    changed = False
    if isinstance(node, dict):
        for key in keys:
            value = node.get(key)
            if _is_number(value) and (not wide_only or abs(value) >= WIDE_BOUND):
                del node[key]
                flag = _DRAFT4_FLAGS.get(key)
                if flag is not None and isinstance(node.get(flag), bool):
                    del node[flag]  # draft-4 exclusiveness of the bound just dropped
                changed = True
        for key, value in node.items():
            if key not in _DATA_KEYWORDS:
                changed |= _relax(value, keys, wide_only)
    elif isinstance(node, list):
        for item in node:
            changed |= _relax(item, keys, wide_only)
    return changed


def _drop(spec: str, keys: tuple[str, ...], wide_only: bool) -> str:
    try:
        schema = json.loads(spec)
    except ValueError:
        return spec  # not ours to judge here: the backend reports a bad schema
    return json.dumps(schema) if _relax(schema, keys, wide_only) else spec


def drop_wide_bounds(spec: str) -> str:
    return _drop(spec, _BOUNDS, wide_only=True)


def drop_number_bounds(spec: str) -> str:
    return _drop(spec, _BOUNDS + ("multipleOf",), wide_only=False)
