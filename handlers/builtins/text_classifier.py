"""``text_classifier``: texts in, ``{"label": ..., "score": ...}`` per text out.

Accepted: ``text/plain``, any other ``text/*`` and ``application/text`` (one text),
``application/json`` (a string, a list of strings, or ``{"inputs": ...}`` / ``{"text": ...}``
holding either), JSON Lines (one string, or ``{"text": ...}``, a line). One text answers one
object; a list, a list.

``text/csv`` is one text a line (batch transform's records): the line's CSV fields, a quoted
field unquoted, joined again by commas, so that ``"Loved it, truly"`` and ``Loved it, truly``
are the same text. A body of several lines (or JSON Lines, or JSON documents one a line) answers
one line per record, in order, as JSON, JSON Lines or CSV (``positive,0.97``): see
serve/codecs/records.py.
The tokenizer and vocabulary ship in the archive: by default ``vocab.json`` and the archive's
``text_tokenizer.py`` (``tokenize``/``encode``), else a built-in word tokenizer.

The model takes either ``forward(token_ids, offsets)`` (``nn.EmbeddingBag``: every text's ids
concatenated, and where each starts) or ``forward(token_ids)`` with a ``(N, L)`` padded batch;
``model_input: auto`` tells them apart by the number of ``forward`` arguments.

Settings (archive config file):
    vocab: the vocabulary file (default ``vocab.json``; a JSON token → id object or list, or a
        text file of one token a line).
    tokenizer: a ``.py`` file in the archive, or ``words`` / ``whitespace`` (default: the
        archive's ``text_tokenizer.py`` when there is one, else ``words``).
    unk_token, pad_token: default ``<unk>`` and ``<pad>`` (pad: id 0 when not in the vocab).
    model_input: ``auto`` (default), ``offsets`` or ``padded``.
    max_length: keep at most this many tokens per text (default 0: all).
    activation: ``softmax`` (default) or ``none``.
"""

from __future__ import annotations

import csv
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from handlers.builtins.base import (
    CSV_TYPE,
    JSON_TYPE,
    JSONLINES_TYPE,
    BuiltinHandler,
    Inputs,
    Loaded,
    accepted_media_type,
    find_file,
    read_labels,
)
from handlers.builtins.outputs import label_of, probabilities
from handlers.builtins.settings import Settings
from handlers.builtins.tokenizers import (
    BUILTIN_TOKENIZERS,
    Tokenizer,
    builtin_tokenizer,
    module_tokenizer,
    read_vocab,
)
from serve.codecs import CodecRegistry, decode_text, parse_media_type
from serve.contract import HandlerLoadError, InferenceRequest
from serve.errors import BadRequestError, UnprocessableError

logger = logging.getLogger(__name__)

DEFAULT_TOKENIZER = "text_tokenizer.py"
TEXT_TYPES = (
    "text/plain",
    "text/*",
    "application/text",
    "application/json",
    "application/jsonlines",
    "application/jsonl",
    "application/x-jsonlines",
)
_TEXT_KEYS = ("inputs", "text")


def _text(value: Any) -> str:
    if isinstance(value, Mapping):
        value = next((value[k] for k in _TEXT_KEYS if k in value), None)
    if not isinstance(value, str):
        raise UnprocessableError("expected a text (a JSON string, or an object with 'text')")
    return value


def csv_text(text: str) -> str:
    """The text of a CSV record: its fields, unquoted, joined by commas (lines by newlines)."""
    lines = [line for line in text.split("\n") if line.strip()]
    try:
        rows = list(csv.reader(lines))
    except csv.Error as exc:
        raise BadRequestError(f"malformed text/csv payload: {exc}") from exc
    return "\n".join(",".join(fields) for fields in rows)


def request_texts(request: InferenceRequest, codecs: CodecRegistry) -> tuple[list[str], bool]:
    """The request's texts, and whether it sent one bare text (``text/*`` and
    ``application/text``, which MMS clients send, are one text each; a ``text/csv`` one too,
    its fields unquoted)."""
    media_type, params = parse_media_type(request.content_type)
    if media_type == CSV_TYPE:
        return [csv_text(decode_text(request.body, params, media_type))], True
    if media_type.startswith("text/") or media_type == "application/text":
        return [decode_text(request.body, params, media_type)], True
    media_type = accepted_media_type(request, TEXT_TYPES, "texts")
    value = codecs.decode(request.body, request.content_type)
    if media_type != "application/json":
        return [_text(line) for line in value], False
    if isinstance(value, Mapping):
        value = next((value[k] for k in _TEXT_KEYS if k in value), value)
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise UnprocessableError("expected a list of strings")
        return list(value), False
    if isinstance(value, str):
        return [value], True
    raise UnprocessableError('expected a string, a list of strings, or {"inputs": ...}')


