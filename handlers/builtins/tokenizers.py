"""Tokenizers for the ``text_classifier`` built-in: built-in rules, or the archive's own module.

The archive's module (``text_tokenizer.py`` by default) defines ``tokenize(text) -> list[str]``
and, optionally, ``encode(texts, vocab) -> (ids, offsets)``; when it defines ``encode`` that is
used as is, so serving encodes exactly as training did.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from serve.contract import HandlerLoadError

logger = logging.getLogger(__name__)

BUILTIN_TOKENIZERS = ("words", "whitespace")
_WORD = re.compile(r"\w+(?:'\w+)?")

Encode = Callable[[Sequence[str], Mapping[str, int]], tuple[list[int], list[int]]]


def words(text: str) -> list[str]:
    """Lower-cased runs of word characters (an apostrophe inside a word is kept)."""
    return _WORD.findall(text.lower())


def whitespace(text: str) -> list[str]:
    """The text split on whitespace, case kept."""
    return text.split()


@dataclass(frozen=True, slots=True)
class Tokenizer:
    """Turns texts into token ids with a vocabulary.

    Attributes:
        tokenize: text → tokens.
        encode: the module's own ``encode(texts, vocab)``, or None.
        source: where it came from, for messages.
    """

    tokenize: Callable[[str], list[str]]
    encode: Encode | None
    source: str

    def ids(self, texts: Sequence[str], vocab: Mapping[str, int], unk: int) -> list[list[int]]:
        """Each text's ids; an empty text gets ``[unk]`` so that no bag is empty."""
        if self.encode is not None:
            flat, offsets = self.encode(texts, vocab)
            ends = [*offsets[1:], len(flat)]
            return [list(flat[start:end]) for start, end in zip(offsets, ends, strict=True)]
        return [[vocab.get(token, unk) for token in self.tokenize(t)] or [unk] for t in texts]


def builtin_tokenizer(name: str) -> Tokenizer:
    """``words`` or ``whitespace``."""
    rule = {"words": words, "whitespace": whitespace}[name]
    return Tokenizer(rule, None, f"built-in {name}")


def module_tokenizer(module: ModuleType, source: str) -> Tokenizer:
    """The tokenizer a module defines.

    Raises:
        HandlerLoadError: it has no ``tokenize`` function.
    """
    tokenize: Any = getattr(module, "tokenize", None)
    encode: Any = getattr(module, "encode", None)
    if not callable(tokenize) and not callable(encode):
        raise HandlerLoadError(f"{source}: defines neither tokenize(text) nor encode(texts, vocab)")
    return Tokenizer(tokenize, encode if callable(encode) else None, source)


def read_vocab(path: Path) -> dict[str, int]:
    """A ``token → id`` JSON object, or a text file with one token a line (id = line number).

    Raises:
        HandlerLoadError: the file cannot be read or has another shape.
    """
    import json

    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix != ".json":
            return {line: i for i, line in enumerate(text.splitlines()) if line}
        raw = json.loads(text)
        if isinstance(raw, list):
            return {str(token): i for i, token in enumerate(raw)}
        return {str(token): int(index) for token, index in raw.items()}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise HandlerLoadError(
            f"{path.name}: expected a JSON object of token to id: {exc}"
        ) from exc
