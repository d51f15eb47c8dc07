"""Train the sentiment example model.

Training data: the sentences in ``data/train.tsv`` (written for this project) plus
the words of VADER's human-rated lexicon (``vaderSentiment/vader_lexicon.txt``),
each word a one-word example labelled by the sign of its mean rating, and its
negation ("not <word>") as an example with the opposite label. The model is
evaluated on ``data/heldout.tsv``, whose sentences do not appear in training.

Usage::

    python examples/sentiment/train.py --out build/sentiment-model
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch
from model import VOCAB_SIZE, SentimentClassifier
from text_tokenizer import UNK, encode, tokenize
from torch import nn

# examples/, for what the training scripts share (only this script's folder is on the path)
sys.path.append(str(Path(__file__).resolve().parents[1]))
from training import configure_torch, parse_training_args

HERE = Path(__file__).resolve().parent
LABELS = ("negative", "positive")
CHECKS = {
    "This is an amazing movie.": "positive",
    "A dull, lifeless waste of two hours.": "negative",
}
MIN_LEXICON_RATING = 1.0  # skip near-neutral lexicon words (ratings run -4..+4)
SENTENCE_REPEATS = 4  # in-domain sentences count more than isolated words
EPOCHS = 15
BATCH_SIZE = 256
LEARNING_RATE = 0.02
UNK_DROPOUT = 0.05  # so the <unk> embedding learns to mean "no evidence"

Example = tuple[list[str], int]


def read_tsv(path: Path) -> list[tuple[str, int]]:
    """Read ``label<TAB>sentence`` lines (label ``positive`` or ``negative``)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            label, sentence = line.split("\t", 1)
            rows.append((sentence.strip(), LABELS.index(label.strip())))
    return rows


def lexicon_examples(min_rating: float = MIN_LEXICON_RATING) -> list[Example]:
    """One-word examples (and their negations) from VADER's lexicon."""
    lexicon = resources.files("vaderSentiment") / "vader_lexicon.txt"
    examples: list[Example] = []
    for line in lexicon.read_text(encoding="utf-8").splitlines():
        word, rating = line.split("\t")[:2]
        tokens = tokenize(word)
        if len(tokens) != 1 or abs(float(rating)) < min_rating:
            continue
        label = int(float(rating) > 0)
        examples.append((tokens, label))
        examples.append((tokenize(f"not {word}"), 1 - label))
    return examples


def build_vocab(examples: Sequence[Example], max_size: int = VOCAB_SIZE) -> dict[str, int]:
    """Token to id, most frequent first, ``<unk>`` as id 0, at most ``max_size`` entries."""
    counts = Counter(token for tokens, _ in examples for token in tokens)
    ranked = sorted(counts, key=lambda token: (-counts[token], token))
    return {token: i for i, token in enumerate([UNK, *ranked[: max_size - 1]])}


def train_model(examples: Sequence[Example], vocab: dict[str, int]) -> SentimentClassifier:
    """Fit a fresh classifier with Adam on shuffled mini-batches."""
    unk = vocab[UNK]
    bags = [torch.tensor([vocab.get(token, unk) for token in tokens]) for tokens, _ in examples]
    labels = torch.tensor([label for _, label in examples])
    model = SentimentClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(EPOCHS):
        for batch in torch.split(torch.randperm(len(bags)), BATCH_SIZE):
            chosen = [bags[i] for i in batch.tolist()]
            offsets = torch.tensor([0, *(len(bag) for bag in chosen[:-1])]).cumsum(0)
            token_ids = torch.cat(chosen)
            token_ids[torch.rand(len(token_ids)) < UNK_DROPOUT] = unk
            optimizer.zero_grad()
            loss = loss_fn(model(token_ids, offsets), labels[batch])
            loss.backward()
            optimizer.step()
    return model.eval()


def classify(model: nn.Module, texts: Sequence[str], vocab: dict[str, int]) -> list[int]:
    """Predicted class index per text."""
    ids, offsets = encode(texts, vocab)
    with torch.no_grad():
        logits = model(torch.tensor(ids), torch.tensor(offsets))
    predicted: list[int] = logits.argmax(dim=1).tolist()
    return predicted


def evaluate(model: nn.Module, vocab: dict[str, int]) -> dict[str, object]:
    """Held-out accuracy and the two sentence checks, as written to ``metrics.json``."""
    heldout = read_tsv(HERE / "data" / "heldout.tsv")
    predicted = classify(model, [text for text, _ in heldout], vocab)
    correct = sum(p == label for p, (_, label) in zip(predicted, heldout, strict=True))
    check_labels = [LABELS[i] for i in classify(model, list(CHECKS), vocab)]
    checks = {
        text: {"expected": expected, "predicted": got, "ok": got == expected}
        for (text, expected), got in zip(CHECKS.items(), check_labels, strict=True)
    }
    return {
        "heldout_accuracy": correct / len(heldout),
        "heldout_size": len(heldout),
        "checks": checks,
    }


def save(model: SentimentClassifier, vocab: dict[str, int], out: Path) -> None:
    """Write the weights, TorchScript, vocabulary, label names and source files."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated
        torch.jit.save(torch.jit.script(model), str(out / "model.ts"))
    (out / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    names = {str(i): name for i, name in enumerate(LABELS)}
    (out / "index_to_name.json").write_text(json.dumps(names, indent=2), encoding="utf-8")
    for source in ("model.py", "text_tokenizer.py"):
        shutil.copy(HERE / source, out / source)


def main(argv: Sequence[str] | None = None) -> None:
    """Train, evaluate on the held-out sentences and write the model directory."""
    args = parse_training_args(__doc__.splitlines()[0], argv)
    configure_torch(args.seed)
    started = time.perf_counter()
    sentences = [(tokenize(text), label) for text, label in read_tsv(HERE / "data" / "train.tsv")]
    examples = sentences * SENTENCE_REPEATS + lexicon_examples()
    vocab = build_vocab(examples)
    model = train_model(examples, vocab)
    train_seconds = time.perf_counter() - started
    metrics = evaluate(model, vocab)
    metrics |= {
        "train_sentences": len(sentences),
        "train_examples": len(examples),
        "vocab_size": len(vocab),
        "train_seconds": round(train_seconds, 2),
    }
    save(model, vocab, args.out)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    accuracy, size = metrics["heldout_accuracy"], metrics["heldout_size"]
    print(f"held-out accuracy: {accuracy:.3f} ({size} sentences)")
    print(f"checks: {metrics['checks']}")
    print(f"trained in {train_seconds:.1f}s; wrote {args.out}")


if __name__ == "__main__":
    main()
