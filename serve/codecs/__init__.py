"""Payloads: media types and Accept negotiation (media), the codec registry (registry), the
built-in codecs (formats, arrays, images) and what they share (values). Handlers import what
they need from here."""

from serve.codecs.formats import default_codecs
from serve.codecs.media import parse_accept, parse_media_type
from serve.codecs.registry import Codec, CodecRegistry
from serve.codecs.values import to_numpy

__all__ = [
    "Codec",
    "CodecRegistry",
    "default_codecs",
    "parse_accept",
    "parse_media_type",
    "to_numpy",
]
