"""Validation helpers for the task-specific fields of a request body.

Every helper raises ``TaskInputError`` naming the field and what was wrong, so the service can answer a
clear 4xx without knowing the family.
"""

from __future__ import annotations

from typing import Any

from model.tasks.base import TaskInputError


def require(body: dict[str, Any], name: str) -> Any:
    """The value of a required field; a clear error when the body is not an object or lacks it."""
    if not isinstance(body, dict):
        raise TaskInputError(f"request body must be a JSON object, got {type(body).__name__}")
    if name not in body or body[name] is None:
        raise TaskInputError(f"missing required field '{name}'", field_name=name)
    return body[name]


def as_int(value: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """An integer (bools and floats are rejected: JSON true or 3.5 is never a count or an index)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TaskInputError(f"'{name}' must be an integer, got {value!r}", field_name=name)
    if lo is not None and value < lo or hi is not None and value > hi:
        raise TaskInputError(f"'{name}' = {value} is out of range {lo}..{hi}", field_name=name)
    return value


def as_int_pairs(value: Any, name: str) -> list[tuple[int, int]]:
    """A list of [a, b] integer pairs (range checks are the caller's: they depend on other fields)."""
    if not isinstance(value, list):
        raise TaskInputError(f"'{name}' must be a list of [a, b] pairs, got {type(value).__name__}", name)
    pairs: list[tuple[int, int]] = []
    for i, item in enumerate(value):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise TaskInputError(f"{name}[{i}] must be a pair [a, b], got {item!r}", field_name=name)
        a = as_int(item[0], f"{name}[{i}][0]")
        b = as_int(item[1], f"{name}[{i}][1]")
        pairs.append((a, b))
    return pairs
