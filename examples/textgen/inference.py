"""Serving the text generator, SageMaker toolkit style: the answer streams, piece by piece.

``predict_fn`` returns a generator; the server sends each piece it yields as soon as it is made
(HTTP/1.1 chunked; one ``PayloadPart`` per piece on SageMaker's
``InvokeEndpointWithResponseStream``), after passing it through ``output_fn``.

Request (``Content-Type: application/json``), every field optional::

    {"prompt": "The server ", "max_new_tokens": 200, "temperature": 0.8, "top_k": 0,
     "seed": 7, "chunk": 4}

- ``prompt``: text to continue (at most 4,000 characters; empty starts a new line).
- ``max_new_tokens``: characters to generate, 1 to 2,000 (default 200).
- ``temperature``: > 0 (default 0.8); lower is more predictable.
- ``top_k``: sample among the k likeliest characters only, 1 to 96; 0 (default) for all.
- ``seed``: 0 to 2**63 - 1: the same seed and settings give the same text; left out, each
  request draws its own.
- ``chunk``: characters per piece, 1 to 1,000 (default 4).

A bad value or an unknown field is answered 400, another content type 415, before any piece.

Answer, by ``Accept``:

- ``text/plain``: the generated text, each piece as it comes (the prompt is not repeated).
- ``application/jsonlines`` (also ``application/jsonl``, ``application/x-jsonlines``) and
  ``application/json`` (what ``*/*`` becomes): one JSON object per piece and line,
  ``{"text": "..."}\\n``.
- ``text/event-stream``: the same object per piece, which the server frames as a Server-Sent
  Event (``data: {"text": "..."}\\n\\n``).

Anything else is answered 406. The pieces of one answer joined are the whole text.
"""

from __future__ import annotations

import importlib.util
import json
import math
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

MAX_PROMPT_CHARS = 4000
MAX_NEW_TOKENS = 2000
MAX_CHUNK = 1000
MAX_SEED = 2**63 - 1
TEXT = "text/plain"
EVENT_STREAM = "text/event-stream"
JSON_LINES = ("application/json", "application/jsonlines", "application/jsonl",
              "application/x-jsonlines")  # fmt: skip


class RequestError(ValueError):
    """A request the generator cannot take: the server answers ``error_code`` and the message."""

    error_code = 400


class UnsupportedContentTypeError(RequestError):
    """The body is not JSON."""

    error_code = 415


class UnsupportedAcceptError(RequestError):
    """The client asked for a piece format this example does not write."""

    error_code = 406


@dataclass(frozen=True, slots=True)
class Generation:
    """The sampling settings of one request (see the module docstring for their ranges)."""

    prompt: str = ""
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int = 0
    seed: int | None = None
    chunk: int = 4


@dataclass(frozen=True, slots=True)
class TextGenerator:
    """What ``model_fn`` loads: the network, its characters by id, and where it runs."""

    network: torch.nn.Module
    vocab: list[str]
    device: torch.device

    def encode(self, text: str) -> torch.Tensor:
        """``(1, len(text))`` character ids on the model's device; unknown characters as 0."""
        index = {char: i for i, char in enumerate(self.vocab) if char}
        ids = [index.get(char, 0) for char in text]
        return torch.tensor([ids], dtype=torch.long, device=self.device)


def model_fn(model_dir: str, context: Any = None) -> TextGenerator:
    """``CharGRU()`` from ``model.py`` with ``model.pt``, and ``vocab.json``.

    On the GPU the server assigns this worker (``context.system_properties["gpu_id"]``) when
    there is one, else on the CPU.
    """
    root = Path(model_dir)
    gpu_id = context.system_properties.get("gpu_id") if context is not None else None
    use_gpu = gpu_id is not None and torch.cuda.is_available()
    device = torch.device(f"cuda:{gpu_id}" if use_gpu else "cpu")
    spec = importlib.util.spec_from_file_location("textgen_model", root / "model.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {root / 'model.py'}")
    source = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(source)
    network: torch.nn.Module = source.CharGRU()
    state = torch.load(root / "model.pt", map_location=device, weights_only=True)
    network.load_state_dict(state)
    vocab = json.loads((root / "vocab.json").read_text(encoding="utf-8"))
    return TextGenerator(network.to(device).eval(), vocab, device)


