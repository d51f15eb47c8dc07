"""Every invocation route through the WSGI application the engines serve: the router, the one
request pipeline behind it, and what falls through to the Flask app."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from serve.contract import INFERENCE_ID, InferenceRequest, InferenceResponse, Result
from serve.http.router import torchserve_path
from tests.fixtures.apps import AppModel, make_app
from tests.unit.test_app import EchoHandler, error_of


class ParametersHandler(EchoHandler):
    """Answers what the pipeline handed it: query parameters, the explain and url_path headers,
    the body."""

    def handle(self, requests: Sequence[InferenceRequest]) -> Sequence[Result]:
        return [
            InferenceResponse(
                json.dumps(
                    {
                        "parameters": [list(pair) for pair in request.parameters],
                        "explain": request.headers.get("explain"),
                        "url_path": request.headers.get("url_path"),
                        "body": request.body.decode(),
                    }
                ),
                "application/json",
            )
            for request in requests
        ]

    def load(self, context: Any) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Client, AppModel]]:
    test_client, model = make_app(ParametersHandler(), tmp_path, observer=None)
    yield test_client, model
    model.stop()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/invocations"),
        ("PUT", "/invocations"),
        ("POST", "/invocations?model_name=model"),
        ("POST", "/endpoints/any-endpoint/invocations"),
        ("POST", "/models/model/invoke"),
        ("POST", "/predictions/model"),
        ("PUT", "/predictions/model"),
        ("GET", "/predictions/model"),
        ("DELETE", "/predictions/model"),
        ("PATCH", "/predictions/model"),
    ],
)
def test_every_invocation_route_reaches_the_model(
    served: tuple[Client, AppModel], method: str, path: str
) -> None:
    test_client, _ = served
    response = test_client.open(path, method=method, data=b"hi", headers={INFERENCE_ID: "r-1"})
    assert response.status_code == 200, response.data
    assert response.get_json()["body"] == "hi"
    assert response.headers["X-Request-Id"] == "r-1"


def test_predictions_get_the_query_and_explanations_the_explain_header(
    served: tuple[Client, AppModel],
) -> None:
    test_client, _ = served
    predicted = test_client.post("/predictions/model?a=1&a=2&b=", data=b"x").get_json()
    assert predicted == {"parameters": [["a", "1"], ["a", "2"], ["b", ""]], "explain": "False",
                         "url_path": "", "body": "x"}  # fmt: skip
    explained = test_client.post("/explanations/model", data=b"x").get_json()
    assert explained["explain"] == "True" and explained["parameters"] == []


@pytest.mark.parametrize(
    ("rest", "expected"),
    [
        ("m", ("m", None, "")),
        ("m/", ("m", None, "")),
        ("m/1.0", ("m", "1.0", "")),
        ("m/1.0/v1/chat/completions", ("m", "1.0", "v1/chat/completions")),
        ("m/1.0/v1/models/", ("m", "1.0", "v1/models")),
        ("m/1.0/a//b", ("m", "1.0", "a//b")),
        ("m/v1/chat", ("m", "v1", "chat")),  # the segment after the model is the version
        ("m//x", ("m", "", "x")),
    ],
)
def test_the_path_after_the_model_is_read_as_torchserve_reads_it(
    rest: str, expected: tuple[str, str | None, str]
) -> None:
    assert torchserve_path(rest) == expected


def test_a_path_after_the_model_is_a_version_and_more(served: tuple[Client, AppModel]) -> None:
    """The route takes it (the url_path it carries is checked end to end, with a model that has
    versions: tests/integration/test_torchserve_api.py)."""
    test_client, _ = served
    for kind in ("predictions", "explanations"):
        answer = test_client.post(f"/{kind}/model/9.9/v1/chat/completions", data=b"x")
        assert answer.status_code == 404
        assert answer.get_json()["message"] == "Model version: 9.9 does not exist for model: model"
    unknown = test_client.post("/predictions/nothing/1.0/v1/models", data=b"x")
    assert unknown.status_code == 404
    assert unknown.get_json()["type"] == "ModelNotFoundException"
    assert test_client.post("/predictions/model/", data=b"x").status_code == 200
    assert test_client.post("/predictions/model//x", data=b"x").status_code == 404


def test_a_missing_model_is_404_in_each_routes_shape(served: tuple[Client, AppModel]) -> None:
    test_client, _ = served
    sagemaker = test_client.post("/models/nothing/invoke", data=b"x")
    assert sagemaker.status_code == 404 and error_of(sagemaker)["code"] == "model_not_found"
    torchserve = test_client.post("/predictions/nothing", data=b"x")
    assert torchserve.status_code == 404
    assert torchserve.get_json()["type"] == "ModelNotFoundException"
    version = test_client.post("/predictions/model/9.9", data=b"x")
    assert version.status_code == 404
    named = test_client.post("/invocations?model_name=nothing", data=b"x")
    assert named.status_code == 404 and error_of(named)["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("method", "path", "allowed", "torchserve"),
    [
        ("GET", "/invocations", "OPTIONS, POST, PUT", False),
        ("DELETE", "/endpoints/e/invocations", "OPTIONS, POST, PUT", False),
        ("POST", "/ping", "GET, HEAD, OPTIONS", False),
        ("OPTIONS", "/predictions/model", "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT", True),
        ("TRACE", "/predictions/model", "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT", True),
    ],
)
def test_other_methods_are_405_naming_the_allowed_ones(
    served: tuple[Client, AppModel], method: str, path: str, allowed: str, torchserve: bool
) -> None:
    test_client, _ = served
    response = test_client.open(path, method=method)
    assert response.headers["Allow"] == allowed
    if method == "OPTIONS":
        assert response.status_code == 200
        return
    assert response.status_code == 405
    body = response.get_json()
    if torchserve:
        assert body["type"] == "MethodNotAllowedException"
    else:
        assert error_of(response)["code"] == "method_not_allowed"


def test_ping_honours_a_given_request_id_and_head(served: tuple[Client, AppModel]) -> None:
    test_client, _ = served
    pinged = test_client.get("/ping", headers={INFERENCE_ID: "p-1"})
    assert pinged.status_code == 200 and pinged.headers["X-Request-Id"] == "p-1"
    assert pinged.get_json() == {"status": "Healthy"}
    unusable = test_client.get("/ping", headers={INFERENCE_ID: "\x7fbad"})
    assert len(unusable.headers["X-Request-Id"]) == 32
    assert test_client.head("/ping").status_code == 200


def test_what_is_not_an_invocation_goes_to_the_flask_app(served: tuple[Client, AppModel]) -> None:
    test_client, _ = served
    assert test_client.get("/models").status_code == 200
    described = test_client.get("/models/model/invoke")  # GET: a model called "model/invoke"
    assert described.status_code == 404
    bare = test_client.post("/predictions/", data=b"x")
    assert bare.status_code == 404
    assert bare.get_json()["type"] == "ResourceNotFoundException"
    assert test_client.get("/execution-parameters").status_code == 200
