"""Codecs and content negotiation: round trips, charsets, malformed payloads, Accept handling."""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import json
import struct
import tracemalloc
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from serve.codecs import (
    Codec,
    CodecRegistry,
    default_codecs,
    parse_accept,
    parse_media_type,
    to_numpy,
)
from serve.codecs.images import ImageCodec, PixelsOnly
from serve.errors import (
    BadRequestError,
    NotAcceptableError,
    PayloadTooLargeError,
    ServingError,
    UnsupportedMediaTypeError,
)
from tests.fixtures.payloads import npy


@pytest.fixture
def codecs() -> CodecRegistry:
    return default_codecs()


def assert_clean(error: ServingError, status: int) -> None:
    assert error.status_code == status
    assert "Traceback" not in error.message
    assert 'File "' not in error.message
    assert "\n" not in error.message


def image_bytes(image_format: str, mode: str = "RGB", size: tuple[int, int] = (8, 6)) -> bytes:
    image = Image.new(mode, size, color=(200, 30, 60) if mode == "RGB" else 128)
    out = io.BytesIO()
    image.save(out, format=image_format)
    return out.getvalue()


# Bombs: small bodies that declare huge arrays or images (also sent over HTTP in the integration
# tests).

BOMB_SIDE = 9400  # 88 M pixels: under Pillow's own limit, over the default budget


def npy_with_header(header: str) -> bytes:
    """A version 1.0 ``.npy`` body made of ``header`` (the dict's text) and no data."""
    text = header.encode("latin-1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def npy_declaring(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    return npy_with_header(f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}")


def npz_of(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


@functools.cache
def png_declaring(width: int = BOMB_SIDE, height: int = BOMB_SIDE) -> bytes:
    """A valid 1-bit black PNG of ``width`` x ``height``: a few kB, built row by row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    row = bytes(1 + (width + 7) // 8)  # filter type 0, then the packed bits
    packer = zlib.compressobj(9)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def jpeg_declaring(width: int = BOMB_SIDE, height: int = BOMB_SIDE) -> bytes:
    """A small JPEG whose frame header (SOF0) is patched to ``width`` x ``height``."""
    body = bytearray(image_bytes("JPEG"))
    frame = body.index(b"\xff\xc0")  # marker, length (2), precision (1), height, width
    body[frame + 5 : frame + 9] = struct.pack(">HH", height, width)
    return bytes(body)


MIB = 1 << 20
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _reset_peak_rss() -> int | None:
    """Reset the process's peak resident size to its current size and return it in bytes;
    None where that cannot be done (Linux only)."""
    try:
        _CLEAR_REFS.write_text("5")  # resets the peak to the current size
    except OSError:
        return None
    return _rss_high_water_mark()


def _rss_high_water_mark() -> int:
    line = next(x for x in _STATUS.read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


@contextlib.contextmanager
def allocates_at_most(limit: int) -> Iterator[None]:
    """Fail if the block allocates more than ``limit`` bytes at its peak: Python and numpy
    allocations (tracemalloc), and where Linux allows, the growth of the peak resident size
    (Pillow's pixel buffers are not traced)."""
    rss = _reset_peak_rss()
    tracemalloc.start()
    try:
        yield
    finally:
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        grown = max(traced, _rss_high_water_mark() - rss if rss is not None else 0)
        assert grown <= limit, f"allocated {grown / MIB:.0f} MiB"


# media types and Accept parsing


def test_parse_media_type_lowercases_type_and_names_and_unquotes() -> None:
    assert parse_media_type("Application/JSON; charset=UTF-8") == (
        "application/json",
        {"charset": "UTF-8"},
    )
    assert parse_media_type('text/plain; Charset="latin-1"; x="a;b"') == (
        "text/plain",
        {"charset": "latin-1", "x": "a;b"},
    )
    assert parse_media_type("") == ("", {})


def test_parse_accept_sorts_by_q_then_specificity_then_order() -> None:
    ranges = parse_accept("*/*;q=0.1, text/*, application/json;q=0.5, text/csv, a/b;q=x")
    assert [(r, q) for r, _, q in ranges] == [
        ("text/csv", 1.0),
        ("text/*", 1.0),
        ("application/json", 0.5),
        ("*/*", 0.1),
    ]
    assert all("q" not in params for _, params, _ in ranges)


@pytest.mark.parametrize("bad", ["text/csv;q=2", "text/csv;q=-1", "text/csv;q=nan", "csv"])
def test_parse_accept_ignores_malformed_entries(bad: str) -> None:
    assert parse_accept(f"{bad}, application/json") == [("application/json", {}, 1.0)]


# negotiation


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/json;q=0.5, text/csv", "text/csv"),
        ("*/*", "application/json"),
        ("", "application/json"),
        ("text/*", "text/csv"),
        ("text/plain, text/*;q=0.9", "text/plain"),
        ("application/json;q=0, */*", "application/jsonlines"),
        ("text/*;q=0.5, text/csv;q=0", "text/plain"),
        ("application/json; charset=utf-8", "application/json"),
        ("text/csv, application/x-npy", "text/csv"),
        ("image/*", "image/png"),
        ("application/x-npy;q=0.9, */*;q=0.8", "application/x-npy"),
    ],
)
def test_negotiate(codecs: CodecRegistry, accept: str, expected: str) -> None:
    assert codecs.negotiate(accept) == expected


