"""Payloads: media types and Accept negotiation (media), the codec registry (registry), and the
built-in codecs (formats). Handlers import what they need from here."""

from serve.codecs.formats import default_codecs, to_numpy
from serve.codecs.media import parse_accept, parse_media_type
from serve.codecs.registry import Codec, CodecRegistry

__all__ = [
    "Codec",
    "CodecRegistry",
    "default_codecs",
    "parse_accept",
    "parse_media_type",
    "to_numpy",
]
