"""The sentiment classifier: a mean bag of word embeddings and a linear layer.

Self-contained (imports only torch) because it is copied into the model directory
and the server instantiates ``SentimentClassifier()`` with no arguments.
"""

from __future__ import annotations

import torch
from torch import nn

# Rows in the embedding table; train.py caps the vocabulary (with <unk>) at this size.
VOCAB_SIZE = 16384
EMBED_DIM = 64
NUM_CLASSES = 2


class SentimentClassifier(nn.Module):
    """Bag-of-words text classifier (``nn.EmbeddingBag`` in mean mode + ``nn.Linear``).

    The defaults are the trained sizes, so ``SentimentClassifier()`` matches
    ``model.pt``.

    Args:
        vocab_size: Rows in the embedding table (ids must be below this).
        embed_dim: Embedding width.
        num_classes: Output classes (0 = negative, 1 = positive).
    """

    def __init__(
        self,
        vocab_size: int = VOCAB_SIZE,
        embed_dim: int = EMBED_DIM,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, mode="mean")
        self.classifier = nn.Linear(embed_dim, num_classes)

    def forward(self, token_ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Score a batch of texts.

        Args:
            token_ids: 1-D int64 tensor, the token ids of all texts concatenated.
            offsets: 1-D int64 tensor, where each text starts in ``token_ids``.

        Returns:
            Logits of shape ``(len(offsets), num_classes)``.
        """
        logits: torch.Tensor = self.classifier(self.embedding(token_ids, offsets))
        return logits