def test_negotiate_with_offered_types_and_defaults(codecs: CodecRegistry) -> None:
    offered = ("text/csv", "application/json")
    assert codecs.negotiate("*/*", offered, default="application/json") == "application/json"
    assert codecs.negotiate("", ("text/csv", "text/plain"), default="image/png") == "text/csv"
    assert codecs.negotiate("*/*", offered, default="text/csv") == "text/csv"


@pytest.mark.parametrize("accept", ["image/gif", "application/json;q=0", "video/*, text/html"])
def test_negotiate_nothing_acceptable_is_406_listing_types(
    codecs: CodecRegistry, accept: str
) -> None:
    with pytest.raises(NotAcceptableError) as info:
        codecs.negotiate(accept, ("application/json", "text/csv"))
    assert_clean(info.value, 406)
    assert "application/json, text/csv" in info.value.message


# registry


def test_unknown_content_type_is_415_listing_accepted(codecs: CodecRegistry) -> None:
    with pytest.raises(UnsupportedMediaTypeError) as info:
        codecs.decode(b"x", "application/xml")
    assert_clean(info.value, 415)
    assert "application/xml" in info.value.message
    assert "application/json" in info.value.message


def test_default_codecs_is_a_new_registry_each_call() -> None:
    first, second = default_codecs(), default_codecs()
    assert first is not second
    first.register(_ShoutCodec())
    assert "text/shout" in first.decodable_types
    assert "text/shout" not in second.decodable_types


class _ShoutCodec:
    media_types: tuple[str, ...] = ("text/shout", "application/json")
    can_decode = True
    can_encode = False

    def decode(self, body: bytes, params: Any) -> Any:
        if not body:
            raise ValueError("nothing to shout")
        return body.decode().upper()

    def encode(self, value: Any, params: Any) -> bytes:
        raise NotImplementedError


def test_later_registration_overrides_only_the_roles_it_has() -> None:
    registry = default_codecs()
    registry.register(_ShoutCodec())
    assert registry.decode(b"hi", "application/json") == "HI"
    assert registry.encode({"a": 1}, "application/json") == (b'{"a":1}', "application/json")
    with pytest.raises(BadRequestError, match="malformed text/shout payload: nothing to shout"):
        registry.decode(b"", "text/shout")


def test_encode_appends_charset_to_text_types(codecs: CodecRegistry) -> None:
    assert codecs.encode("hé", "text/plain") == ("hé".encode(), "text/plain; charset=utf-8")
    assert codecs.encode([1, 2], "text/csv")[1] == "text/csv; charset=utf-8"
    assert codecs.encode([1, 2], "")[1] == "application/json"


def test_encode_value_the_codec_cannot_represent_is_406(codecs: CodecRegistry) -> None:
    for value, accept in [({"a": 1}, "image/png"), (object(), "application/json")]:
        with pytest.raises(NotAcceptableError) as info:
            codecs.encode(value, accept)
        assert_clean(info.value, 406)
        assert accept in info.value.message


# JSON


