"""An invocation's steps that both ``/invocations`` paths take (the Flask routes in
serve/http/sagemaker.py, with TorchServe's and the multi-model API's, and the plain-WSGI fast path
in serve/http/fastpath.py), written once so the two cannot drift apart: the checks before the body
is read, the request the handler gets, and the headers of its answer that go back to the client.

Two functions, not one, so the body is read between them without a callback built per request:
``admit`` before the read, ``answer`` after it. Both take plain values, never a Flask request, so
the fast path stays free of werkzeug.
"""

from __future__ import annotations

from serve.config import ServingConfig
from serve.contract import CUSTOM_ATTRIBUTES, Headers, InferenceRequest
from serve.errors import BadRequestError
from serve.runtime.inference import ModelRuntime

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_CUSTOM_ATTRIBUTES = 1024
HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "content-type"})

Answer = tuple[int, bytes, str, dict[str, str]]
"""The status, body, Content-Type and the other headers (hop-by-hop ones left out) to send."""


def admit(
    runtime: ModelRuntime, settings: ServingConfig, attributes: str | None, accept: str
) -> str:
    """The checks before the body is read: the model is ready (else its error, before anything
    else), the Custom-Attributes header (``attributes``, None if absent) within its bound; returns
    the Accept to give the handler, ``settings.default_accept`` for a missing or ``*/*`` one."""
    runtime.ensure_ready()
    if attributes is not None and len(attributes) > MAX_CUSTOM_ATTRIBUTES:
        raise BadRequestError(f"{CUSTOM_ATTRIBUTES} is longer than {MAX_CUSTOM_ATTRIBUTES} chars")
    accept = accept.strip()
    return settings.default_accept if accept in ("", "*/*") else accept


def answer(
    runtime: ModelRuntime,
    body: bytes,
    content_type: str,
    accept: str,
    headers: Headers,
    request_id: str,
    parameters: tuple[tuple[str, str], ...] = (),
) -> Answer:
    """Hand the request to ``runtime`` (``accept``: admit's; ``content_type``: the header as sent,
    "" when absent, for DEFAULT_CONTENT_TYPE) and return its answer as the client gets it."""
    request = InferenceRequest(
        body=body,
        content_type=content_type.strip() or DEFAULT_CONTENT_TYPE,
        accept=accept,
        headers=headers,
        request_id=request_id,
        parameters=parameters,
    )
    result = runtime.submit(request)
    kept = {name: value for name, value in result.headers.items() if name.lower() not in HOP_BY_HOP}
    return result.status, result.body_bytes(), result.content_type, kept
