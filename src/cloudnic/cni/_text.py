"""Small helpers to quote user input inside error messages (bounded, JSON-style)."""

from __future__ import annotations

import json
from typing import Any

_LIMIT = 80


def show(value: Any, limit: int = _LIMIT) -> str:
    """``value`` as compact JSON, cut to ``limit`` characters so a huge input cannot flood a message."""
    try:
        text = json.dumps(value, separators=(",", ":"), default=repr)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def type_name(value: Any) -> str:
    """The JSON type name of a decoded value, for "must be a string, got an array" messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def got(value: Any) -> str:
    """``value`` for "…, got <this>" messages: its JSON type and a bounded rendering ("null" once)."""
    return "null" if value is None else f"{type_name(value)} {show(value)}"