def test_json_round_trip_with_numpy_and_charset(codecs: CodecRegistry) -> None:
    value = {"a": np.arange(3), "b": np.float32(0.5), "c": [np.int64(2), {"d": np.bool_(True)}]}
    body, content_type = codecs.encode(value, "application/json")
    assert body == b'{"a":[0,1,2],"b":0.5,"c":[2,{"d":true}]}'
    assert content_type == "application/json"
    decoded = codecs.decode(body, "application/json; charset=utf-8")
    assert decoded == {"a": [0, 1, 2], "b": 0.5, "c": [2, {"d": True}]}
    latin = json.dumps({"name": "café"}, ensure_ascii=False).encode("latin-1")
    assert codecs.decode(latin, "Application/JSON; charset=ISO-8859-1") == {"name": "café"}


@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    [
        (b'{"a": ', "application/json", "malformed application/json payload: Expecting value"),
        (b"", "application/json", "malformed application/json payload: empty body"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", "application/json"),
        (b'"\xff"', "application/json", "not valid utf-8 at byte 1"),
        (b"{}", "application/json; charset=klingon", "unsupported charset 'klingon'"),
        (b"{}", "application/json; charset=base64", "unsupported charset 'base64'"),
        (b"{}", "application/json; charset=undefined", "unsupported charset 'undefined'"),
        (b"{}", "application/json; charset=rot13", "unsupported charset 'rot13'"),
        (b"{}", "application/json; charset=zip", "unsupported charset 'zip'"),
        (b"{}", 'application/json; charset="utf-8\x00"', "unsupported charset"),
        (b"{}", "application/json; charset=mbcs", "unsupported charset 'mbcs'"),
        (
            b"xn--\xff",
            "text/csv; charset=punycode",
            "malformed text/csv payload: not valid punycode",
        ),
    ],
)
def test_malformed_json_is_400(
    codecs: CodecRegistry, body: bytes, content_type: str, fragment: str
) -> None:
    with pytest.raises(BadRequestError) as info:
        codecs.decode(body, content_type)
    assert_clean(info.value, 400)
    assert fragment in info.value.message


# JSON Lines


@pytest.mark.parametrize(
    "content_type", ["application/jsonlines", "application/jsonl", "application/x-jsonlines"]
)
def test_jsonlines_round_trip(codecs: CodecRegistry, content_type: str) -> None:
    records = [{"a": 1}, [1, 2], "x\u2028y"]
    body, produced = codecs.encode(records, content_type)
    assert produced == content_type
    assert body.endswith(b"\n") and body.count(b"\n") == 3
    assert codecs.decode(body, content_type) == records
    assert codecs.decode(b'{"a":1}\n\n  \r\n{"b":2}', content_type) == [{"a": 1}, {"b": 2}]


def test_jsonlines_encodes_array_rows_and_single_records(codecs: CodecRegistry) -> None:
    assert codecs.encode(np.eye(2), "application/jsonlines")[0] == b"[1.0,0.0]\n[0.0,1.0]\n"
    assert codecs.encode({"a": 1}, "application/jsonlines")[0] == b'{"a":1}\n'


def test_malformed_jsonlines_names_the_line(codecs: CodecRegistry) -> None:
    with pytest.raises(BadRequestError) as info:
        codecs.decode(b'{"a":1}\n\n{"b":\n', "application/jsonlines")
    assert_clean(info.value, 400)
    assert (
        "malformed application/jsonlines payload: Expecting value at line 3 column 6"
        in info.value.message
    )


# CSV


def test_csv_numeric_decodes_to_float32_2d(codecs: CodecRegistry) -> None:
    array = codecs.decode(b"1,2.5,3\n4,5,-6e1\n", "text/csv")
    assert array.dtype == np.float32 and array.shape == (2, 3)
    np.testing.assert_array_equal(array, [[1, 2.5, 3], [4, 5, -60]])
    assert codecs.decode(b"1,2,3", "text/csv").shape == (1, 3)


def test_csv_text_decodes_to_str_array(codecs: CodecRegistry) -> None:
    array = codecs.decode(b'a,"b,c"\n1,2\n', "text/csv")
    assert array.dtype.kind == "U"
    assert array.tolist() == [["a", "b,c"], ["1", "2"]]
    latin = "é,1\n".encode("latin-1")
    assert codecs.decode(latin, "text/csv; charset=latin-1").tolist() == [["é", "1"]]


