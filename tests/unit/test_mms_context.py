"""MMS's context for handlers written for MMS (handlers/mmscontext.py), TorchServe's for the rest:
MMS's own model_service_template (tests/fixtures/mms_template/), and handlers that use both of
MMS's ``request_processor`` shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from handlers.mmscontext import written_for_mms
from serve.contract import InferenceResponse
from serve.errors import ModelError
from tests.unit.test_handlers import ModelDir, request

TEMPLATE = Path(__file__).parents[1] / "fixtures" / "mms_template" / "model_handler.py"

# MANIFEST.json as MMS's model-archiver 1.0.3 writes it for `--handler model_handler`
MMS_MANIFEST = {
    "runtime": "python",
    "model": {"modelName": "template", "handler": "model_handler"},
    "modelServerVersion": "1.0",
    "implementationVersion": "1.0",
    "specificationVersion": "1.0",
}
# and as torch-model-archiver 0.12 writes it
TORCHSERVE_MANIFEST = {
    "createdOn": "01/01/2025 00:00:00",
    "runtime": "python",
    "model": {"modelName": "probe", "handler": "probe.py", "modelVersion": "1.0"},
    "archiverVersion": "0.12.0",
}

PROBE = """
    class Probe:
        def initialize(self, context):
            self.server = context.system_properties["server_name"]

        def handle(self, data, context):
            processors = context.request_processor
            return [
                {"type": type(processors).__name__, "server": self.server,
                 "name": context.manifest["model"]["modelName"]}
                for _ in data
            ]
"""

# Both of MMS's shapes: one processor per request (1.0.5+) and the batch's (1.0.0-1.0.4)
STATUSES = """
    import json


    def handle(data, context):
        if data is None:
            return None
        processors = context.request_processor
        answers = []
        for idx, row in enumerate(data):
            rid = context.get_request_id(idx)
            body = row["body"]
            if body == "batch":
                processors.report_status(503, "the whole batch")
            elif body == "old-headers":
                headers = processors.get_request_property(rid)
                processors.add_response_property(rid, {"X-Seen": headers["X-Probe"]})
                context.set_response_content_type(rid, "text/x-old")
            else:
                processors[idx].report_status(429, "this one")
                processors[idx].add_response_property("X-Index", str(idx))
            answers.append(json.dumps({
                "server": context.system_properties["server_name"],
                "name": context.manifest["model"]["modelName"],
                "batch_size": context.system_properties["batch_size"],
            }))
        return answers
"""


@pytest.fixture
def model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelDir:
    return ModelDir(tmp_path / "model", monkeypatch)


def template_dir(model_dir: ModelDir) -> ModelDir:
    model_dir.write("model_handler.py", TEMPLATE.read_text())
    model_dir.manifest = dict(MMS_MANIFEST)
    return model_dir


def test_the_template_answers_a_full_batch(model_dir: ModelDir) -> None:
    handler = template_dir(model_dir).loaded(batch_size=4)
    results = handler.handle([request("[1]", request_id=f"r{i}") for i in range(4)])
    assert all(isinstance(result, InferenceResponse) for result in results)
    assert [(r.body_bytes(), r.status) for r in results if isinstance(r, InferenceResponse)] == [
        (b"OK", 200)
    ] * 4


def test_the_templates_report_status_works_on_a_short_batch(model_dir: ModelDir) -> None:
    """Two of four: the template's assertion fails and its error path calls
    ``request_processor.report_status``; that works (it raised AttributeError on the list), and
    what fails the batch is then the template's own answer, four results for two requests."""
    handler = template_dir(model_dir).loaded(batch_size=4)
    with pytest.raises(ModelError, match="handle returned 4 results for 2 requests"):
        handler.handle([request("[1]", request_id=f"r{i}") for i in range(2)])


def test_mms_handlers_set_statuses_and_headers_either_way(model_dir: ModelDir) -> None:
    model_dir.write("statuses.py", STATUSES)
    model_dir.manifest = {**MMS_MANIFEST, "model": {"modelName": "s", "handler": "statuses"}}
    handler = model_dir.loaded(batch_size=2)

    one, two = handler.handle([request('"one"', request_id="a"), request('"two"', request_id="b")])
    assert isinstance(one, InferenceResponse) and isinstance(two, InferenceResponse)
    assert (one.status, one.headers, two.status, two.headers) == (
        429, {"X-Index": "0"}, 429, {"X-Index": "1"}
    )  # fmt: skip
    assert json.loads(one.body_bytes()) == {"server": "MMS", "name": "s", "batch_size": 2}

    batch = handler.handle([request('"batch"', request_id="c"), request('"x"', request_id="d")])
    assert [r.status for r in batch if isinstance(r, InferenceResponse)] == [503, 429]

    (old,) = handler.handle(
        [request('"old-headers"', headers={"X-Probe": "p"}, request_id="e")]
    )  # fmt: skip
    assert isinstance(old, InferenceResponse)
    assert (old.status, old.headers, old.content_type) == (200, {"X-Seen": "p"}, "text/x-old")


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [(MMS_MANIFEST, "RequestProcessors"), (TORCHSERVE_MANIFEST, "list")],
)
def test_torchserve_handlers_keep_torchserves_context(
    model_dir: ModelDir, manifest: dict[str, Any], expected: str
) -> None:
    model_dir.write("probe.py", PROBE)
    model_dir.manifest = {**manifest, "model": {"modelName": "probe", "handler": "probe.py"}}
    handler = model_dir.loaded()
    (result,) = handler.handle([request("[1]")])
    assert isinstance(result, InferenceResponse)
    assert json.loads(result.body_bytes()) == {"type": expected, "server": "MMS", "name": "probe"}


@pytest.mark.parametrize(
    ("manifest", "function", "mms"),
    [
        (MMS_MANIFEST, False, True),
        (TORCHSERVE_MANIFEST, False, False),
        (TORCHSERVE_MANIFEST, True, False),  # a TorchServe archive's handle function
        ({}, True, True),  # a handle function with no archive: MMS's style
        ({}, False, False),
        ({"model": {"handler": "x:handle"}}, True, True),
    ],
)
def test_which_handlers_are_mms(manifest: dict[str, Any], function: bool, mms: bool) -> None:
    assert written_for_mms(manifest, function) is mms
