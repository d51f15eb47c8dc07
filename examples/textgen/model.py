"""The text generator: a character-level GRU language model.

Self-contained (imports only torch) because it is copied into the model directory and
``CharGRU()`` with no arguments must match ``model.pt``.
"""

from __future__ import annotations

import torch
from torch import nn

# Characters the model knows: id 0 is <unk>, then "\n" and printable ASCII (train.py writes
# them to vocab.json in this order). Fixed, so the docs gaining a character changes nothing.
VOCAB_SIZE = 97
EMBED_DIM = 48
HIDDEN_SIZE = 128


class CharGRU(nn.Module):
    """Next-character model: embedding, one GRU layer, a linear layer to the vocabulary.

    The defaults are the trained sizes, so ``CharGRU()`` matches ``model.pt``.

    Args:
        vocab_size: Characters (ids must be below this).
        embed_dim: Embedding width.
        hidden_size: GRU state width.
    """

    def __init__(
        self,
        vocab_size: int = VOCAB_SIZE,
        embed_dim: int = EMBED_DIM,
        hidden_size: int = HIDDEN_SIZE,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.gru = nn.GRU(embed_dim, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(
        self, ids: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Score the next character after each position.

        Args:
            ids: int64 ``(batch, length)`` character ids.
            state: the GRU state after the previous characters, ``(1, batch, hidden_size)``,
                or None to start fresh.

        Returns:
            Logits ``(batch, length, vocab_size)`` and the state after the last character,
            to pass back in with the next characters.
        """
        outputs, state = self.gru(self.embedding(ids), state)
        logits: torch.Tensor = self.head(outputs)
        return logits, state
