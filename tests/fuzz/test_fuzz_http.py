"""Generated bad requests against a real server holding the built-in examples (digit, text and
tensor handlers), on each HTTP engine: never a 5xx, always the JSON error body, no traceback in
the log, the workers alive and their memory bounded.

One difference is granian's own: a client that half-closes its side of the connection after its
request (``shutdown(SHUT_WR)``, here after a chunked body cut short) gets no answer at all, where
gunicorn answers it (granian's HTTP/1 server closes a connection at the client's end of input;
docs/engines.md). That framing is checked there for the rest: no 5xx on the requests around it,
no dead worker, nothing in the log.

Bounded for CI as every fuzz test is (tests/fuzz/harness.py).
"""

from __future__ import annotations

import encodings.aliases
import io
import json
import os
import shutil
import socket
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from serve.archive.archiver import create_archive
from serve.archive.layout import ArchiveSpec
from tests.fixtures.models import DigitsModel
from tests.fixtures.payloads import npy
from tests.fixtures.server import ServerProcess, start_server
from tests.fuzz.harness import EXAMPLES, check_server_intact, fuzz_settings
from tests.integration.test_metrics_http import wait_all_ready

pytestmark = pytest.mark.slow

MODELS = ("digits", "sentiment", "tensor")
CONTENT_TYPES = (
    "application/json",
    "application/jsonlines",
    "text/csv",
    "text/plain",
    "text/plain; charset=latin-1",
    "application/x-npy",
    "application/x-npz",
    "application/octet-stream",
    "image/png",
    "image/jpeg",
    "application/x-image",
    "application/json; charset=no-such-charset",
)
ACCEPTS = ("application/json", "*/*", "text/csv", "application/x-npy", "image/png", "")
FRAMINGS = ("length", "chunked", "bad-chunk-size", "cut-chunked")
MEDIA = r"[a-z]{1,8}/[a-z+.-]{1,12}"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` with almost no data after it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )


def _npy_header(text: str) -> bytes:
    header = text.encode("latin-1", "replace")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def _valid_bodies() -> list[tuple[str, bytes]]:
    """A request each built-in example answers 200, by content type."""
    image = io.BytesIO()
    Image.new("L", (8, 8), 128).save(image, format="PNG")
    pixels = np.zeros((1, 8, 8), dtype=np.float32)
    arrays = io.BytesIO()
    np.savez(arrays, x=pixels)
    return [
        ("image/png", image.getvalue()),
        ("application/x-npy", npy(pixels)),
        ("application/x-npz", arrays.getvalue()),
        ("application/json", json.dumps(pixels.tolist()).encode()),
        ("text/plain", b"a lovely film"),
        ("application/jsonlines", b'"a lovely film"\n"a dull one"\n'),
        ("text/csv", b",".join([b"0.5"] * 64) + b"\n"),
    ]


VALID = _valid_bodies()


@st.composite
def typed(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid request body with its type, with a few bytes changed and maybe cut short."""
    content_type, valid = draw(st.sampled_from(VALID))
    body = bytearray(valid)
    for _ in range(draw(st.integers(0, 8))):
        at = draw(st.integers(0, len(body) - 1))
        body[at] = draw(st.integers(0, 255))
    return content_type, bytes(
        body[: draw(st.integers(0, len(body)))] if draw(st.booleans()) else body
    )


# Every codec name Python knows (text encodings, and bytes-to-bytes or text-to-text codecs that
# cannot decode text: base64, zip, rot13, ...), "undefined", and generated names.
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
# Names Python cannot decode text with (bytes-to-bytes or text-to-text codecs, "undefined",
# codecs of another platform) or decodes oddly, often; then every codec name it knows, and junk.
AWKWARD_CHARSETS = (
    "undefined", "base64", "zip", "rot13", "hex", "uu", "bz2", "quopri", "idna", "punycode",
    "utf-7", "utf-16", "utf-32", "unicode_escape", "raw_unicode_escape", "mbcs", "oem",
)  # fmt: skip
CHARSETS = st.one_of(
    st.sampled_from(AWKWARD_CHARSETS),
    st.sampled_from(AWKWARD_CHARSETS),
    st.sampled_from(sorted(set(encodings.aliases.aliases.values()))),
    st.text(alphabet=PRINTABLE, max_size=24),
)
PARAMETER_VALUES = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=16
)


@st.composite
def parameterised(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid request body, its type given a generated charset and other parameters (quoted or
    not, repeated, empty)."""
    content_type, body = draw(st.sampled_from(VALID))
    parameters = [f"charset={draw(CHARSETS)}"]
    for name in draw(st.lists(st.sampled_from(["charset", "boundary", "q", "x", ""]), max_size=3)):
        value = draw(PARAMETER_VALUES)
        parameters.append(f'{name}="{value}"' if draw(st.booleans()) else f"{name}={value}")
    order = draw(st.permutations(parameters))
    return "; ".join([content_type, *order]), body


REQUESTS = st.one_of(
    typed(),
    parameterised(),
    st.tuples(st.sampled_from([t for t, _ in VALID]), st.binary(max_size=2048)),
    st.tuples(
        st.one_of(st.sampled_from(CONTENT_TYPES), st.from_regex(MEDIA, fullmatch=True)),
        st.text(max_size=512).map(lambda text: text.encode("utf-8", "surrogatepass")),
    ),
    st.tuples(
        st.sampled_from(("image/png", "application/x-image", "application/octet-stream")),
        st.builds(_png_header, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)),
    ),
    st.tuples(
        st.just("application/x-npy"),
        st.builds(
            _npy_header,
            st.one_of(
                st.text(max_size=120),
                st.builds(
                    lambda shape: f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}",
                    st.tuples(st.integers(0, 10**12), st.integers(0, 10**6)),
                ),
            ),
        ),
    ),
)


def send(
    port: int, target: str, content_type: str, accept: str, body: bytes, framing: str
) -> Answer | None:
    """One request over a socket of its own, framed as asked; the status and body answered, or
    None when the connection closed with no answer at all."""
    head = [
        "POST /invocations HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Content-Type: {content_type}",
        f"X-Amzn-SageMaker-Target-Model: {target}",
        "Connection: close",
    ]
    if accept:
        head.append(f"Accept: {accept}")
    if framing == "length":
        payload = body
        head.append(f"Content-Length: {len(body)}")
    else:
        head.append("Transfer-Encoding: chunked")
        size = b"zz" if framing == "bad-chunk-size" else b"%x" % len(body)
        payload = size + b"\r\n" + body + b"\r\n"
        if framing != "cut-chunked":
            payload += b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
        if framing == "cut-chunked":
            sock.shutdown(socket.SHUT_WR)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    if not raw:
        return None
    status_line, _, rest = raw.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 "), f"no HTTP answer: {raw[:200]!r}"
    return Answer(int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2])


@pytest.fixture(scope="module")
def fuzz_server(
    engine: str,
    digits: DigitsModel,
    digits_archive: Path,
    sentiment_archive: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    store = tmp_path_factory.mktemp("store")
    shutil.copy(digits_archive, store / "digits.tar.gz")
    shutil.copy(sentiment_archive, store / "sentiment.tar.gz")
    spec = ArchiveSpec(
        "tensor",
        serialized_file=digits.directory / "model.ts",
        handler="tensor",
        archive_format="tgz",
    )
    create_archive(spec, store)
    models = [f"{name}={name}.tar.gz" for name in MODELS]
    server = start_server(
        None,
        tmp_path_factory.mktemp("fuzz-logs"),
        workers=2,
        args=["--model-store", str(store), "--models", *models],
    )
    wait_all_ready(server.url, 2)  # granian's workers take requests while they load
    try:
        yield server
    finally:
        server.stop(10)


def rss(pids: list[int]) -> list[int]:
    return [int(Path(f"/proc/{pid}/statm").read_text().split()[1]) for pid in pids]


def test_generated_bad_requests_never_get_a_5xx(fuzz_server: ServerProcess, engine: str) -> None:
    pids = fuzz_server.worker_pids()
    before = rss(pids)
    seen: dict[int, int] = {}

    @fuzz_settings()
    @given(
        target=st.sampled_from(MODELS),
        request=REQUESTS,
        accept=st.sampled_from(ACCEPTS),
        framing=st.one_of(st.just("length"), st.sampled_from(FRAMINGS)),
    )
    def one(target: str, request: tuple[str, bytes], accept: str, framing: str) -> None:
        content_type, body = request
        answer = send(fuzz_server.port, target, content_type, accept, body, framing)
        if answer is None:  # granian's one difference (see the module's docstring)
            assert (engine, framing) == ("granian", "cut-chunked"), "no HTTP answer"
            seen[0] = seen.get(0, 0) + 1
            return
        seen[answer.status] = seen.get(answer.status, 0) + 1
        assert answer.status < 500 or answer.status == 501, (answer.status, answer.body[:300])
        if answer.status >= 400:
            error = json.loads(answer.body)["error"]
            assert error["code"] and error["request_id"], error
            assert "Traceback" not in error["message"]

    one()
    print(f"fuzz: {sum(seen.values())} requests, answered {dict(sorted(seen.items()))}")
    check_server_intact(fuzz_server, pids, ping=True)
    page = os.sysconf("SC_PAGE_SIZE")
    growth = [(now - start) * page for start, now in zip(before, rss(pids), strict=True)]
    assert all(grown < 256 * 2**20 for grown in growth), growth
    assert seen.get(200) and len(seen) >= 4, seen  # they reached the models, and their checks


TEXT_BODIES = [
    (t, body)
    for t, body in VALID
    if t in ("application/json", "application/jsonlines", "text/plain", "text/csv")
]


def test_every_charset_python_cannot_decode_text_with_is_a_client_error(
    fuzz_server: ServerProcess,
) -> None:
    """Each awkward charset on each text type to each model: a 4xx with the JSON error (or 200
    where the charset reads the body after all), never a 5xx; then generated parameters."""
    seen: dict[int, int] = {}

    def check(target: str, content_type: str, body: bytes) -> None:
        answer = send(fuzz_server.port, target, content_type, "application/json", body, "length")
        assert answer is not None, content_type
        seen[answer.status] = seen.get(answer.status, 0) + 1
        assert answer.status < 500, (target, content_type, answer.status, answer.body[:300])
        if answer.status >= 400:
            assert json.loads(answer.body)["error"]["code"], answer.body

    for target in MODELS:
        for media_type, body in TEXT_BODIES:
            for charset in AWKWARD_CHARSETS:
                check(target, f"{media_type}; charset={charset}", body)

    @fuzz_settings(EXAMPLES // 4)
    @given(target=st.sampled_from(MODELS), request=parameterised())
    def one(target: str, request: tuple[str, bytes]) -> None:
        check(target, *request)

    one()
    print(f"fuzz charsets: {dict(sorted(seen.items()))}")
    assert seen.get(400) and seen.get(200), seen
    check_server_intact(fuzz_server)
