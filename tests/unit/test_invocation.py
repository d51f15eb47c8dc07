"""The invocation steps both /invocations paths share, with a stand-in runtime."""

from __future__ import annotations

from typing import Any

import pytest

from serve.config import ServingConfig
from serve.contract import CUSTOM_ATTRIBUTES, Headers, InferenceRequest, InferenceResponse
from serve.errors import BadRequestError, NotReadyError
from serve.http.invocation import admit, answer

SETTINGS = ServingConfig.from_env({"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv"})


class Runtime:
    """Records what it is asked; answers with ``headers``, or is not ready when ``loading``
    (typed as the ModelRuntime it stands in for, by ``runtime``)."""

    def __init__(self, loading: bool = False, headers: dict[str, str] | None = None) -> None:
        self.loading = loading
        self.headers = headers or {}
        self.requests: list[InferenceRequest] = []

    def ensure_ready(self) -> None:
        if self.loading:
            raise NotReadyError("loading")

    def submit(self, request: InferenceRequest) -> InferenceResponse:
        self.requests.append(request)
        return InferenceResponse("done", "text/plain", 201, self.headers)


def runtime(loading: bool = False, headers: dict[str, str] | None = None) -> Any:
    return Runtime(loading, headers)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [("", "text/csv"), (" */* ", "text/csv"), (" application/json ", "application/json")],
)
def test_admit_defaults_accept(accept: str, expected: str) -> None:
    assert admit(runtime(), SETTINGS, None, accept) == expected


def test_admit_checks_readiness_before_the_attributes() -> None:
    with pytest.raises(NotReadyError):
        admit(runtime(loading=True), SETTINGS, "x" * 1025, "")
    admit(runtime(), SETTINGS, "x" * 1024, "")
    with pytest.raises(BadRequestError, match=f"{CUSTOM_ATTRIBUTES} is longer than 1024 chars"):
        admit(runtime(), SETTINGS, "x" * 1025, "")


def test_answer_builds_the_request_and_drops_hop_by_hop_headers() -> None:
    model = runtime(headers={"Content-Length": "9", "Connection": "close", "X-A": "1"})
    headers = Headers([("Accept", "*/*")])
    status, body, content_type, kept = answer(
        model, b"in", " ", "text/csv", headers, "id-1", (("k", "v"),)
    )
    assert (status, body, content_type, kept) == (201, b"done", "text/plain", {"X-A": "1"})
    (request,) = model.requests
    assert request == InferenceRequest(
        b"in", "application/octet-stream", "text/csv", headers, "id-1", (("k", "v"),)
    )
