"""Strict reading of a built-in handler's settings from the archive's config file.

A bad value is a load error naming the handler, the key and the value, so a typo in
``model-config.yaml`` stops the server at start (and ``serve archive`` at packaging), never at the
first request.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from serve.contract import HandlerLoadError

logger = logging.getLogger(__name__)


class Settings:
    """Reads typed values out of a handler's options; every getter raises HandlerLoadError."""

    def __init__(self, handler: str, options: Mapping[str, Any]) -> None:
        self.handler = handler
        self.options = options

    def given(self, key: str) -> bool:
        """Whether the config file sets ``key`` (rather than leaving it to the default)."""
        return key in self.options

    def _bad(self, key: str, value: Any, expected: str) -> HandlerLoadError:
        return HandlerLoadError(f"{self.handler}: setting {key}={value!r}: expected {expected}")

    def integer(self, key: str, default: int, minimum: int = 0) -> int:
        value = self.options.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._bad(key, value, f"an integer of at least {minimum}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.options.get(key, default)
        if not isinstance(value, bool):
            raise self._bad(key, value, "true or false")
        return value

    def choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        value = self.options.get(key, default)
        if value not in choices:
            raise self._bad(key, value, "one of " + ", ".join(choices))
        return str(value)

    def text(self, key: str, default: str | None) -> str | None:
        value = self.options.get(key, default)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise self._bad(key, value, "a non-empty string")
        return value

    def floats(
        self, key: str, default: Sequence[float], lengths: Sequence[int]
    ) -> tuple[float, ...]:
        value = self.options.get(key, default)
        numbers = value if isinstance(value, list | tuple) else [value]
        valid = (
            all(isinstance(x, int | float) and not isinstance(x, bool) for x in numbers)
            and len(numbers) in lengths
        )
        if not valid:
            counts = " or ".join(str(n) for n in lengths)
            raise self._bad(key, value, f"a list of {counts} numbers")
        return tuple(float(x) for x in numbers)
