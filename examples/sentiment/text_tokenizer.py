"""Tokenizer for the sentiment example: lowercase words with simple negation marking.

Pure Python (no torch), so a server can tokenize without importing the model. The
same module is copied into the trained model directory next to ``vocab.json``.

Negation, as in Pang, Lee and Vaithyanathan (2002): a negator ("not", "no",
"never", any "n't" word, ...) is dropped and every word after it, up to the next
punctuation mark or "but", gets the prefix ``not_``; so "never once boring"
becomes ``["not_once", "not_boring"]``. Punctuation itself is not emitted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

UNK = "<unk>"
NEGATION_PREFIX = "not_"

_TOKEN_RE = re.compile(r"[a-z0-9]+n't|[a-z0-9]+(?:'[a-z]+)?|[.,!?;:]")
_NEGATORS = frozenset(
    {
        "not",
        "no",
        "never",
        "nothing",
        "none",
        "nobody",
        "nowhere",
        "neither",
        "nor",
        "without",
        "hardly",
        "barely",
        "cannot",
    }
)
_SCOPE_BREAKERS = frozenset({".", ",", "!", "?", ";", ":", "but", "however", "although"})


def tokenize(text: str) -> list[str]:
    """Split a text into lowercase word tokens with negation marking.

    Args:
        text: Any string; curly apostrophes are treated like straight ones.

    Returns:
        The tokens, e.g. ``tokenize("Not good, but fun!")`` gives
        ``["not_good", "fun"]``.
    """
    tokens: list[str] = []
    negated = False
    for raw in _TOKEN_RE.findall(text.lower().replace("\u2019", "'")):
        if raw in _SCOPE_BREAKERS:
            negated = False
        elif raw in _NEGATORS or raw.endswith("n't"):
            negated = True
        else:
            word = raw.removesuffix("'s")
            tokens.append(NEGATION_PREFIX + word if negated else word)
    return tokens


def encode(texts: Iterable[str], vocab: Mapping[str, int]) -> tuple[list[int], list[int]]:
    """Turn texts into the flat ids and offsets that ``nn.EmbeddingBag`` takes.

    Unknown tokens map to ``vocab["<unk>"]``; a text with no tokens at all is
    encoded as a single ``<unk>`` so that every bag is non-empty.

    Args:
        texts: The texts of one batch.
        vocab: Token to id, as saved in ``vocab.json``; must contain ``"<unk>"``.

    Returns:
        ``(ids, offsets)``: all token ids concatenated, and the start of each
        text's ids within them (``len(offsets) == number of texts``).
    """
    unk = vocab[UNK]
    ids: list[int] = []
    offsets: list[int] = []
    for text in texts:
        offsets.append(len(ids))
        ids.extend(vocab.get(token, unk) for token in tokenize(text) or [UNK])
    return ids, offsets
