"""TorchServe's streaming call, ``send_intermediate_predict_response``, in a handler class served
by the real app and runtime in this process: imported from either of TorchServe's modules, from
the real ``ts`` package and from byoserve's stand-in (handlers/tsfallback) with the real one
hidden; and :class:`~handlers.intermediate.PieceSocket` reading TorchServe's own wire format."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import handlers.tsfallback
from handlers.context import Context
from handlers.intermediate import PieceSocket
from handlers.torchserve import TorchServeHandler
from serve.codecs import default_codecs
from serve.contract import InferenceRequest, LoadContext
from serve.http.streaming import StreamAbortedError
from serve.runtime.batching import BatchQueue, Pending
from serve.runtime.streams import Channel
from tests.fixtures.apps import make_app
from tests.fixtures.streams import WAIT, Steps, pieces

MODULES = ("ts.handler_utils.utils", "ts.protocol.otf_message_handler")
FALLBACK = Path(handlers.tsfallback.__file__).parent
PIECES = 3
# TorchServe's own warning for its older module, which handlers still import
pytestmark = pytest.mark.filterwarnings(
    "ignore:send_intermediate_predict_response is deprecated:PendingDeprecationWarning"
)


def is_ts(name: str) -> bool:
    return name == "ts" or name.startswith("ts.")


class HideInstalledTs(importlib.abc.MetaPathFinder):
    """Answers ``import ts`` as if the installed package were not there: as the finders after
    the path finder would (byoserve's fallback among them), else not found."""

    def __init__(self, installed: Path) -> None:
        self.installed = installed

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "ts":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or Path(spec.origin).parent != self.installed:
            return None
        after = sys.meta_path[sys.meta_path.index(importlib.machinery.PathFinder) + 1 :]
        for finder in after:
            found = finder.find_spec(fullname, path, target)
            if found is not None:
                return found
        raise ModuleNotFoundError("No module named 'ts'", name="ts")


@pytest.fixture(params=["installed", "fallback"])
def ts_package(request: pytest.FixtureRequest) -> Iterator[str]:
    """The real ``ts`` package, or byoserve's stand-in with the real one hidden (sys.modules
    and sys.meta_path are put back afterwards)."""
    spec = importlib.util.find_spec("ts")
    assert spec is not None and spec.origin is not None, "TorchServe's ts package is installed"
    installed = Path(spec.origin).parent
    if request.param == "installed":
        yield request.param
        return
    saved_modules = {name: module for name, module in sys.modules.items() if is_ts(name)}
    saved_finders = list(sys.meta_path)
    for name in saved_modules:
        del sys.modules[name]
    sys.meta_path.insert(0, HideInstalledTs(installed))
    handlers.tsfallback.install()
    try:
        for name in MODULES:
            module = importlib.import_module(name)
            assert Path(module.__file__ or "").is_relative_to(FALLBACK), module.__file__
        yield request.param
    finally:
        for name in [name for name in sys.modules if is_ts(name)]:
            del sys.modules[name]
        sys.modules.update(saved_modules)
        sys.meta_path[:] = saved_finders


def push_class(module: str, steps: Steps | None = None, fail_after: int | None = None) -> type:
    """A TorchServe handler class that sends ``PIECES`` pieces per request (``<name>-<step>|``,
    the name from the request's JSON), each after gate ``step`` of ``steps``, then returns
    ``<name>-end``; it fixes status 201 and ``X-First: <name>`` before the first piece and
    changes both after it. ``calls`` records each batch's size, ``where`` the file of the
    module the function came from."""
    calls: list[int] = []
    where: list[Path] = []

    class Streaming:
        def handle(self, data: list[dict[str, Any]], context: Any) -> list[str]:
            calls.append(len(data))
            imported = importlib.import_module(module)
            where.append(Path(imported.__file__ or ""))
            send = imported.send_intermediate_predict_response
            names = [row["body"]["name"] for row in data]
            for idx, name in enumerate(names):
                context.set_response_status(201, "Created", idx)
                context.set_response_header(idx, "X-First", name)
            for step in range(PIECES):
                if step and steps is not None:
                    steps.wait(step)
                ret = [f"{name}-{step}|" for name in names]
                send(ret, context.request_ids, "Intermediate Prediction success", 200, context)
                for idx in range(len(names)):  # too late: the first piece fixed them
                    context.set_response_status(500, "Changed", idx)
                    context.set_response_header(idx, "X-First", "changed")
                if fail_after == step:
                    raise RuntimeError("the handler broke off")
            return [f"{name}-end" for name in names]

    Streaming.calls = calls  # type: ignore[attr-defined]
    Streaming.where = where  # type: ignore[attr-defined]
    return Streaming


@pytest.mark.parametrize("module", MODULES)
def test_pushed_pieces_leave_one_at_a_time(ts_package: str, module: str, tmp_path: Path) -> None:
    steps = Steps(PIECES)
    cls = push_class(module, steps)
    handler = TorchServeHandler(cls, "h.py")
    client, model = make_app(handler, tmp_path)
    try:
        response = client.post("/invocations", json={"name": "a"}, buffered=False)
        assert response.status_code == 201
        assert response.headers["X-First"] == "a"
        assert response.headers.get("ts_stream_next") is None
        assert response.mimetype == "text/plain"
        stream = pieces(response)
        for step in range(PIECES):
            assert next(stream) == f"a-{step}|".encode()
            if step + 1 < PIECES:
                steps.open(step + 1)
        assert list(stream) == [b"a-end"]
        response.close()
        (where,) = cls.where  # type: ignore[attr-defined]
        assert where.is_relative_to(FALLBACK) == (ts_package == "fallback"), where
    finally:
        steps.open_all()
        model.stop()


def concurrently(client: Any, names: str) -> dict[str, tuple[int, dict[str, str], list[Any]]]:
    """Post ``{"name": n}`` for each name from its own thread; each answer's status, headers and
    pieces (an exception where the stream broke off)."""
    answers: dict[str, tuple[int, dict[str, str], list[Any]]] = {}

    def call(name: str) -> None:
        response = client.post("/invocations", json={"name": name}, buffered=False)
        got: list[Any] = []
        try:
            got.extend(response.response)
        except StreamAbortedError as exc:
            got.append(exc)
        finally:
            response.close()
        answers[name] = (response.status_code, dict(response.headers), got)

    threads = [threading.Thread(target=call, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 3)
    return answers


BATCH = {"batch_size": 4, "max_batch_delay": 10_000}  # the batch closes as soon as it is full


@pytest.mark.parametrize("module", MODULES)
def test_a_batch_of_four_streams_gives_each_request_its_own_pieces(
    ts_package: str, module: str, tmp_path: Path
) -> None:
    cls = push_class(module)
    client, model = make_app(TorchServeHandler(cls, "h.py", BATCH), tmp_path)
    try:
        answers = concurrently(client, "abcd")
        assert cls.calls == [4]  # type: ignore[attr-defined]
        for name in "abcd":
            status, headers, got = answers[name]
            assert status == 201 and headers["X-First"] == name
            assert got == [f"{name}-{step}|".encode() for step in range(PIECES)] + [
                f"{name}-end".encode()
            ]
        assert model.runtime.open_streams == 0
    finally:
        model.stop()


def test_a_batch_that_breaks_off_fails_its_streams_without_a_retry(
    ts_package: str, tmp_path: Path
) -> None:
    cls = push_class(MODULES[0], fail_after=0)
    client, model = make_app(TorchServeHandler(cls, "h.py", BATCH), tmp_path)
    try:
        answers = concurrently(client, "abcd")
        assert cls.calls == [4], "the requests whose streams had started were retried"  # type: ignore[attr-defined]
        for name in "abcd":
            status, _, got = answers[name]
            assert status == 201
            assert got[0] == f"{name}-0|".encode()
            assert isinstance(got[1], StreamAbortedError) and len(got) == 2
        assert model.runtime.open_streams == 0
    finally:
        model.stop()


# PieceSocket over TorchServe's own encoding (the installed ts package)


def sinks(count: int, tmp_path: Path) -> tuple[Context, list[Pending], list[Channel]]:
    """A batch context whose requests are queued (each its own sink, with real channels)."""
    channels: list[Channel] = []

    def open_channel() -> Channel:
        channels.append(Channel(WAIT))
        return channels[-1]

    queue = BatchQueue(count)
    requests = [
        InferenceRequest(b"{}", "application/json", "application/json", request_id=f"r{index}")
        for index in range(count)
    ]
    pending = [queue.put(request, open_channel)[0] for request in requests]
    load = LoadContext(tmp_path, {}, None, count, default_codecs())
    context = Context(load, requests)
    context.cl_socket = PieceSocket(context)
    return context, pending, channels


def test_piece_socket_reads_torchserve_predict_responses(tmp_path: Path) -> None:
    from ts.protocol.otf_message_handler import create_predict_response

    context, pending, channels = sinks(3, tmp_path)
    context.set_response_status(203, "Partial", idx=0)
    context.set_response_header(0, "X-Mine", "yes")
    values = ["text é", b"\x00\xff raw", {"tokens": [1, 2], "text": "ü"}]
    message = create_predict_response(
        values, context.request_ids, "Intermediate", 200, context, True
    )
    context.cl_socket.sendall(message)
    text, raw, document = (item.response for item in pending)
    assert text is not None and raw is not None and document is not None
    assert text.body == "text é".encode() and text.content_type.startswith("text/plain")
    assert text.status == 203 and text.headers == {"X-Mine": "yes"}
    assert raw.body == b"\x00\xff raw" and raw.content_type == "application/octet-stream"
    assert json.loads(document.body) == {"tokens": [1, 2], "text": "ü"}
    assert document.content_type == "application/json" and document.status == 200
    second = create_predict_response(
        ["more", b"\x01", [3]], context.request_ids, "", 200, context, True
    )
    context.cl_socket.sendall(second)
    for channel in channels:
        channel.end()
    more, one, three = (list(channel) for channel in channels)
    assert more == [b"more"] and one == [b"\x01"]
    assert [json.loads(piece) for piece in three] == [[3]]  # TorchServe indents its JSON


def test_piece_socket_sends_only_to_the_requests_named(tmp_path: Path) -> None:
    from ts.handler_utils.utils import send_intermediate_predict_response

    context, pending, _ = sinks(3, tmp_path)
    send_intermediate_predict_response(["x", "only me", "z"], {1: "r1"}, "", 200, context)
    assert pending[0].response is None and pending[2].response is None
    assert pending[1].response is not None and pending[1].response.body == b"only me"


def test_pushed_text_pieces_are_events_under_event_stream(tmp_path: Path) -> None:
    client, model = make_app(TorchServeHandler(push_class(MODULES[0]), "h.py"), tmp_path)
    try:
        response = client.post(
            "/invocations",
            json={"name": "a"},
            headers={"Accept": "text/event-stream"},
            buffered=False,
        )
        assert list(pieces(response)) == [
            b"data: a-0|\n\n",
            b"data: a-1|\n\n",
            b"data: a-2|\n\n",
            b"data: a-end\n\n",
        ]
        response.close()
    finally:
        model.stop()
