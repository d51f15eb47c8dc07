"""The request pipeline's steps, on a WSGI environ, with a stand-in runtime."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from serve.config import ServingConfig
from serve.contract import CUSTOM_ATTRIBUTES, InferenceRequest, InferenceResponse
from serve.errors import ModelError, NotReadyError
from serve.http.invocation import BodyRules, Invocations, read_body
from serve.observe.observer import Observer

SETTINGS = ServingConfig.from_env(
    {"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv", "SAGEMAKER_MAX_REQUEST_SIZE": "100"}
)


class Runtime:
    """Records what it is asked; answers with ``headers``, or is not ready when ``loading``,
    or fails with ``error`` (typed as the ModelRuntime it stands in for, by ``pick``)."""

    name = "m"

    def __init__(
        self,
        loading: bool = False,
        headers: dict[str, str] | None = None,
        error: Exception | None = None,
    ) -> None:
        self.loading = loading
        self.headers = headers or {}
        self.error = error
        self.requests: list[InferenceRequest] = []

    def ensure_ready(self) -> None:
        if self.loading:
            raise NotReadyError("loading")

    def submit(self, request: InferenceRequest) -> InferenceResponse:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return InferenceResponse("done", "text/plain", 201, self.headers)


class Recorder(Observer):
    def __init__(self) -> None:
        self.done: list[tuple[str, int, str | None, str]] = []

    def request_done(
        self, route: str, status: int, seconds: float, error: str | None, model: str
    ) -> None:
        self.done.append((route, status, error, model))


def environ(body: bytes = b"in", **extra: Any) -> dict[str, Any]:
    base = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/invocations",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    return {**base, **extra}


def run(
    model: Runtime, env: dict[str, Any], config: ServingConfig = SETTINGS, **kwargs: Any
) -> tuple[tuple[int, bytes, str, list[tuple[str, str]]], Recorder]:
    recorder = Recorder()
    pipeline = Invocations(Any, config, recorder, BodyRules())  # type: ignore[arg-type]
    return pipeline(env, "invocations", lambda _: model, **kwargs), recorder  # type: ignore


@pytest.mark.parametrize(
    ("accept", "expected"),
    [("", "text/csv"), (" */* ", "text/csv"), (" application/json ", "application/json")],
)
def test_accept_defaults(accept: str, expected: str) -> None:
    model = Runtime()
    run(model, environ(HTTP_ACCEPT=accept))
    assert model.requests[0].accept == expected


def test_readiness_is_checked_before_the_attributes_and_the_body() -> None:
    body = io.BytesIO(b"in")
    loading = {"wsgi.input": body, f"HTTP_{CUSTOM_ATTRIBUTES.upper().replace('-', '_')}": "x" * 9}
    (status, answer, _, _), _ = run(Runtime(loading=True), environ(**loading))
    assert status == 503 and json.loads(answer)["error"]["code"] == "not_ready"
    assert body.tell() == 0  # not a byte read
    attributes = f"HTTP_{CUSTOM_ATTRIBUTES.upper().replace('-', '_')}"
    (status, answer, _, _), _ = run(Runtime(), environ(**{attributes: "x" * 1025}))
    assert status == 400
    assert (
        json.loads(answer)["error"]["message"] == f"{CUSTOM_ATTRIBUTES} is longer than 1024 chars"
    )
    (status, _, _, _), _ = run(Runtime(), environ(**{attributes: "x" * 1024}))
    assert status == 201


def test_the_request_is_built_and_hop_by_hop_headers_are_dropped() -> None:
    model = Runtime(headers={"Content-Length": "9", "Connection": "close", "X-A": "1"})
    given = {"HTTP_X_AMZN_SAGEMAKER_INFERENCE_ID": "id-1", "CONTENT_TYPE": " "}
    (status, body, content_type, kept), recorder = run(
        model, environ(**given), parameters=(("k", "v"),), extra_headers=(("explain", "True"),)
    )
    assert (status, body, content_type) == (201, b"done", "text/plain")
    assert kept == [("X-A", "1"), ("X-Request-Id", "id-1")]
    (request,) = model.requests
    assert (request.body, request.content_type, request.accept) == (
        b"in",
        "application/octet-stream",
        "text/csv",
    )
    assert (request.request_id, request.parameters) == ("id-1", (("k", "v"),))
    assert request.headers["explain"] == "True" and request.headers["content-length"] == "2"
    assert recorder.done == [("invocations", 201, None, "m")]


def test_over_the_limit_is_413_before_the_model_is_picked() -> None:
    picked: list[str] = []
    recorder = Recorder()
    pipeline = Invocations(Any, SETTINGS, recorder, BodyRules())  # type: ignore[arg-type]
    status, _, _, _ = pipeline(environ(b"x" * 101), "invocations", picked.append)  # type: ignore
    assert status == 413 and picked == []
    assert recorder.done == [("invocations", 413, "payload_too_large", "")]


@pytest.mark.parametrize("details", [True, False])
def test_a_model_error_is_masked_only_when_asked(details: bool) -> None:
    config = ServingConfig.from_env({"BYOSERVE_ERROR_DETAILS": str(details).lower()})
    (status, body, _, _), recorder = run(Runtime(error=ModelError("secret")), environ(), config)
    message = json.loads(body)["error"]["message"]
    assert status == 500 and (message == "secret") is details
    assert recorder.done == [("invocations", 500, "model_error", "m")]


def test_an_unexpected_error_is_a_generic_500_in_the_routes_shape() -> None:
    (status, body, _, _), recorder = run(Runtime(error=KeyError("x")), environ(), torchserve=True)
    assert status == 500
    assert json.loads(body) == {
        "code": 500,
        "type": "InternalServerException",
        "message": "internal server error",
    }
    assert recorder.done == [("invocations", 500, "internal_error", "m")]


class MalformedError(Exception):
    pass


class Broken(io.BytesIO):
    def read(self, size: int | None = -1) -> bytes:
        raise MalformedError("bad chunk size")


def test_a_body_is_read_by_the_engines_rules() -> None:
    chunked = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(b"abc")}
    assert read_body(chunked, None, 100, BodyRules(), "r") == b"abc"
    assert read_body({}, None, 100, BodyRules(), "r") == b""  # neither length nor chunks
    refusing = BodyRules(reads_chunked=False, chunked_refusal="no chunks here")
    with pytest.raises(Exception, match="no chunks here") as refused:
        read_body(chunked, None, 100, refusing, "r")
    assert getattr(refused.value, "status_code", None) == 411
    over = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(b"x" * 101)}
    with pytest.raises(Exception, match="limit") as too_large:
        read_body(over, None, 100, BodyRules(), "r")
    assert getattr(too_large.value, "status_code", None) == 413
    broken = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": Broken()}
    with pytest.raises(Exception, match="malformed request body: bad chunk size") as bad:
        read_body(broken, None, 100, BodyRules(malformed=(MalformedError,)), "r")
    assert getattr(bad.value, "status_code", None) == 400
    with pytest.raises(Exception, match="cut short"):
        read_body({"wsgi.input": io.BytesIO(b"ab")}, 5, 100, BodyRules(), "r")
