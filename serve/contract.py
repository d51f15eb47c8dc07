"""The one handler protocol every handler style is adapted to, and the request/response types.

A handler is built in the server's master process (imports user code, checks its contract) and
loaded in each worker after fork (``load``: the model goes into memory there). After that the
worker calls ``handle`` with a batch of one or more requests from a single inference thread and
gets back one result per request, in order: a response, or the exception that request failed with.

An answer may stream, two ways (serve/runtime/streams.py carries both to the client):

- *pulled*: the response's ``pieces`` is an iterator; the inference thread takes one piece at a
  time from it, in turn with the other open streams and new batches, so user code still runs on
  that one thread;
- *pushed*: while ``handle`` runs, it sends pieces through the request's ``sink`` (TorchServe's
  ``send_intermediate_predict_response``); the response it then returns is the last piece.

Either way the first piece fixes the status and the headers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from serve.errors import StartupError
from serve.model.manifest import Manifest

if TYPE_CHECKING:
    from serve.codecs import CodecRegistry

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
INFERENCE_ID = "X-Amzn-SageMaker-Inference-Id"


class HandlerLoadError(StartupError):
    """A handler could not be found, imported or loaded; the message says which file and why."""


class Headers(Mapping[str, str]):
    """Request headers with case-insensitive lookup; iteration gives the names as sent.

    Built from a mapping or from ``(name, value)`` pairs; an iterable source (such as the WSGI
    request's headers) is only read when a header is first looked at, since most handlers never
    look.
    """

    __slots__ = ("_items", "_lower", "_source")

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        self._source: Mapping[str, str] | Iterable[tuple[str, str]] | None = items
        self._items: dict[str, str] = {}
        self._lower: dict[str, str] = {}

    def _read(self) -> dict[str, str]:
        source = self._source
        if source is not None:
            pairs = list(source.items()) if isinstance(source, Mapping) else list(source)
            self._items = dict(pairs)
            self._lower = {name.lower(): value for name, value in pairs}
            self._source = None
        return self._lower

    def __getitem__(self, name: str) -> str:
        return self._read()[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._read()

    def __iter__(self):  # type: ignore[no-untyped-def]
        self._read()
        return iter(self._items)

    def __len__(self) -> int:
        self._read()
        return len(self._items)

    def __repr__(self) -> str:
        self._read()
        return f"Headers({self._items!r})"


class Sink(Protocol):
    """Where a handler pushes the pieces of a request's answer before it returns the last one."""

    @property
    def started(self) -> bool:
        """Whether a piece was sent (the answer then streams: what ``handle`` returns for this
        request is its last piece)."""

    def send(self, piece: InferenceResponse) -> None:
        """Send one piece to the client now; the first one's status and headers are the
        answer's (later ones' are ignored)."""


@dataclass(slots=True)
class InferenceRequest:
    """One invocation as the handler sees it.

    Attributes:
        body: the raw request body.
        content_type: the Content-Type header as sent, parameters included.
        accept: the Accept header, with a missing or ``*/*`` value replaced by the default.
        headers: every request header (Custom-Attributes, Inference-Id, ...).
        request_id: the Inference-Id when the caller gave one, else a generated id.
        parameters: the URL's query parameters on TorchServe's routes (its handlers get each as
            a key of their request dict); empty elsewhere.
        sink: where a handler pushes pieces of a streamed answer; set by the runtime when the
            request is queued (None until then). Handlers treat the request as read-only.
    """

    body: bytes
    content_type: str
    accept: str
    headers: Headers = field(default_factory=Headers)
    request_id: str = ""
    parameters: tuple[tuple[str, str], ...] = ()
    sink: Sink | None = None

    @property
    def custom_attributes(self) -> str | None:
        return self.headers.get(CUSTOM_ATTRIBUTES)


@dataclass(slots=True)
class InferenceResponse:
    """What a handler answers one request with.

    Attributes:
        body: bytes, or text (sent as UTF-8).
        content_type: the response's Content-Type.
        status: the HTTP status, 200 unless the handler sets another.
        headers: extra response headers, e.g. X-Amzn-SageMaker-Custom-Attributes.
        pieces: the rest of a streamed answer, after ``body``: None for a whole answer. A
            handler gives an iterator the inference thread pulls from (its items bytes, pulled
            only as the client takes them; closed early when the client leaves); the request
            thread gets one that waits for each piece.
    """

    body: bytes | str
    content_type: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    pieces: Iterator[bytes] | None = None

    def body_bytes(self) -> bytes:
        return self.body.encode("utf-8") if isinstance(self.body, str) else bytes(self.body)


@dataclass(frozen=True, slots=True)
class LoadContext:
    """What a handler gets when it loads in a worker.

    Attributes:
        model_dir: the extracted model directory.
        manifest: the archive's manifest (TorchServe layout), empty when there is none.
        gpu_id: the GPU this worker uses, or None on CPU.
        batch_size: the largest batch the server will pass to ``handle``.
        codecs: the app's codec registry, for handlers that decode or encode payloads.
        allow_pickled_models: whether whole pickled modules may be loaded (explicit opt-in).
        options: free-form per-model settings (from the archive's config file).
    """

    model_dir: Path
    manifest: Mapping[str, Any]
    gpu_id: int | None
    batch_size: int
    codecs: CodecRegistry
    allow_pickled_models: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        name = Manifest.from_raw(self.manifest).model_name
        return name or self.model_dir.name or "model"


Result = InferenceResponse | BaseException


@runtime_checkable
class Handler(Protocol):
    """The protocol the server calls. Adapters turn every existing handler style into this.

    Attributes:
        source: the file (or built-in name) the handler came from, for messages.
        max_batch_size: the largest batch ``handle`` accepts; 1 for handlers that cannot batch.
        options: per-model settings the handler brings (batch size and delay from an archive).
    """

    source: str
    max_batch_size: int
    options: Mapping[str, Any]

    def load(self, context: LoadContext) -> None:
        """Load the model into memory; called once per worker, after fork."""

    def handle(self, requests: Sequence[InferenceRequest]) -> Sequence[Result]:
        """Answer a batch: one result per request, in order, each a response or an exception."""
        ...


PICKLED_HINT = (
    "torch.load refused to unpickle a whole object (since torch 2.6 it loads weights only by "
    "default); if this model is trusted, set BYOSERVE_ALLOW_PICKLED_MODELS=true"
)


def load_failed(source: str, what: str, exc: BaseException) -> HandlerLoadError:
    """The error for user code that raised while loading (``what``: the call that failed), with
    the setting that allows it when torch refused to unpickle a pickled model."""
    if "Weights only load failed" in str(exc):
        return HandlerLoadError(f"{source}: {what} failed: {PICKLED_HINT}")
    return HandlerLoadError(f"{source}: {what} failed: {type(exc).__name__}: {exc}")