def test_csv_ragged_rows_are_400(codecs: CodecRegistry) -> None:
    with pytest.raises(BadRequestError) as info:
        codecs.decode(b"1,2,3\n4,5\n", "text/csv")
    assert_clean(info.value, 400)
    assert "row 2 has 2 fields" in info.value.message


def test_csv_encode_shapes_and_round_trip(codecs: CodecRegistry) -> None:
    matrix = np.array([[0.1, 2.0], [3.0, 4.5]], dtype=np.float32)
    body, _ = codecs.encode(matrix, "text/csv")
    assert body == b"0.1,2.0\n3.0,4.5\n"
    np.testing.assert_array_equal(codecs.decode(body, "text/csv"), matrix)
    assert codecs.encode([1, 2, 3], "text/csv")[0] == b"1\n2\n3\n"
    assert codecs.encode(7, "text/csv")[0] == b"7\n"
    assert codecs.encode([["a", "b,c"]], "text/csv")[0] == b'a,"b,c"\n'
    with pytest.raises(NotAcceptableError):
        codecs.encode(np.zeros((2, 2, 2)), "text/csv")


# npy / npz


def test_npy_round_trip(codecs: CodecRegistry) -> None:
    array = np.arange(12, dtype=np.int16).reshape(3, 4)
    body, content_type = codecs.encode(array, "application/x-npy")
    assert content_type == "application/x-npy"
    decoded = codecs.decode(body, "application/x-npy")
    assert decoded.dtype == np.int16
    np.testing.assert_array_equal(decoded, array)


