"""What every built-in handler shares: model loading, batching across requests, failure isolation.

A built-in turns each request into a list of *inputs* (one request may carry many), runs the
model once over the inputs of every request in the batch, and answers each request with one
output per input (a single input sent alone gets a single output, not a list). A request that
cannot be decoded or has the wrong shape fails alone (400/422) before the model runs; when the
model itself fails on a batch, it is retried in halves so that only the request the model cannot
use fails.

A request of several records (batch transform's ``MultiRecord``: CSV lines, JSON Lines, JSON
documents one a line; serve/codecs/records.py) whose answer is JSON, JSON Lines or CSV is parsed
record by record, each as if it came alone, and answered one line per record, in order; a record
that fails fails its request, with ``line K: `` before the message.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from handlers.torchmodel import device_for, load_model
from serve.codecs import (
    LINE_TYPES,
    CodecRegistry,
    at_line,
    encode_records,
    parse_media_type,
    split_records,
)
from serve.contract import (
    HandlerLoadError,
    InferenceRequest,
    InferenceResponse,
    LoadContext,
    Result,
)
from serve.errors import (
    MAX_REASON,
    ModelError,
    ServingError,
    UnprocessableError,
    UnsupportedMediaTypeError,
    brief,
)
from serve.model.directory import ModelDirectory
from serve.model.paths import inside

logger = logging.getLogger(__name__)

JSON_TYPE = "application/json"
JSONLINES_TYPE = "application/jsonlines"
JSONLINES_TYPES = (JSONLINES_TYPE, "application/jsonl", "application/x-jsonlines")
CSV_TYPE = "text/csv"
LABELS_FILE = "index_to_name.json"
# built-ins take whatever batch the policy (environment, then the archive's batch_size) gives
BATCH_CAPACITY = 1024
MAX_FORWARD_INPUTS = 1024  # inputs per model call, however many one batch of requests holds
_MODEL_INPUT_ERRORS = (RuntimeError, ValueError, IndexError, TypeError)
_TORCHSCRIPT_FAILURE = "The following operation failed in the TorchScript interpreter"


@dataclass(frozen=True, slots=True)
class Inputs:
    """One request's inputs, preprocessed.

    Attributes:
        items: one value per input, in the form the handler's ``forward`` takes.
        single: the request sent one bare input, so it gets one output rather than a list.
        key: requests batch together only when their keys are equal (e.g. a tensor's shape).
    """

    items: list[Any]
    single: bool = False
    key: Hashable = None


@dataclass(slots=True)
class _Unit:
    """What the model runs for one request, or for one record of a request of several.

    Attributes:
        line: the record's line in the request body; 0 for a whole request.
        inputs: its inputs, preprocessed.
        outputs: once run, one output per input, or the error it failed with.
    """

    line: int
    inputs: Inputs
    outputs: list[Any] | ServingError | None = None


@dataclass(slots=True)
class _Plan:
    """One request's way through ``handle``: its answer's type and what the model runs for it
    (``records``: one unit per record, answered one line each)."""

    response_type: str
    units: list[_Unit]
    records: bool = False


@dataclass(frozen=True, slots=True)
class Loaded:
    """A built-in's per-worker state: the model in eval mode, its device, the app's codecs."""

    model: Any
    device: str
    codecs: CodecRegistry
    model_dir: Path
    manifest: Mapping[str, Any]


def accepted_media_type(request: InferenceRequest, accepted: Sequence[str], what: str) -> str:
    """The request's media type when it is one of ``accepted``.

    Raises:
        UnsupportedMediaTypeError: it is not (415, naming what is accepted).
    """
    media_type = parse_media_type(request.content_type)[0]
    if media_type not in accepted:
        raise UnsupportedMediaTypeError(
            f"unsupported Content-Type {media_type[:100]!r} for {what}; "
            f"accepted: {', '.join(accepted)}"
        )
    return media_type


def made_by_torchserve(manifest: Mapping[str, Any]) -> bool:
    """Whether the archive came from ``torch-model-archiver`` (its users expect its outputs)."""
    version = manifest.get("archiverVersion")
    return bool(manifest) and not str(version or "").startswith("byoserve")


def find_file(model_dir: Path, name: str) -> Path | None:
    """``name`` in ``model_dir/code`` or ``model_dir``; never outside ``model_dir``."""
    for base in (model_dir / "code", model_dir):
        path = base / name
        if path.is_file() and inside(model_dir, path):
            return path
    return None


def read_labels(model_dir: Path, name: str = LABELS_FILE) -> dict[int, str]:
    """Class names by index from TorchServe's ``index_to_name.json``; empty when absent.

    Values may be names or ``[id, name]`` pairs (the ImageNet file); the last item is the name.

    Raises:
        HandlerLoadError: the file is not a JSON object of index → name.
    """
    path = find_file(model_dir, name)
    if path is None:
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {
            int(index): str(value[-1] if isinstance(value, list) else value)
            for index, value in raw.items()
        }
    except (OSError, ValueError, AttributeError, IndexError, TypeError) as exc:
        raise HandlerLoadError(f"{name}: expected a JSON object of index to name: {exc}") from exc


def model_failure(exc: BaseException) -> str:
    """What went wrong in the model, in one short line.

    A TorchScript error's text begins with the interpreter's traceback and ends with the error
    raised inside (``RuntimeError: mat1 and mat2 shapes cannot be multiplied ...``): that last
    line is the one that says what is wrong.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith(_TORCHSCRIPT_FAILURE):
        text = lines[-1].split(": ", 1)[-1]
        return text if len(text) <= MAX_REASON else text[:MAX_REASON] + "..."
    return brief(exc)


class BuiltinHandler:
    """Base of the built-in handlers; subclasses define how inputs are read, run and answered.

    Attributes:
        name: the built-in's name, as written in the manifest's ``model.handler``.
        response_types: the response types offered to Accept negotiation, preferred first.
        source: ``"builtin:<name>"``, for messages.
        max_batch_size: the largest batch ``handle`` takes.
        options: the archive's per-model settings.
    """

    name: ClassVar[str] = "builtin"
    response_types: ClassVar[tuple[str, ...]] = (JSON_TYPE, JSONLINES_TYPE)
    max_batch_size = BATCH_CAPACITY

    def __init__(self, model: ModelDirectory, options: Mapping[str, Any]) -> None:
        """Read and check the settings; runs in the server's master, before workers start.

        Raises:
            HandlerLoadError: a setting is invalid or a file the handler needs is missing.
        """
        self.source = f"builtin:{self.name}"
        self.options: Mapping[str, Any] = MappingProxyType(dict(options))
        self.configure(self.options)
        self.check_files(lambda name: find_file(model.root, name) is not None)
        self._loaded: Loaded | None = None

    @classmethod
    def check(cls, options: Mapping[str, Any], has_file: Callable[[str], bool]) -> None:
        """Check settings and needed files without a model directory (``serve archive``).

        Raises:
            HandlerLoadError: what the server would fail to start with.
        """
        handler = cls.__new__(cls)
        handler.configure(MappingProxyType(dict(options)))
        handler.check_files(has_file)

    def configure(self, options: Mapping[str, Any]) -> None:
        """Read the handler's settings from ``options``; raise HandlerLoadError when invalid."""

    def check_files(self, has_file: Callable[[str], bool]) -> None:
        """Raise HandlerLoadError unless the files the handler needs are in the model directory
        (``has_file(name)`` looks in ``code/`` and the root)."""

    def load(self, context: LoadContext) -> None:
        """Load the model onto this worker's device (its GPU, else the CPU), in eval mode."""
        device = device_for(context.gpu_id)
        model = load_model(
            context.model_dir,
            context.manifest,
            device=device,
            allow_pickled=context.allow_pickled_models,
        )
        self._loaded = Loaded(model, device, context.codecs, context.model_dir, context.manifest)
        self.prepare(self._loaded)

    def prepare(self, loaded: Loaded) -> None:
        """Load what else the handler needs in each worker (labels, vocabulary, ...).

        A built-in that knows the shape of its model's input checks it here with
        :meth:`rejection`, so that settings that do not fit the model stop the start.
        """

    def rejection(self, loaded: Loaded, item: Any) -> str | None:
        """Why the model cannot answer ``item`` (one blank preprocessed input), or None.

        Runs ``forward`` on that one input at load, as a request would. Running out of memory
        is raised as it is (the server answers that with 507), not taken for a rejection.
        """
        import torch

        try:
            with torch.inference_mode():
                self.forward(loaded, [item])
        except (MemoryError, torch.cuda.OutOfMemoryError):
            raise
        except Exception as exc:
            return model_failure(exc)
        return None

    def parse(self, request: InferenceRequest, codecs: CodecRegistry) -> Inputs:
        """Decode and preprocess one request; raise a ServingError (400/415/422) when unusable."""
        raise NotImplementedError

    def forward(self, loaded: Loaded, items: Sequence[Any]) -> list[Any]:
        """Run the model over inputs from one or more requests: one output per input."""
        raise NotImplementedError

    def render(self, outputs: list[Any], single: bool) -> Any:
        """One request's answer, before encoding: its outputs, or the only one when ``single``."""
        return outputs[0] if single else outputs

    def handle(self, requests: Sequence[InferenceRequest]) -> list[Result]:
        """Answer a batch: the model runs once per group of compatible inputs, whichever the
        request (or the record of a request) they came from."""
        loaded = self._loaded
        if loaded is None:
            raise HandlerLoadError(f"{self.source}: handle called before load")
        results: list[Result | None] = [None] * len(requests)
        plans: dict[int, _Plan] = {}
        for index, request in enumerate(requests):
            try:
                plans[index] = self._plan(request, loaded.codecs)
            except ServingError as exc:
                results[index] = exc
        groups: dict[Hashable, list[_Unit]] = {}
        for plan in plans.values():
            for unit in plan.units:
                groups.setdefault(unit.inputs.key, []).append(unit)
        for members in groups.values():
            outcomes = self._run_group(loaded, [unit.inputs for unit in members])
            for unit, outcome in zip(members, outcomes, strict=True):
                unit.outputs = outcome
        for index, plan in plans.items():
            results[index] = self._answer(loaded, plan)
        return [result for result in results if result is not None]

    def _plan(self, request: InferenceRequest, codecs: CodecRegistry) -> _Plan:
        """Negotiate the answer's type and parse the request: whole, or record by record when
        it holds several records and its answer is a type of one line per record."""
        response_type = codecs.negotiate(request.accept, self.response_types)
        records = (
            split_records(request.body, request.content_type)
            if response_type in LINE_TYPES
            else None
        )
        if records is None:
            return _Plan(response_type, [_Unit(0, self.parse(request, codecs))])
        units: list[_Unit] = []
        for record in records:
            alone = dataclasses.replace(request, body=record.body, content_type=record.content_type)
            try:
                units.append(_Unit(record.line, self.parse(alone, codecs)))
            except ServingError as exc:
                raise at_line(exc, record.line) from exc
        return _Plan(response_type, units, records=True)

    def _answer(self, loaded: Loaded, plan: _Plan) -> Result:
        answers: list[tuple[int, Any]] = []
        for unit in plan.units:
            if isinstance(unit.outputs, ServingError):
                return at_line(unit.outputs, unit.line) if plan.records else unit.outputs
            answers.append((unit.line, self.render(unit.outputs or [], unit.inputs.single)))
        if not plan.records:
            return self._respond(loaded, answers[0][1], plan.response_type)
        try:
            body, content_type = encode_records(answers, plan.response_type, loaded.codecs)
        except ServingError as exc:
            return exc
        return InferenceResponse(body, content_type)

    def _run_group(
        self, loaded: Loaded, group: list[Inputs], retry: bool = False
    ) -> list[list[Any] | ServingError]:
        """The outputs of each of ``group``'s inputs, or the error the model failed with on it.

        When the model fails on the group it is run again on each half, down to single inputs,
        so that only the input the model cannot use fails, in a few runs even for thousands of
        records."""
        try:
            return list(self._forward_split(loaded, group))
        except Exception as exc:
            if len(group) > 1:
                if not retry:
                    logger.info(
                        "%s: a batch of %d failed (%s); retrying it in halves",
                        self.name,
                        len(group),
                        exc,
                    )
                half = len(group) // 2
                return self._run_group(loaded, group[:half], True) + self._run_group(
                    loaded, group[half:], True
                )
            # the runtime logs it: a 4xx as the client's mistake, a 5xx with its traceback
            error: ServingError
            if isinstance(exc, ServingError):
                error = exc
            elif isinstance(exc, _MODEL_INPUT_ERRORS):
                error = UnprocessableError(f"the model cannot use this input: {model_failure(exc)}")
            else:
                error = ModelError(f"{type(exc).__name__}: {model_failure(exc)}")
            error.__cause__ = exc
            return [error]

    def _forward_split(self, loaded: Loaded, group: list[Inputs]) -> list[list[Any]]:
        import torch

        items = [item for inputs in group for item in inputs.items]
        outputs: list[Any] = []
        with torch.inference_mode():
            # a batch transform request may hold a million records: the model sees them in
            # slices, so that what it holds at once (a padded batch) stays bounded
            for start in range(0, len(items), MAX_FORWARD_INPUTS):
                outputs.extend(self.forward(loaded, items[start : start + MAX_FORWARD_INPUTS]))
        if len(outputs) != len(items):
            raise ModelError(f"{self.name}: {len(outputs)} outputs for {len(items)} inputs")
        split: list[list[Any]] = []
        start = 0
        for inputs in group:
            split.append(outputs[start : start + len(inputs.items)])
            start += len(inputs.items)
        return split

    @staticmethod
    def _respond(loaded: Loaded, value: Any, response_type: str) -> Result:
        try:
            body, content_type = loaded.codecs.encode(value, response_type)
        except ServingError as exc:
            return exc
        return InferenceResponse(body, content_type)
