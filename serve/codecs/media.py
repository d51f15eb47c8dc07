"""Media types and Accept negotiation (RFC 9110, 8.3 and 12.5.1)."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence

from serve.errors import (
    NotAcceptableError,
)

logger = logging.getLogger(__name__)

MediaRange = tuple[str, dict[str, str], float]

_MAX_ECHO = 200  # longest piece of a client header repeated back in an error message
# Headers repeat from request to request: parsing and negotiation results are cached per value.
_CACHED_VALUES = 512
_CACHED_LENGTH = 256  # longer values (rare, up to 16 KB) are parsed each time, not kept


def _split_unquoted(value: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double-quoted strings (which may hold escapes)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        escaped = False
        for char in inner:
            if char == "\\" and not escaped:
                escaped = True
                continue
            out.append(char)
            escaped = False
        return "".join(out)
    return value


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type style value into its lower-cased type and its parameters.

    Args:
        value: e.g. ``'Application/JSON; charset="UTF-8"'``.

    Returns:
        The type and subtype, lower-cased, and the parameters with lower-cased names and
        unquoted values, e.g. ``("application/json", {"charset": "UTF-8"})``. An empty value
        gives ``("", {})``; parameters without ``=`` are dropped.
    """
    parse = _parse_media_type if len(value) <= _CACHED_LENGTH else _parse_media_type.__wrapped__
    media_type, params = parse(value)
    return media_type, dict(params)


@functools.lru_cache(maxsize=_CACHED_VALUES)
def _parse_media_type(value: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    first, *rest = _split_unquoted(value, ";")
    params: dict[str, str] = {}
    for item in rest:
        name, sep, raw = item.partition("=")
        name = name.strip().lower()
        if sep and name:
            params[name] = _unquote(raw.strip())
    return first.strip().lower(), tuple(params.items())


def _specificity(media_range: str) -> int:
    if media_range == "*/*":
        return 0
    return 1 if media_range.endswith("/*") else 2


def _quality(raw: str) -> float | None:
    try:
        q = float(raw)
    except ValueError:
        return None
    return q if math.isfinite(q) and 0.0 <= q <= 1.0 else None


def parse_accept(value: str) -> list[MediaRange]:
    """Parse an Accept header into media ranges, most preferred first.

    Args:
        value: the header, e.g. ``"application/json;q=0.5, text/*"``.

    Returns:
        ``(range, params, q)`` triples without the ``q`` parameter, sorted by q (highest first),
        then specificity (``type/sub`` before ``type/*`` before ``*/*``), then header order.
        Entries with a malformed q or without a ``/`` are ignored; a bare ``*`` means ``*/*``.
    """
    ranges: list[tuple[float, int, int, MediaRange]] = []
    for index, entry in enumerate(_split_unquoted(value, ",")):
        media_range, params = parse_media_type(entry)
        if media_range == "*":
            media_range = "*/*"
        if media_range.count("/") != 1 or (media_range.startswith("*/") and media_range != "*/*"):
            continue
        q = _quality(params.pop("q", "1"))
        if q is None:
            continue
        ranges.append((-q, -_specificity(media_range), index, (media_range, params, q)))
    ranges.sort(key=lambda item: item[:3])
    return [item[3] for item in ranges]


def _matches(media_range: str, media_type: str) -> bool:
    if media_range in ("*/*", media_type):
        return True
    return media_range.endswith("/*") and media_type.startswith(media_range[:-1])


def choose(accept: str, offered: Sequence[str], default: str) -> str:
    """Pick the offered media type that the Accept header prefers.

    Each offered type takes the q of the most specific range that matches it (parameters such
    as ``charset`` are ignored). The highest q wins; ties go to the type named by the more
    specific range, then the earlier range in the header, then ``default``, then offer order.

    Args:
        accept: the Accept header; empty, or with no valid range, means anything.
        offered: the media types that can be produced, in order of preference.
        default: the type answered when the client does not care, if it is offered.

    Returns:
        One of ``offered``, as given.

    Raises:
        NotAcceptableError: when nothing offered has a q above zero.
    """
    pick = _choose if len(accept) <= _CACHED_LENGTH else _choose.__wrapped__
    return pick(accept, tuple(offered), default)


@functools.lru_cache(maxsize=_CACHED_VALUES)
def _choose(accept: str, offered: tuple[str, ...], default: str) -> str:
    ranges = parse_accept(accept)
    default_type = parse_media_type(default)[0]
    best: tuple[float, int, int, int, int] | None = None
    chosen = ""
    for position, candidate in enumerate(offered):
        media_type = parse_media_type(candidate)[0]
        if not ranges:
            key = (-1.0, 0, 0, int(media_type != default_type), position)
        else:
            matching = [
                (-_specificity(r), i, q)
                for i, (r, _, q) in enumerate(ranges)
                if _matches(r, media_type)
            ]
            if not matching:
                continue
            specificity, index, q = min(matching, key=lambda m: m[:2])
            if q <= 0.0:
                continue
            key = (-q, specificity, index, int(media_type != default_type), position)
        if best is None or key < best:
            best, chosen = key, candidate
    if best is None:
        shown = accept if len(accept) <= _MAX_ECHO else accept[:_MAX_ECHO] + "..."
        available = ", ".join(offered) or "nothing"
        raise NotAcceptableError(
            f"none of the response types this endpoint produces matches Accept '{shown}'; "
            f"available: {available}"
        )
    return chosen