def test_npy_refuses_pickled_object_arrays(codecs: CodecRegistry) -> None:
    body = npy(np.array([{"evil": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(BadRequestError) as info:
        codecs.decode(body, "application/x-npy")
    assert_clean(info.value, 400)
    assert "object arrays are not accepted" in info.value.message
    with pytest.raises(NotAcceptableError):
        codecs.encode(np.array([None], dtype=object), "application/x-npy")


@pytest.mark.parametrize("body", [b"", b"not npy", npy(np.arange(100))[:-10]])
def test_malformed_npy_is_400(codecs: CodecRegistry, body: bytes) -> None:
    with pytest.raises(BadRequestError) as info:
        codecs.decode(body, "application/x-npy")
    assert_clean(info.value, 400)
    assert "malformed application/x-npy payload" in info.value.message


@pytest.mark.parametrize(
    "header",
    [
        "{'descr': '<f8', 'fortran_order': False, 'shape': (3,",  # tokenize.TokenError in numpy
        "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'x': 1}",
        "{'descr': '<f8', 'fortran_order': False, 'shape': (-2, -3), }",
        "{'descr': '<f8', 'fortran_order': False, 'shape': (0, 100000000000000000000), }",
        "{[1]: 2}",
        "(" * 5000 + ")" * 5000,
    ],
)
def test_malformed_npy_header_is_400(codecs: CodecRegistry, header: str) -> None:
    with pytest.raises(BadRequestError) as info:
        codecs.decode(npy_with_header(header), "application/x-npy")
    assert_clean(info.value, 400)
    assert "malformed application/x-npy payload" in info.value.message


@pytest.mark.parametrize(
    ("shape", "descr"),
    [((100_000, 100_000), "<f8"), ((4096, 4096), "<f8"), ((10**10,), "|V0"), ((), "<f8")],
)
def test_npy_declaring_more_than_the_body_holds_is_400_before_allocating(
    codecs: CodecRegistry, shape: tuple[int, ...], descr: str
) -> None:
    body = npy_declaring(shape, descr)
    with pytest.raises(BadRequestError) as info, allocates_at_most(4 * MIB):
        codecs.decode(body, "application/x-npy")
    assert_clean(info.value, 400)
    assert f"shape {shape}" in info.value.message and "the payload holds 0" in info.value.message


def test_npz_member_declaring_more_than_it_holds_is_400_before_allocating(
    codecs: CodecRegistry,
) -> None:
    body = npz_of({"ok.npy": npy(np.arange(3)), "big.npy": npy_declaring((100_000, 100_000))})
    with pytest.raises(BadRequestError) as info, allocates_at_most(4 * MIB):
        codecs.decode(body, "application/x-npz")
    assert_clean(info.value, 400)
    assert "malformed application/x-npz payload: shape (100000, 100000)" in info.value.message


def test_npz_malformed_member_header_and_zip_are_400(codecs: CodecRegistry) -> None:
    bad_header = npz_of({"x.npy": npy_with_header("{'descr': '<f8', 'shape': (3,")})
    corrupt = bytearray(npz_of({"x.npy": npy(np.arange(1000))}))
    corrupt[60:80] = bytes(20)  # inside the deflated member
    for body in (bad_header, bytes(corrupt)):
        with pytest.raises(BadRequestError) as info:
            codecs.decode(body, "application/x-npz")
        assert_clean(info.value, 400)
        assert "malformed application/x-npz payload" in info.value.message


def test_npy_and_npz_keep_fortran_order_and_version_3_headers(codecs: CodecRegistry) -> None:
    fortran = np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3))
    named = np.zeros(2, dtype=[("coût €", "<f4")])  # a name beyond Latin-1: format 3.0
    with pytest.warns(UserWarning, match="format 3.0"):
        body = npy(named)
    decoded = codecs.decode(npy(fortran), "application/x-npy")
    np.testing.assert_array_equal(decoded, fortran)
    assert decoded.flags.f_contiguous
    assert codecs.decode(body, "application/x-npy").dtype == named.dtype
    both = codecs.decode(npz_of({"f.npy": npy(fortran), "n.npy": body}), "application/x-npz")
    assert both["n"].dtype == named.dtype and both["f"].tolist() == fortran.tolist()


def test_npz_round_trip(codecs: CodecRegistry) -> None:
    arrays = {"x": np.ones((2, 2), dtype=np.float32), "ids": np.array([3, 4])}
    body, _ = codecs.encode(arrays, "application/x-npz")
    decoded = codecs.decode(body, "application/x-npz")
    assert set(decoded) == {"x", "ids"}
    for name, array in arrays.items():
        np.testing.assert_array_equal(decoded[name], array)
        assert decoded[name].dtype == array.dtype
    single = codecs.decode(codecs.encode([1, 2], "application/x-npz")[0], "application/x-npz")
    assert list(single) == ["arr_0"]


def test_npz_refuses_object_arrays_and_garbage(codecs: CodecRegistry) -> None:
    out = io.BytesIO()
    np.savez(out, bad=np.array([{}], dtype=object))
    with pytest.raises(BadRequestError, match="object arrays are not accepted"):
        codecs.decode(out.getvalue(), "application/x-npz")
    stray = io.BytesIO()
    with zipfile.ZipFile(stray, "w") as archive:
        archive.writestr("notes.txt", "not an array")
    for body in (b"", b"PK\x03\x04garbage", npy(np.arange(3)), stray.getvalue()):
        with pytest.raises(BadRequestError) as info:
            codecs.decode(body, "application/x-npz")
        assert_clean(info.value, 400)


def test_npz_decompressed_size_is_bounded() -> None:
    out = io.BytesIO()
    np.savez_compressed(out, zeros=np.zeros(1_000_000))
    registry = CodecRegistry([_small_npz()])
    with pytest.raises(PayloadTooLargeError) as info:
        registry.decode(out.getvalue(), "application/x-npz")
    assert_clean(info.value, 413)


def _small_npz() -> Codec:
    from serve.codecs.arrays import NpzCodec

    return NpzCodec(max_bytes=1000)


# text and bytes


def test_text_round_trip_and_charsets(codecs: CodecRegistry) -> None:
    assert codecs.decode("é".encode("latin-1"), "text/plain; charset=latin-1") == "é"
    assert codecs.decode("é".encode(), "text/plain") == "é"
    assert codecs.encode({"a": [1]}, "text/plain")[0] == b'{"a":[1]}'
    with pytest.raises(BadRequestError) as info:
        codecs.decode(b"\xe9", "text/plain")
    assert_clean(info.value, 400)


def test_octet_stream(codecs: CodecRegistry) -> None:
    assert codecs.decode(b"\x00\x01", "application/octet-stream") == b"\x00\x01"
    accept = "application/octet-stream"
    assert codecs.encode(bytearray(b"ab"), accept)[0] == b"ab"
    assert codecs.encode(memoryview(b"cd"), accept)[0] == b"cd"
    assert codecs.encode("é", accept)[0] == "é".encode()
    array = np.arange(4, dtype=np.uint8)
    assert codecs.encode(array, accept) == (array.tobytes(), accept)
    with pytest.raises(NotAcceptableError):
        codecs.encode({"a": 1}, accept)


# images


@pytest.mark.parametrize(
    ("image_format", "content_type"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("PNG", "application/x-image")],
)
def test_image_decode(codecs: CodecRegistry, image_format: str, content_type: str) -> None:
    image = codecs.decode(image_bytes(image_format), content_type)
    assert isinstance(image, Image.Image)
    assert image.size == (8, 6) and image.format == image_format


def test_image_encode_round_trip(codecs: CodecRegistry) -> None:
    pixels = np.zeros((6, 8, 3), dtype=np.uint8)
    pixels[..., 0] = 255
    png, content_type = codecs.encode(pixels, "image/png")
    assert content_type == "image/png" and png.startswith(b"\x89PNG")
    np.testing.assert_array_equal(np.asarray(codecs.decode(png, "image/png")), pixels)
    rgba = Image.new("RGBA", (4, 4), (1, 2, 3, 4))
    jpeg, content_type = codecs.encode(rgba, "image/jpeg")
    assert content_type == "image/jpeg" and jpeg.startswith(b"\xff\xd8")
    assert codecs.decode(jpeg, "image/jpeg").size == (4, 4)
    assert codecs.encode(np.zeros((3, 3), dtype=np.uint8), "image/png")[0].startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "value", [np.zeros((3, 3), dtype=np.float32), np.zeros((2, 2, 5), np.uint8)]
)
def test_image_encode_refuses_other_arrays(codecs: CodecRegistry, value: Any) -> None:
    with pytest.raises(NotAcceptableError) as info:
        codecs.encode(value, "image/png")
    assert_clean(info.value, 406)
    assert "uint8" in info.value.message


def test_x_image_is_decode_only(codecs: CodecRegistry) -> None:
    assert "application/x-image" in codecs.decodable_types
    assert "application/x-image" not in codecs.encodable_types
    with pytest.raises(NotAcceptableError):
        codecs.encode(np.zeros((2, 2), np.uint8), "application/x-image")


@pytest.mark.parametrize("body", [b"", b"not an image", image_bytes("PNG")[:40]])
def test_corrupt_image_is_400(codecs: CodecRegistry, body: bytes) -> None:
    with pytest.raises(BadRequestError) as info:
        codecs.decode(body, "image/png")
    assert_clean(info.value, 400)
    assert info.value.message == "malformed image payload"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (png_declaring(), "image/png"),
        (jpeg_declaring(), "image/jpeg"),
        (png_declaring(), "application/x-image"),
    ],
)
def test_image_declaring_too_many_pixels_is_413_before_decoding(
    codecs: CodecRegistry, body: bytes, content_type: str
) -> None:
    assert len(body) < 100_000
    with pytest.raises(PayloadTooLargeError) as info, allocates_at_most(16 * MIB):
        codecs.decode(body, content_type)
    assert_clean(info.value, 413)
    assert f"{BOMB_SIDE}x{BOMB_SIDE}" in info.value.message
    assert "BYOSERVE_MAX_IMAGE_PIXELS" in info.value.message


