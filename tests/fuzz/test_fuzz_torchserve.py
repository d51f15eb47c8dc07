"""Generated requests against TorchServe's routes on a real server (each HTTP engine): the
inference API (``/predictions/{model}[/{version}]`` with any method, query and body, and
multipart or URL-encoded forms, whole or mangled, each field one input) and the management API
(``/models`` in every form, with generated query parameters). Never a 5xx, every error a JSON
body with no traceback (TorchServe's shape, ``code``, ``type``, ``message``, for the routes it
has; a path no route matches, such as ``/predictions/`` with no model, gets the server's own 404
shape: matching TorchServe's there is the peer-fidelity issue's), no worker lost, nothing in the
log.

Management URLs are junk or absent, so nothing is loaded; a generated ``DELETE`` may unregister
a model, which later calls then find gone (a 404, as they should).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from tests.fixtures.server import ServerProcess, free_port, start_server
from tests.fuzz.harness import EXAMPLES, check_server_intact, fuzz_settings
from tests.fuzz.test_fuzz_http import ACCEPTS, REQUESTS, VALID
from tests.integration.test_metrics_http import wait_all_ready
from tests.integration.test_torchserve_api import echo_model_dir

pytestmark = pytest.mark.slow

NAMES = st.one_of(
    # not "..": the client would resolve it away before sending
    st.sampled_from(["digits", "sentiment", "nosuch", "digits.tar.gz", "%2e%2e", "."]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/?#"), max_size=20),
)
# mostly none, so that most requests reach a model
VERSIONS = st.one_of(st.none(), st.none(), st.none(), st.sampled_from(["1.0", "2.0", "x"]), NAMES)
VALUES = st.one_of(
    st.sampled_from(["", "0", "1", "-1", "nan", "true", "false", "99999999999999999999", "dd"]),
    st.integers(-(2**40), 2**40).map(str),
    st.text(max_size=30),
)
PARAMETERS = st.dictionaries(
    st.sampled_from(
        [
            "url", "model_name", "initial_workers", "batch_size", "max_batch_delay",
            "synchronous", "min_worker", "max_worker", "limit", "next_page_token", "timeout",
            "number_gpu", "handler", "runtime", "response_timeout", "startup_timeout",
            "customized", "explain",
        ]
    ),
    VALUES,
    max_size=5,
)  # fmt: skip
FIELD_NAMES = st.one_of(
    st.sampled_from(["data", "body", "file", "image", ""]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters='"\r\n'), max_size=12),
)
JUNK_URLS = st.sampled_from(["", "nosuch.mar", "/etc/passwd", "../x.mar", "http://x/y.mar", "a b"])


def _check(answer: requests.Response) -> int:
    assert answer.status_code < 500 or answer.status_code == 501, (
        answer.status_code,
        answer.text[:300],
    )
    if answer.status_code >= 400 and answer.request.method != "HEAD":
        body = json.loads(answer.content)
        if "error" in body:  # no route: the server's own shape
            assert answer.status_code in (404, 405), body
            body = {"code": answer.status_code, **body["error"], "type": body["error"]["code"]}
        assert body["code"] == answer.status_code and body["type"], body
        assert "Traceback" not in body["message"], body
    return answer.status_code


@pytest.fixture(scope="module")
def ts_server(
    engine: str,
    digits_archive: Path,
    sentiment_archive: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, str]]:
    store = tmp_path_factory.mktemp("store")
    shutil.copy(digits_archive, store / "digits.tar.gz")
    shutil.copy(sentiment_archive, store / "sentiment.tar.gz")
    echo_model_dir(store / "echo")  # a TorchServe handler: a form's fields reach it as inputs
    management = free_port()
    server = start_server(
        None,
        tmp_path_factory.mktemp("fuzz-ts-logs"),
        workers=2,
        args=[
            "--model-store", str(store),
            "--models", "digits=digits.tar.gz", "sentiment=sentiment.tar.gz", "echo=echo",
            "--management-address", f"127.0.0.1:{management}",
        ],
    )  # fmt: skip
    wait_all_ready(server.url, 2)  # granian's workers take requests while they load
    try:
        yield server, f"http://127.0.0.1:{management}"
    finally:
        server.stop(10)


def test_generated_predictions_never_get_a_5xx(ts_server: tuple[ServerProcess, str]) -> None:
    server, _ = ts_server
    pids = server.worker_pids()
    seen: dict[int, int] = {}

    @fuzz_settings(EXAMPLES // 4)
    @given(
        kind=st.sampled_from(["predictions", "explanations"]),
        model=st.one_of(*[st.sampled_from(["digits", "sentiment"])] * 3, NAMES),
        version=VERSIONS,
        method=st.sampled_from(["POST", "PUT", "GET", "DELETE", "PATCH", "HEAD"]),
        request=REQUESTS,
        accept=st.sampled_from(ACCEPTS),
        parameters=PARAMETERS,
    )
    def one(
        kind: str,
        model: str,
        version: str | None,
        method: str,
        request: tuple[str, bytes],
        accept: str,
        parameters: dict[str, str],
    ) -> None:
        content_type, body = request
        path = f"/{kind}/{requests.utils.quote(model, safe='')}"
        if version is not None:
            path += f"/{requests.utils.quote(version, safe='')}"
        headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
        answer = requests.request(
            method, server.url + path, params=parameters, data=body, headers=headers, timeout=30
        )
        status = _check(answer)
        seen[status] = seen.get(status, 0) + 1

    one()
    print(f"fuzz /predictions: {dict(sorted(seen.items()))}")
    check_server_intact(server, pids)
    assert seen.get(200) and len(seen) >= 3, seen


@st.composite
def forms(draw: st.DrawFn) -> tuple[str, bytes]:
    """A form body and its Content-Type: multipart parts each a valid or generated input (maybe
    a file with its own type), or URL-encoded fields; then maybe bytes changed, cut short, or a
    boundary that does not match."""
    if draw(st.integers(0, 4)) == 0:
        fields = draw(st.lists(st.tuples(FIELD_NAMES, st.text(max_size=40)), max_size=4))
        encoded = "&".join(
            f"{requests.utils.quote(k, safe='')}={requests.utils.quote(v, safe='')}"
            for k, v in fields
        )
        return "application/x-www-form-urlencoded", encoded.encode()
    boundary = draw(st.sampled_from(["b0undary", "x" * 70, "a'b(c)d+e_f,g-h.i/j:k=l?m"]))
    body = bytearray()
    for _ in range(draw(st.integers(0, 4))):
        content_type, data = draw(st.one_of(st.sampled_from(VALID), REQUESTS))
        name = draw(FIELD_NAMES)
        disposition = f'form-data; name="{name}"'
        if draw(st.booleans()):
            disposition += f'; filename="{draw(FIELD_NAMES)}"'
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if draw(st.booleans()):
            body += f"Content-Type: {content_type}\r\n".encode("utf-8", "replace")
        body += b"\r\n" + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(body) - 1))
        body[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        body = body[: draw(st.integers(0, len(body)))]
    declared = draw(st.sampled_from([boundary, boundary, "other", ""]))
    content_type = "multipart/form-data" + (f"; boundary={declared}" if declared else "")
    return content_type, bytes(body)


def test_generated_forms_never_get_a_5xx(ts_server: tuple[ServerProcess, str]) -> None:
    server, _ = ts_server
    pids = server.worker_pids()
    seen: dict[int, int] = {}

    @fuzz_settings(EXAMPLES // 4)
    @given(
        model=st.sampled_from(["echo", "echo", "digits", "sentiment"]),
        form=forms(),
        accept=st.sampled_from(ACCEPTS),
    )
    def one(model: str, form: tuple[str, bytes], accept: str) -> None:
        content_type, body = form
        headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
        answer = requests.post(
            f"{server.url}/predictions/{model}", data=body, headers=headers, timeout=30
        )
        status = _check(answer)
        seen[status] = seen.get(status, 0) + 1

    one()
    print(f"fuzz forms: {dict(sorted(seen.items()))}")
    check_server_intact(server, pids)
    assert seen.get(200) and seen.get(400), seen


def test_generated_management_calls_never_get_a_5xx(ts_server: tuple[ServerProcess, str]) -> None:
    server, management = ts_server
    pids = server.worker_pids()
    seen: dict[int, int] = {}

    @fuzz_settings(EXAMPLES // 4)
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
        shape=st.sampled_from(["list", "model", "version", "default"]),
        model=NAMES,
        version=NAMES,
        parameters=PARAMETERS,
        url=st.one_of(st.none(), JUNK_URLS),
    )
    def one(
        method: str,
        shape: str,
        model: str,
        version: str,
        parameters: dict[str, str],
        url: str | None,
    ) -> None:
        quoted, quoted_version = (requests.utils.quote(x, safe="") for x in (model, version))
        path = {
            "list": "/models",
            "model": f"/models/{quoted}",
            "version": f"/models/{quoted}/{quoted_version}",
            "default": f"/models/{quoted}/{quoted_version}/set-default",
        }[shape]
        if "url" in parameters or url is not None:
            parameters["url"] = url or ""  # never a real archive: nothing is loaded
        answer = requests.request(method, management + path, params=parameters, timeout=60)
        status = _check(answer)
        seen[status] = seen.get(status, 0) + 1

    one()
    print(f"fuzz management: {dict(sorted(seen.items()))}")
    check_server_intact(server, pids)
    assert len(seen) >= 3, seen
