"""The text generator's training text: this project's own docs, split into train and held out.

``README.md`` and ``docs/*.md``, read at train time (so the model follows the docs). Every tenth
block of 1,000 characters is held out and used only for the reported loss.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BLOCK = 1000  # characters per block of the train / held-out split
HELDOUT_EVERY = 10  # every tenth block is held out


def read_corpus(repo: Path = REPO) -> str:
    """README.md then docs/*.md (sorted), joined by blank lines."""
    paths = [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]
    return "\n\n".join(path.read_text(encoding="utf-8") for path in paths)


def split(text: str) -> tuple[str, str]:
    """``(train, heldout)``: every HELDOUT_EVERY-th block of BLOCK characters held out."""
    blocks = [text[i : i + BLOCK] for i in range(0, len(text), BLOCK)]
    heldout = blocks[HELDOUT_EVERY - 1 :: HELDOUT_EVERY]
    train = [b for i, b in enumerate(blocks) if i % HELDOUT_EVERY != HELDOUT_EVERY - 1]
    return "".join(train), "".join(heldout)