def test_image_pixel_budget_is_the_configured_one() -> None:
    body = image_bytes("PNG")  # 8 x 6 = 48 pixels
    assert default_codecs(max_image_pixels=48).decode(body, "image/png").size == (8, 6)
    with pytest.raises(PayloadTooLargeError, match="over the 47-pixel limit"):
        default_codecs(max_image_pixels=47).decode(body, "image/png")


def test_decompression_bomb_pillow_detects_is_413(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)  # Pillow refuses above twice this
    with pytest.raises(PayloadTooLargeError) as info:
        default_codecs(max_image_pixels=1000).decode(image_bytes("PNG"), "image/png")
    assert_clean(info.value, 413)
    assert "too large" in info.value.message


# Bodies marked PixelsOnly (as the built-ins send them): plain 8-bit PNGs are decoded by libspng,
# to Pillow's pixels, mode and errors; any other image by Pillow.

ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def interlaced_png(pixels: np.ndarray) -> bytes:
    """An Adam7-interlaced 8-bit RGB PNG (Pillow writes none), every row unfiltered."""
    height, width = pixels.shape[:2]
    rows = [
        b"\0" + pixels[y, x0::dx].tobytes()
        for x0, y0, dx, dy in ADAM7
        if x0 < width
        for y in range(y0, height, dy)
    ]
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + png_chunk(b"IEND", b"")
    )


