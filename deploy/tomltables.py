"""Typed reading of an endpoint definition's TOML tables, and the one error for what is wrong.

Every table of ``endpoints/NAME.toml`` (deploy/definitions.py, deploy/hostingtables.py) is read
with these checks, so that a wrong key or a wrong type is told the same way everywhere: one line
naming the file, the table and the key.
"""

from __future__ import annotations

from typing import Any

from deploy.errors import DeployError


class DefinitionError(DeployError):
    """The definition file is missing or holds a value that cannot be used."""


def check_keys(table: dict[str, Any], known: set[str] | None, where: str) -> None:
    """Refuse keys of ``table`` outside ``known`` (None: any key goes)."""
    unknown = set(table) - known if known is not None else set()
    if unknown:
        raise DefinitionError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(known or ()))})"
        )


def typed(table: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    """``table[key]`` (else ``default``) if it is a ``kind``; an int counts as a float."""
    value = table.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise DefinitionError(f"{where}: `{key}` must be a {kind.__name__}, not {value!r}")
    return value


def check_between(value: int | None, low: int, high: int, key: str, where: str) -> None:
    """Refuse an integer ``value`` outside ``low``-``high`` (None: not set, nothing to check)."""
    if value is not None and not low <= value <= high:
        raise DefinitionError(f"{where}: `{key}` must be {low}-{high}, not {value}")