def input_fn(input_data: str | bytes, content_type: str) -> Generation:
    """The JSON request as checked settings.

    Raises:
        UnsupportedContentTypeError: the content type is not ``application/json``.
        RequestError: the body is not a JSON object, names an unknown field, or a value is out
            of range.
    """
    if content_type != "application/json":
        raise UnsupportedContentTypeError(
            f"send the request as application/json, not {content_type}"
        )
    try:
        text = input_data.decode("utf-8") if isinstance(input_data, bytes) else input_data
        body = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError(f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object, not {type(body).__name__}")
    known = [field.name for field in fields(Generation)]
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(unknown)}; expected {', '.join(known)}")
    request = Generation(**body)
    _check(request)
    return request


def _check(request: Generation) -> None:
    prompt, temperature = request.prompt, request.temperature
    if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
        raise RequestError(f"prompt must be a string of at most {MAX_PROMPT_CHARS} characters")
    _check_int("max_new_tokens", request.max_new_tokens, 1, MAX_NEW_TOKENS)
    _check_int("top_k", request.top_k, 0, 96)
    _check_int("chunk", request.chunk, 1, MAX_CHUNK)
    if request.seed is not None:
        _check_int("seed", request.seed, 0, MAX_SEED)
    number = isinstance(temperature, int | float) and not isinstance(temperature, bool)
    if not number or not math.isfinite(temperature) or temperature <= 0:
        raise RequestError(f"temperature must be a number > 0, not {temperature!r}")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"{name} must be an integer from {low} to {high}, not {value!r}")


def predict_fn(data: Generation, model: TextGenerator) -> Iterator[str]:
    """The generated text as a generator of pieces of ``data.chunk`` characters.

    Nothing runs until the server asks for the first piece; each piece is sampled only when the
    previous one has been taken.
    """
    return _generate(data, model)


def _generate(request: Generation, model: TextGenerator) -> Iterator[str]:
    seed = secrets.randbits(63) if request.seed is None else request.seed
    rng = torch.Generator().manual_seed(seed)
    logits, state = _step(model, model.encode(request.prompt or "\n"), None)
    piece: list[str] = []
    for made in range(1, request.max_new_tokens + 1):
        char_id = _sample(logits, request.temperature, request.top_k, rng)
        piece.append(model.vocab[char_id])
        if len(piece) == request.chunk or made == request.max_new_tokens:
            yield "".join(piece)  # outside inference mode: the consumer runs here
            piece = []
        if made < request.max_new_tokens:
            next_ids = torch.tensor([[char_id]], dtype=torch.long, device=model.device)
            logits, state = _step(model, next_ids, state)


@torch.inference_mode()
def _step(
    model: TextGenerator, ids: torch.Tensor, state: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits for the character after ``ids`` (on the CPU, float64) and the new state."""
    logits, state = model.network(ids, state)
    return logits[0, -1].double().cpu(), state


def _sample(logits: torch.Tensor, temperature: float, top_k: int, rng: torch.Generator) -> int:
    """One character id; never <unk> (0). On the CPU, so a seed means the same on any device."""
    scores = logits.clone()
    scores[0] = -math.inf
    if top_k:
        kth = torch.topk(scores, top_k).values[-1]
        scores[scores < kth] = -math.inf
    # subtracting the maximum first keeps a tiny temperature from overflowing
    probabilities = ((scores - scores.max()) / temperature).softmax(dim=0)
    return int(torch.multinomial(probabilities, 1, generator=rng))


def output_fn(prediction: str, accept: str) -> str:
    """One piece in the format asked for: as is (``text/plain``), or ``{"text": piece}`` as a
    JSON line, or (``text/event-stream``) as the JSON the server frames as an event.

    Raises:
        UnsupportedAcceptError: another type; raised at the first piece, so before the answer
            starts.
    """
    media_type = accept.split(";", 1)[0].strip().lower()
    if media_type == TEXT:
        return prediction
    if media_type in JSON_LINES:
        return json.dumps({"text": prediction}) + "\n"
    if media_type == EVENT_STREAM:
        return json.dumps({"text": prediction})
    accepted = ", ".join((TEXT, EVENT_STREAM, *JSON_LINES))
    raise UnsupportedAcceptError(f"cannot answer {accept}; ask for one of {accepted}")
