"""Payloads: media types and Accept negotiation (media), the codec registry (registry), the
built-in codecs (formats, arrays, images) and what they share (values), and a batch transform
request's records, one a line (records). Handlers import what they need from here."""

from serve.codecs.formats import default_codecs
from serve.codecs.media import parse_accept, parse_media_type
from serve.codecs.pieces import encode_piece
from serve.codecs.records import (
    JSONLINES_TYPES,
    LINE_TYPES,
    Record,
    at_line,
    encode_records,
    split_records,
)
from serve.codecs.registry import Codec, CodecRegistry
from serve.codecs.values import decode_text, json_default, to_numpy

__all__ = [
    "JSONLINES_TYPES",
    "LINE_TYPES",
    "Codec",
    "CodecRegistry",
    "Record",
    "at_line",
    "decode_text",
    "default_codecs",
    "encode_piece",
    "encode_records",
    "json_default",
    "parse_accept",
    "parse_media_type",
    "split_records",
    "to_numpy",
]
