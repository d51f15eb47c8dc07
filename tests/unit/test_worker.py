"""ConnectionShares: how workers tell each other how many connections they hold; and how the
worker answers what gunicorn refuses before the app runs."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
from gunicorn.http import errors as parse_errors

from serve.errors import ServingError, UnsupportedTransferCodingError
from serve.process import worker
from serve.process.worker import (
    ConnectionShares,
    closing,
    error_response,
    refusal,
    request_id,
)


def test_slots_are_claimed_once_each() -> None:
    shares = ConnectionShares(3)
    assert shares.claim([]) == 0
    assert shares.claim([0]) == 1
    assert shares.claim([0, 2]) == 1  # the replacement of a worker takes over its slot
    assert shares.claim([0, 1, 2]) is None


def test_excess_is_counted_against_the_least_loaded_ready_sibling() -> None:
    shares = ConnectionShares(3)
    shares.publish(0, 5)
    shares.publish(1, 3)
    shares.publish(2, None)  # still loading: takes no share
    assert shares.excess(0) == 2
    assert shares.excess(1) == -2
    shares.publish(2, 1)
    assert shares.excess(0) == 4


def test_a_worker_alone_or_among_loading_ones_has_no_excess() -> None:
    shares = ConnectionShares(2)
    shares.publish(0, 9)
    shares.publish(1, None)
    assert shares.excess(0) == 0
    assert ConnectionShares(1).excess(0) == 0


def test_a_silent_sibling_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "STALE_S", 0.05)
    shares = ConnectionShares(2)
    shares.publish(0, 4)
    shares.publish(1, 0)
    assert shares.excess(0) == 4
    time.sleep(0.1)
    shares.publish(0, 4)  # worker 0 is alive; worker 1 has not been heard from since
    assert shares.excess(0) == 0


def test_counts_are_shared_with_forked_children() -> None:
    shares = ConnectionShares(2)
    shares.publish(0, 0)
    pid = os.fork()
    if pid == 0:  # the child publishes; the parent must see it
        shares.publish(1, 7)
        os._exit(0)
    os.waitpid(pid, 0)
    assert shares.excess(1) == 7


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (parse_errors.UnsupportedTransferCoding("xchunked"), 501, "not_implemented"),
        (parse_errors.InvalidChunkSize(b"zz"), 400, "bad_request"),
        (parse_errors.InvalidRequestLine("BLAH"), 400, "bad_request"),
        (parse_errors.InvalidHeader("CONTENT-LENGTH"), 400, "bad_request"),
        (parse_errors.LimitRequestLine(5000, 4094), 414, "uri_too_long"),
        (parse_errors.LimitRequestHeaders("too many"), 431, "header_fields_too_large"),
        (parse_errors.ExpectationFailed("magic"), 417, "expectation_failed"),
        (parse_errors.ForbiddenProxyRequest("10.0.0.1"), 403, "forbidden"),
    ],
)
def test_what_gunicorn_refuses_keeps_its_status(exc: Exception, status: int, code: str) -> None:
    error = refusal(exc)
    assert error is not None
    assert (error.status_code, error.code) == (status, code)
    assert error.message == str(exc)


@pytest.mark.parametrize(
    "exc",
    [
        parse_errors.InvalidResponseHeader("X-Bad"),  # the app sent it: the server's fault
        parse_errors.ConfigurationProblem("bad setting"),
        RuntimeError("boom"),
    ],
)
def test_the_servers_own_errors_are_not_the_clients(exc: Exception) -> None:
    assert refusal(exc) is None


def test_the_error_response_is_the_apps_json_body_closing_the_connection() -> None:
    error = UnsupportedTransferCodingError("Unsupported transfer coding: 'xchunked'")
    head, _, body = error_response(error, "id-1").partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert status_line == "HTTP/1.1 501 Not Implemented"
    assert headers["Connection"] == "close"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Request-Id"] == "id-1"
    assert int(headers["Content-Length"]) == len(body)
    assert json.loads(body) == {
        "error": {"code": "not_implemented", "message": error.message, "request_id": "id-1"}
    }
    internal = error_response(ServingError("internal server error"), "id-2")
    assert internal.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")


class _Parsed:
    def __init__(self, *headers: tuple[str, str]) -> None:
        self.headers = list(headers)


def test_the_request_id_is_the_clients_inference_id_when_usable() -> None:
    assert request_id(_Parsed(("X-AMZN-SAGEMAKER-INFERENCE-ID", " my-id "))) == "my-id"
    for unusable in ("x" * 65, "new\x07line", "caf\u00e9", ""):
        fresh = request_id(_Parsed(("X-AMZN-SAGEMAKER-INFERENCE-ID", unusable)))
        assert len(fresh) == 32 and int(fresh, 16) >= 0
    assert request_id(None) != request_id(None)  # not parsed that far: a new one each time


class _Response:
    """Stands for gunicorn's Response, whose start_response the app is given."""

    def __init__(self) -> None:
        self.closes = False
        self.status = ""

    def force_close(self) -> None:
        self.closes = True

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> None:
        self.status = status


class _Body:
    def __init__(self, failed: bool) -> None:
        self.failed = failed


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("400 BAD REQUEST", [("Content-Type", "application/json")])
    return [b"{}"]


@pytest.mark.parametrize(
    ("stopping", "failed", "closes"),
    [(False, False, False), (True, False, True), (False, True, True)],
)
def test_a_response_closes_when_stopping_or_when_the_body_could_not_be_read(
    stopping: bool, failed: bool, closes: bool
) -> None:
    response = _Response()
    served = closing(_app, lambda: stopping)
    assert served({"wsgi.input": _Body(failed)}, response.start_response) == [b"{}"]
    assert (response.status, response.closes) == ("400 BAD REQUEST", closes)


def test_heard_since_waits_for_every_ready_sibling() -> None:
    shares = ConnectionShares(3)
    shares.publish(0, 4)
    shares.publish(1, 2)
    shares.publish(2, None)  # loading: not waited for
    since = time.monotonic()
    assert shares.heard_since(1, since - 1)
    assert not shares.heard_since(1, since)
    shares.publish(0, 4)
    assert shares.heard_since(1, since)
    assert shares.held() == [(0, 4), (1, 2)]
