"""Media types, Accept negotiation (RFC 9110, 8.3 and 12.5.1) and the codec registry.

The codecs themselves live in :mod:`serve.codecs`, which re-exports everything public here.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from serve.errors import (
    BadRequestError,
    NotAcceptableError,
    ServingError,
    UnsupportedMediaTypeError,
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


def _reason(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "..."


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


@runtime_checkable
class Codec(Protocol):
    """Decodes request bodies of, and/or encodes responses as, some media types.

    Attributes:
        media_types: the lower-cased media types handled, e.g. ``("application/json",)``.
        can_decode: whether ``decode`` may be called.
        can_encode: whether ``encode`` may be called.
    """

    media_types: tuple[str, ...]
    can_decode: bool
    can_encode: bool

    def decode(self, body: bytes, params: Mapping[str, str]) -> Any:
        """Turn a body into a value; raise BadRequestError (or ValueError) on bad data."""

    def encode(self, value: Any, params: Mapping[str, str]) -> bytes:
        """Turn a value into bytes; raise NotAcceptableError (or TypeError/ValueError)."""
        ...


class CodecRegistry:
    """Maps media types to codecs; one instance per app, passed to whoever needs it.

    A later registration of a media type overrides an earlier one, separately for decoding and
    encoding: a decode-only codec leaves the type's encoder in place.
    """

    def __init__(self, codecs: Iterable[Codec] = ()) -> None:
        self._decoders: dict[str, Codec] = {}
        self._encoders: dict[str, Codec] = {}
        for codec in codecs:
            self.register(codec)

    def register(self, codec: Codec) -> None:
        """Add ``codec`` for each of its media types."""
        for media_type in codec.media_types:
            key = parse_media_type(media_type)[0]
            if codec.can_decode:
                self._decoders[key] = codec
            if codec.can_encode:
                self._encoders[key] = codec

    @property
    def decodable_types(self) -> tuple[str, ...]:
        """The request Content-Types accepted, in registration order."""
        return tuple(self._decoders)

    @property
    def encodable_types(self) -> tuple[str, ...]:
        """The response types that can be produced, in registration order."""
        return tuple(self._encoders)

    def decode(self, body: bytes, content_type: str) -> Any:
        """Decode ``body`` with the codec for ``content_type``, which gets its parameters.

        Raises:
            UnsupportedMediaTypeError: no codec decodes that type (the message lists those that do).
            BadRequestError: the body is not valid for that type.
        """
        media_type, params = parse_media_type(content_type)
        codec = self._decoders.get(media_type)
        if codec is None:
            shown = repr(media_type[:100]) if media_type else "(none)"
            raise UnsupportedMediaTypeError(
                f"unsupported Content-Type {shown}; accepted: {', '.join(self.decodable_types)}"
            )
        try:
            return codec.decode(body, params)
        except ServingError:
            raise
        except (ValueError, TypeError, EOFError) as exc:  # plug-in codecs may raise these
            raise BadRequestError(f"malformed {media_type} payload: {_reason(exc)}") from exc

    def negotiate(
        self, accept: str, offered: Sequence[str] | None = None, default: str = "application/json"
    ) -> str:
        """Choose a response type for an Accept header (q-values, ``type/*``, ``*/*`` honoured).

        Args:
            accept: the Accept header; empty or missing means anything.
            offered: the candidate types; defaults to :attr:`encodable_types`.
            default: answered for an empty Accept or a ``*/*`` match when it is offered;
                otherwise the first offered type is.

        Raises:
            NotAcceptableError: nothing offered is acceptable (the message lists what is).
        """
        return choose(accept or "", self.encodable_types if offered is None else offered, default)

    def encode(
        self, value: Any, accept: str, default: str = "application/json"
    ) -> tuple[bytes, str]:
        """Encode ``value`` as the type negotiated from ``accept``.

        Returns:
            The body and its Content-Type; ``text/*`` types carry ``; charset=utf-8``.

        Raises:
            NotAcceptableError: nothing acceptable, or the chosen codec cannot represent ``value``.
        """
        media_type = self.negotiate(accept, default=default)
        try:
            body = self._encoders[media_type].encode(value, {})
        except ServingError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            kind = type(value).__name__
            raise NotAcceptableError(
                f"cannot encode a {kind} as {media_type}: {_reason(exc)}"
            ) from exc
        if media_type.startswith("text/"):
            media_type += "; charset=utf-8"
        return body, media_type