def png_of(mode: str, **options: Any) -> bytes:
    gray = Image.fromarray(np.random.default_rng(0).integers(0, 256, (6, 8), dtype=np.uint8))
    rgb = Image.merge("RGB", [gray, gray.transpose(Image.Transpose.ROTATE_180), gray])
    out = io.BytesIO()
    (gray if mode == "L" else rgb.convert(mode)).save(out, format="PNG", **options)
    return out.getvalue()


def with_crcs_fixed(body: bytes) -> bytes:
    """The body with each whole chunk's CRC recomputed: a corruption that no CRC shows."""
    fixed, pos = bytearray(body), 8
    while pos + 12 <= len(fixed):
        (length,) = struct.unpack_from(">I", fixed, pos)
        end = pos + 8 + length
        if end + 4 <= len(fixed):
            struct.pack_into(">I", fixed, end, zlib.crc32(fixed[pos + 4 : end]))
        pos = end + 4
    return bytes(fixed)


def outcome(codec: Codec, body: bytes) -> tuple[str, str, tuple[int, int], bytes]:
    """What one decode gives: the mode, size and pixels, or the error answered."""
    try:
        image = codec.decode(body, {})
    except ServingError as exc:
        return ("error", f"{exc.status_code} {exc.message}", (0, 0), b"")
    return ("image", image.mode, image.size, image.tobytes())


_TEXT = PngImagePlugin.PngInfo()
_TEXT.add_text("Software", "a test")
FAST_PNGS = {
    "L": png_of("L"),
    "RGB": png_of("RGB"),
    "RGBA": png_of("RGBA"),
    "RGB, pHYs": png_of("RGB", dpi=(300, 300)),
    "RGB, interlaced": interlaced_png(np.asarray(Image.open(io.BytesIO(png_of("RGB"))))),
}
PILLOW_PNGS = {
    "LA": png_of("LA"),
    "palette": png_of("P"),
    "1-bit": png_of("1"),
    "16-bit": png_of("I;16"),
    "RGB, tRNS": png_of("RGB", transparency=(1, 2, 3)),
    "L, tEXt": png_of("L", pnginfo=_TEXT),
}


@pytest.mark.parametrize("name", [*FAST_PNGS, *PILLOW_PNGS])
def test_pixels_only_png_gives_pillows_pixels_and_mode(name: str) -> None:
    body = {**FAST_PNGS, **PILLOW_PNGS}[name]
    codec = ImageCodec()
    pillow, pixels_only = codec.decode(body, {}), codec.decode(PixelsOnly(body), {})
    assert (pixels_only.mode, pixels_only.size) == (pillow.mode, pillow.size)
    np.testing.assert_array_equal(np.asarray(pixels_only), np.asarray(pillow))
    # Pillow's images name their format; libspng's pixels come in an image that does not
    assert (pixels_only.format is None) == (name in FAST_PNGS)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("name", ["L", "RGB, pHYs"])
def test_pixels_only_png_refuses_what_pillow_refuses(name: str) -> None:
    """Every cut and every changed byte, with the CRCs left wrong and made right again:
    each body decodes to the same pixels, or is refused with the same answer, either way."""
    body, codec = FAST_PNGS[name], ImageCodec()
    variants = [body[:cut] for cut in range(len(body))] + [body + b"trailing"]
    for at, value in itertools.product(range(len(body)), (0, 255, 0x55)):
        changed = body[:at] + bytes([value ^ body[at] if value == 0x55 else value]) + body[at + 1 :]
        variants += [changed, with_crcs_fixed(changed)]
    refused = 0
    for variant in variants:
        expected = outcome(codec, variant)
        assert outcome(codec, PixelsOnly(variant)) == expected, variant
        refused += expected[0] == "error"
    assert refused > len(variants) // 2  # most of them are broken


