"""Multi Model Server's ``context``, for handlers written for MMS 1.x.

MMS's context (mms/context.py, mms/service.py) is TorchServe's ancestor and mostly the same:
``request_processor`` is a list with one ``RequestProcessor`` per request of the batch (since MMS
1.0.5), ``system_properties`` names the model directory, GPU, batch size and ``server_name``
``"MMS"``, ``manifest`` is the archive's ``MAR-INF/MANIFEST.json``. Before 1.0.5, though,
``request_processor`` was one object for the whole batch: ``report_status(code, reason)``, request
headers and response headers keyed by request id. MMS's own ``model_service_template``
(``model_handler.py``, ``mxnet_vision_batching.py``) was written then and never changed: on an
error it calls ``context.request_processor.report_status(500, ...)``, which on the list raises
``'list' object has no attribute 'report_status'``. So an MMS handler's ``request_processor`` is
:class:`RequestProcessors`: the list, indexed as MMS 1.0.5+ and TorchServe do, that also answers
the whole-batch calls of MMS 1.0.0 to 1.0.4.

Which handlers are MMS's (:func:`written_for_mms`): those in an archive MMS's ``model-archiver``
wrote (its manifest has MMS's fields, not torch-model-archiver's ``archiverVersion``), and
``handle(data, context)`` functions with no archiver named. TorchServe's handlers keep TorchServe's
context (handlers/context.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from handlers.context import Context, RequestProcessor
from serve.contract import InferenceRequest, LoadContext

# Fields MMS's model-archiver writes in MANIFEST.json and torch-model-archiver does not
MMS_FIELDS = ("modelServerVersion", "specificationVersion", "implementationVersion", "engine")
TORCHSERVE_FIELD = "archiverVersion"


def written_for_mms(manifest: Mapping[str, Any], function: bool) -> bool:
    """Whether a handler gets MMS's context: its archive is MMS's (MMS's manifest fields, and
    no ``archiverVersion``), or it is a ``handle`` function (``function``) no TorchServe
    archiver packed."""
    if TORCHSERVE_FIELD in manifest:
        return False
    return function or any(name in manifest for name in MMS_FIELDS)


class RequestProcessors(list[RequestProcessor]):
    """One :class:`RequestProcessor` per request, indexed as in MMS 1.0.5+; the methods are MMS
    1.0.0-1.0.4's one ``RequestProcessor`` for the whole batch, whose properties are keyed by
    request id."""

    def __init__(self, processors: Iterable[RequestProcessor], request_ids: Mapping[int, str]):
        super().__init__(processors)
        self._by_id = {rid: idx for idx, rid in request_ids.items()}

    def report_status(self, code: int, reason_phrase: str | None = None) -> None:
        """Every request of the batch answers with ``code`` (MMS 1.1 sets one request's with
        ``request_processor[idx].report_status``)."""
        for processor in self:
            processor.report_status(code, reason_phrase)

    def get_request_property(self, key: str) -> dict[str, str] | None:
        """The headers of the request whose id is ``key``; None for an id not in the batch."""
        idx = self._by_id.get(key)
        return None if idx is None else self[idx].get_request_properties()

    def add_response_property(self, key: str, value: Any) -> None:
        """``value``'s headers on the response to request ``key`` (a request id, ``value`` a
        mapping of headers, as MMS 1.0 wrote them); anything else is header ``key`` on every
        response of the batch."""
        idx = self._by_id.get(key)
        if idx is not None and isinstance(value, Mapping):
            for name, text in value.items():
                self[idx].add_response_property(str(name), str(text))
            return
        for processor in self:
            processor.add_response_property(key, str(value))

    def get_response_header(self) -> dict[str, dict[str, str]]:
        """Each request's response headers, by request id."""
        return {rid: self[idx].get_response_headers() for rid, idx in self._by_id.items()}


class MMSContext(Context):
    """MMS's ``Context``: TorchServe's (handlers/context.py) with MMS's ``request_processor``;
    ``set_response_content_type`` and ``get_response_content_type`` also take a request id in
    place of the index, as MMS 1.0.0-1.0.4's did."""

    def __init__(self, load: LoadContext, requests: Sequence[InferenceRequest] = ()) -> None:
        super().__init__(load, requests)
        self.request_processor = RequestProcessors(self.request_processor, self.request_ids)

    def _index(self, idx: int | str) -> int:
        if isinstance(idx, str):
            for index, rid in self.request_ids.items():
                if rid == idx:
                    return index
            raise KeyError(f"no request {idx!r} in this batch")
        return idx

    def set_response_content_type(self, idx: int | str, value: str) -> None:
        super().set_response_content_type(self._index(idx), value)

    def get_response_content_type(self, idx: int | str) -> str | None:
        return super().get_response_content_type(self._index(idx))