def _forward_arity(model: Any) -> int | None:
    schema = getattr(getattr(model, "forward", None), "schema", None)
    if schema is not None:  # TorchScript: the schema lists self too
        return len(schema.arguments) - 1
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError, AttributeError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return None
    return sum(1 for p in parameters if p.kind in kinds and p.default is inspect.Parameter.empty)


class TextClassifier(BuiltinHandler):
    """The ``text_classifier`` built-in (see the module docstring for inputs and settings)."""

    name = "text_classifier"
    response_types = (JSON_TYPE, JSONLINES_TYPE, CSV_TYPE)

    def configure(self, options: Mapping[str, Any]) -> None:
        settings = Settings(self.name, options)
        self.vocab_name = settings.text("vocab", "vocab.json") or "vocab.json"
        self.tokenizer_name = settings.text("tokenizer", None)
        if self.tokenizer_name is not None and not (
            self.tokenizer_name in BUILTIN_TOKENIZERS or self.tokenizer_name.endswith(".py")
        ):
            raise HandlerLoadError(
                f"{self.name}: setting tokenizer={self.tokenizer_name!r}: expected a .py file "
                f"in the archive or one of {', '.join(BUILTIN_TOKENIZERS)}"
            )
        self.unk_token = settings.text("unk_token", "<unk>") or "<unk>"
        self.pad_token = settings.text("pad_token", "<pad>") or "<pad>"
        modes = ("auto", "offsets", "padded")
        self.model_input = settings.choice("model_input", "auto", modes)
        self.max_length = settings.integer("max_length", 0)
        self.activation = settings.choice("activation", "softmax", ("softmax", "none"))

    def check_files(self, has_file: Callable[[str], bool]) -> None:
        if not has_file(self.vocab_name):
            raise HandlerLoadError(
                f"{self.name}: no vocabulary {self.vocab_name!r} in the archive "
                "(add it with --extra-files, or name another with the vocab setting)"
            )
        named = self.tokenizer_name
        if named is not None and named not in BUILTIN_TOKENIZERS and not has_file(named):
            raise HandlerLoadError(f"{self.name}: no tokenizer {named!r} in the archive")

    def prepare(self, loaded: Loaded) -> None:
        path = find_file(loaded.model_dir, self.vocab_name)
        if path is None:
            raise HandlerLoadError(f"{self.name}: no vocabulary {self.vocab_name!r}")
        self.vocab = read_vocab(path)
        self.unk = self.vocab.get(self.unk_token, 0)
        self.pad = self.vocab.get(self.pad_token, 0)
        self.labels = read_labels(loaded.model_dir)
        self.tokenizer = self._load_tokenizer(loaded)
        self.mode = self.model_input
        if self.mode == "auto":
            arity = _forward_arity(loaded.model)
            self.mode = "padded" if arity == 1 else "offsets"
        logger.info("%s: tokenizer %s, %s input", self.name, self.tokenizer.source, self.mode)

    def _load_tokenizer(self, loaded: Loaded) -> Tokenizer:
        name = self.tokenizer_name
        if name is None:
            found = find_file(loaded.model_dir, DEFAULT_TOKENIZER) is not None
            name = DEFAULT_TOKENIZER if found else "words"
        if name in BUILTIN_TOKENIZERS:
            return builtin_tokenizer(name)
        from serve.model.namespace import import_file

        path = find_file(loaded.model_dir, name)
        if path is None:
            raise HandlerLoadError(f"{self.name}: no tokenizer {name!r} in the archive")
        source = path.relative_to(loaded.model_dir).as_posix()
        return module_tokenizer(import_file(path, source), source)

    def parse(self, request: InferenceRequest, codecs: CodecRegistry) -> Inputs:
        texts, single = request_texts(request, codecs)
        try:
            ids = self.tokenizer.ids(texts, self.vocab, self.unk)
        except (ValueError, TypeError, KeyError) as exc:
            raise UnprocessableError(f"cannot tokenize: {type(exc).__name__}: {exc}") from exc
        if self.max_length:
            ids = [row[: self.max_length] for row in ids]
        return Inputs(ids, single)

    def forward(self, loaded: Loaded, items: Sequence[Any]) -> list[Any]:
        import torch

        device = loaded.device
        if self.mode == "offsets":
            offsets = [0]
            for row in items[:-1]:
                offsets.append(offsets[-1] + len(row))
            flat = torch.tensor([i for row in items for i in row], dtype=torch.int64)
            starts = torch.tensor(offsets, dtype=torch.int64)
            output = loaded.model(flat.to(device), starts.to(device))
        else:
            width = max(len(row) for row in items)
            padded = [row + [self.pad] * (width - len(row)) for row in items]
            output = loaded.model(torch.tensor(padded, dtype=torch.int64).to(device))
        probs = probabilities(output, self.activation)
        best = probs.argmax(axis=1)
        return [
            {"label": label_of(int(i), self.labels), "score": float(row[i])}
            for i, row in zip(best, probs, strict=True)
        ]