def test_pixels_only_png_over_the_budget_is_413_before_decoding() -> None:
    """An 8-bit PNG libspng would take, declaring 9400 x 9400 pixels over 16 rows of data."""
    header = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 8, 0, 0, 0, 0)
    rows = zlib.compress(bytes(16 * (1 + BOMB_SIDE)))
    body = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", rows)
        + png_chunk(b"IEND", b"")
    )
    with pytest.raises(PayloadTooLargeError) as info, allocates_at_most(16 * MIB):
        ImageCodec().decode(PixelsOnly(body), {})
    assert_clean(info.value, 413)
    assert f"{BOMB_SIDE}x{BOMB_SIDE}" in info.value.message
    assert "BYOSERVE_MAX_IMAGE_PIXELS" in info.value.message


def test_pixels_only_png_budget_and_pillows_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    body = PixelsOnly(png_of("RGB"))  # 8 x 6 = 48 pixels
    assert ImageCodec(max_pixels=48).decode(body, {}).size == (8, 6)
    with pytest.raises(PayloadTooLargeError, match="over the 47-pixel limit"):
        ImageCodec(max_pixels=47).decode(body, {})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)  # Pillow refuses above twice this
    with pytest.raises(PayloadTooLargeError, match="too large"):
        ImageCodec(max_pixels=1000).decode(body, {})


@pytest.mark.parametrize("body", [b"", b"not an image", png_of("L")[:40], png_of("L")[:60]])
def test_pixels_only_corrupt_image_is_400(body: bytes) -> None:
    with pytest.raises(BadRequestError) as info:
        default_codecs().decode(PixelsOnly(body), "image/png")
    assert_clean(info.value, 400)
    assert info.value.message == "malformed image payload"


# torch tensors (duck-typed: serve.codecs never imports torch)


def test_to_numpy_converts_everything() -> None:
    assert to_numpy([[1, 2]]).shape == (1, 2)
    assert to_numpy(3.5).ndim == 0
    tensor = torch.arange(6.0, requires_grad=True).reshape(2, 3)
    np.testing.assert_array_equal(to_numpy(tensor), [[0, 1, 2], [3, 4, 5]])
    assert to_numpy(torch.ones(2, dtype=torch.bfloat16)).dtype == np.float32
    array = np.zeros(2)
    assert to_numpy(array) is array


def test_tensors_encode_to_json_and_npy(codecs: CodecRegistry) -> None:
    tensor = torch.tensor([[1.5, 2.0], [3.0, 4.0]], requires_grad=True) * 2
    body, _ = codecs.encode({"scores": tensor, "top": tensor[0, 0]}, "application/json")
    assert json.loads(body) == {"scores": [[3.0, 4.0], [6.0, 8.0]], "top": 3.0}
    npy, _ = codecs.encode(tensor, "application/x-npy")
    np.testing.assert_array_equal(codecs.decode(npy, "application/x-npy"), [[3, 4], [6, 8]])
    assert codecs.encode(torch.tensor([1, 2]), "text/csv")[0] == b"1\n2\n"


def test_npz_body_is_a_zip_of_npy_files(codecs: CodecRegistry) -> None:
    body, _ = codecs.encode({"a": np.arange(2)}, "application/x-npz")
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.namelist() == ["a.npy"]


def test_parsed_parameters_are_the_callers_own() -> None:
    """Parsing is cached per header value; a caller changing its result changes no later one."""
    _, params = parse_media_type("text/csv; charset=latin-1")
    params["charset"] = "changed"
    assert parse_media_type("text/csv; charset=latin-1")[1] == {"charset": "latin-1"}
    long_value = "text/csv; x=" + "y" * 1000  # not cached, parsed the same way
    assert parse_media_type(long_value) == ("text/csv", {"x": "y" * 1000})
