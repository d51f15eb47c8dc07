"""The codec registry: which codec decodes a Content-Type and which encodes a negotiated Accept."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from serve.codecs.media import choose, parse_media_type
from serve.errors import (
    BadRequestError,
    NotAcceptableError,
    ServingError,
    UnsupportedMediaTypeError,
    brief,
)


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
            raise BadRequestError(f"malformed {media_type} payload: {brief(exc)}") from exc

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
                f"cannot encode a {kind} as {media_type}: {brief(exc)}"
            ) from exc
        if media_type.startswith("text/"):
            media_type += "; charset=utf-8"
        return body, media_type
