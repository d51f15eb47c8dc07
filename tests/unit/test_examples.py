"""The example models: trained for real, then checked against their targets.

The training scripts run as subprocesses, exactly as the make targets run them,
into session-scoped temporary directories.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import GeneratorType, ModuleType
from typing import Any

import pytest
import torch
from PIL import Image

from handlers.context import user_error

pytestmark = [
    pytest.mark.slow,
    # The TorchScript files are a product promise; torch 2.13 merely warns that jit is deprecated.
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning"),
]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SENTIMENT_DATA = EXAMPLES / "sentiment" / "data"
CHECKS = {
    "This is an amazing movie.": "positive",
    "A dull, lifeless waste of two hours.": "negative",
}


def run_script(script: Path, *args: str | Path) -> None:
    """Run an example script with this interpreter; fail the test on a non-zero exit."""
    subprocess.run([sys.executable, str(script), *map(str, args)], check=True)


def load_example(relative: str) -> ModuleType:
    """Import ``examples/<relative>`` under a unique name, its folder importable meanwhile."""
    path = EXAMPLES / relative
    name = "example_" + relative.removesuffix(".py").replace("/", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def read_tsv(path: Path) -> list[tuple[str, str]]:
    """``(label, sentence)`` rows of a ``label<TAB>sentence`` file."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            label, sentence = line.split("\t", 1)
            rows.append((label, sentence))
    return rows


def module_classes(path: Path) -> list[str]:
    """Names of the classes a source file defines at top level."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node.name for node in tree.body if isinstance(node, ast.ClassDef)]


@pytest.fixture(scope="session")
def sentiment_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sentiment-model")
    run_script(EXAMPLES / "sentiment" / "train.py", "--out", out)
    return out


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits-model")
    run_script(EXAMPLES / "digits" / "train.py", "--out", out)
    return out


@pytest.fixture(scope="session")
def digit_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digit-images")
    run_script(EXAMPLES / "digits" / "make_images.py", "--out", out, "--count", "60")
    return out


@pytest.fixture(scope="session")
def sentiment_predict() -> ModuleType:
    return load_example("sentiment/predict.py")


@pytest.fixture(scope="session")
def digits_predict() -> ModuleType:
    return load_example("digits/predict.py")


# --- sentiment ---------------------------------------------------------------------------


def test_sentiment_writes_model_directory(sentiment_dir: Path) -> None:
    expected = {
        "model.pt",
        "model.ts",
        "model.py",
        "text_tokenizer.py",
        "vocab.json",
        "index_to_name.json",
        "metrics.json",
    }
    assert expected <= {path.name for path in sentiment_dir.iterdir()}
    names = json.loads((sentiment_dir / "index_to_name.json").read_text())
    assert names == {"0": "negative", "1": "positive"}
    vocab = json.loads((sentiment_dir / "vocab.json").read_text())
    assert vocab["<unk>"] == 0
    assert len(vocab) <= 16384


def test_sentiment_model_file_defines_one_module() -> None:
    assert module_classes(EXAMPLES / "sentiment" / "model.py") == ["SentimentClassifier"]


def test_heldout_sentences_are_many_balanced_and_unseen() -> None:
    heldout = read_tsv(SENTIMENT_DATA / "heldout.tsv")
    train = read_tsv(SENTIMENT_DATA / "train.tsv")
    labels = [label for label, _ in heldout]
    assert len(heldout) >= 100
    assert labels.count("positive") == labels.count("negative")
    seen = {sentence.strip().lower() for _, sentence in train}
    assert not [s for _, s in heldout if s.strip().lower() in seen]


def test_sentiment_heldout_accuracy(sentiment_dir: Path, sentiment_predict: ModuleType) -> None:
    heldout = read_tsv(SENTIMENT_DATA / "heldout.tsv")
    results = sentiment_predict.predict(sentiment_dir, [sentence for _, sentence in heldout])
    correct = sum(r["label"] == label for r, (label, _) in zip(results, heldout, strict=True))
    accuracy = correct / len(heldout)
    assert accuracy >= 0.85
    metrics = json.loads((sentiment_dir / "metrics.json").read_text())
    assert metrics["heldout_accuracy"] == pytest.approx(accuracy)


def test_sentiment_labels_the_reference_sentences(
    sentiment_dir: Path, sentiment_predict: ModuleType
) -> None:
    results = sentiment_predict.predict(sentiment_dir, list(CHECKS))
    assert [r["label"] for r in results] == list(CHECKS.values())
    assert all(0.5 <= r["score"] <= 1.0 for r in results)
    metrics = json.loads((sentiment_dir / "metrics.json").read_text())
    assert all(check["ok"] for check in metrics["checks"].values())


def test_sentiment_handles_negation(sentiment_dir: Path, sentiment_predict: ModuleType) -> None:
    results = sentiment_predict.predict(sentiment_dir, ["Not good.", "Never boring."])
    assert [r["label"] for r in results] == ["negative", "positive"]


def test_sentiment_torchscript_matches_state_dict(
    sentiment_dir: Path, sentiment_predict: ModuleType
) -> None:
    tokenizer = sentiment_predict.load_module(sentiment_dir / "text_tokenizer.py", "tok")
    vocab = json.loads((sentiment_dir / "vocab.json").read_text())
    texts = [sentence for _, sentence in read_tsv(SENTIMENT_DATA / "heldout.tsv")]
    ids, offsets = (torch.tensor(x) for x in tokenizer.encode(texts, vocab))
    eager = sentiment_predict.load_model(sentiment_dir)
    scripted = torch.jit.load(str(sentiment_dir / "model.ts"))
    with torch.no_grad():
        torch.testing.assert_close(scripted(ids, offsets), eager(ids, offsets))


# --- digits ------------------------------------------------------------------------------


def test_digits_writes_model_directory(digits_dir: Path) -> None:
    expected = {"model.pt", "model.ts", "model.py", "index_to_name.json", "metrics.json"}
    assert expected <= {path.name for path in digits_dir.iterdir()}
    names = json.loads((digits_dir / "index_to_name.json").read_text())
    assert names == {str(i): str(i) for i in range(10)}


def test_digits_model_file_defines_one_module() -> None:
    assert module_classes(EXAMPLES / "digits" / "model.py") == ["DigitsCNN"]


def test_digits_heldout_accuracy(digits_dir: Path, digits_predict: ModuleType) -> None:
    _, images, _, labels = load_example("digits/dataset.py").load_split()
    model = digits_predict.load_model(digits_dir)
    with torch.no_grad():
        predicted = model(torch.from_numpy(images).unsqueeze(1)).argmax(dim=1)
    accuracy = float((predicted == torch.from_numpy(labels)).float().mean())
    assert accuracy >= 0.95
    metrics = json.loads((digits_dir / "metrics.json").read_text())
    assert metrics["heldout_accuracy"] == pytest.approx(accuracy)


def test_digits_torchscript_matches_state_dict(
    digits_dir: Path, digits_predict: ModuleType
) -> None:
    images = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    eager = digits_predict.load_model(digits_dir)
    scripted = torch.jit.load(str(digits_dir / "model.ts"))
    with torch.no_grad():
        torch.testing.assert_close(scripted(images), eager(images))


@pytest.mark.parametrize("size", [8, 28])
def test_digits_pngs_classified_after_resizing(
    digits_dir: Path, digits_predict: ModuleType, digit_images: Path, size: int
) -> None:
    labels = json.loads((digit_images / "labels.json").read_text())
    names = [name for name in labels if name.endswith(f"-{size}.png")]
    images = [Image.open(digit_images / name) for name in names]
    assert len(images) == 60
    assert all(image.size == (size, size) and image.mode == "L" for image in images)
    results = digits_predict.predict(digits_dir, images)
    correct = sum(r["label"] == labels[name] for r, name in zip(results, names, strict=True))
    assert correct / len(names) >= 0.95


def test_digits_training_is_deterministic(digits_dir: Path, tmp_path: Path) -> None:
    run_script(EXAMPLES / "digits" / "train.py", "--out", tmp_path)
    first = torch.load(digits_dir / "model.pt", weights_only=True)
    second = torch.load(tmp_path / "model.pt", weights_only=True)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)


# --- textgen -----------------------------------------------------------------------------

TEXTGEN_REQUEST = {"prompt": "The server ", "max_new_tokens": 60, "seed": 7, "chunk": 8}


@pytest.fixture(scope="session")
def textgen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("textgen-model")
    run_script(EXAMPLES / "textgen" / "train.py", "--out", out)
    return out


@pytest.fixture(scope="session")
def textgen_predict() -> ModuleType:
    return load_example("textgen/predict.py")


@pytest.fixture(scope="session")
def textgen(textgen_dir: Path, textgen_predict: ModuleType) -> tuple[ModuleType, Any]:
    """The model directory's own inference.py and the model its model_fn loaded."""
    inference = textgen_predict.load_inference(textgen_dir)
    return inference, inference.model_fn(str(textgen_dir))


def generate_text(textgen: tuple[ModuleType, Any], request: dict[str, Any]) -> list[str]:
    inference, model = textgen
    data = inference.input_fn(json.dumps(request), "application/json")
    return list(inference.predict_fn(data, model))


def test_textgen_writes_model_directory(textgen_dir: Path) -> None:
    expected = {"model.pt", "model.py", "inference.py", "vocab.json", "metrics.json"}
    assert expected <= {path.name for path in textgen_dir.iterdir()}
    vocab = json.loads((textgen_dir / "vocab.json").read_text())
    assert vocab[:2] == ["", "\n"] and len(vocab) == len(set(vocab)) == 97
    assert module_classes(EXAMPLES / "textgen" / "model.py") == ["CharGRU"]


def test_textgen_is_small_and_learns_the_docs(textgen_dir: Path, textgen: Any) -> None:
    """Held-out loss in nats per character; a model that learnt nothing scores ln(96) = 4.56,
    one that learnt only character frequencies 3.47."""
    corpus = load_example("textgen/corpus.py")
    _, heldout = corpus.split(corpus.read_corpus())
    _, model = textgen
    ids = model.encode(heldout)
    with torch.inference_mode():
        logits, _ = model.network(ids[:, :-1])
    loss = float(torch.nn.functional.cross_entropy(logits[0], ids[0, 1:]))
    assert loss < 1.75
    metrics = json.loads((textgen_dir / "metrics.json").read_text())
    assert metrics["heldout_loss"] == pytest.approx(loss, abs=1e-3)
    assert sum(p.numel() for p in model.network.parameters()) <= 300_000


def test_textgen_predict_fn_streams_pieces_that_join_to_the_text(textgen: Any) -> None:
    inference, model = textgen
    data = inference.input_fn(json.dumps(TEXTGEN_REQUEST), "application/json")
    pieces = inference.predict_fn(data, model)
    assert isinstance(pieces, GeneratorType)
    first = next(pieces)
    rest = list(pieces)
    assert len(first) == 8 and all(len(piece) == 8 for piece in rest[:-1])
    assert len(first + "".join(rest)) == 60
    assert not (first + "".join(rest)).startswith("The server ")  # the prompt is not repeated


def test_textgen_output_is_deterministic_for_a_seed(textgen: Any) -> None:
    text = "".join(generate_text(textgen, TEXTGEN_REQUEST))
    assert "".join(generate_text(textgen, TEXTGEN_REQUEST)) == text
    one_piece = generate_text(textgen, {**TEXTGEN_REQUEST, "chunk": 1000})
    assert one_piece == [text]  # how the text is cut into pieces does not change it
    assert "".join(generate_text(textgen, {**TEXTGEN_REQUEST, "seed": 8})) != text


def test_textgen_output_fn_writes_each_format(textgen: Any) -> None:
    inference, _ = textgen
    assert inference.output_fn('a "b"\n', "text/plain") == 'a "b"\n'
    line = inference.output_fn('a "b"\n', "application/jsonlines")
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == {"text": 'a "b"\n'}
    assert json.loads(inference.output_fn("x", "text/event-stream")) == {"text": "x"}
    assert json.loads(inference.output_fn("x", "application/json")) == {"text": "x"}


def test_textgen_reference_prints_what_the_handler_makes(
    textgen_dir: Path, textgen_predict: ModuleType, textgen: Any
) -> None:
    pieces = list(textgen_predict.generate(textgen_dir, TEXTGEN_REQUEST))
    assert pieces == generate_text(textgen, TEXTGEN_REQUEST)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("not json", 400),
        ("[1, 2]", 400),
        ('{"max_tokens": 5}', 400),
        ('{"prompt": 5}', 400),
        (json.dumps({"prompt": "x" * 4001}), 400),
        ('{"max_new_tokens": 0}', 400),
        ('{"max_new_tokens": 2001}', 400),
        ('{"max_new_tokens": 2.5}', 400),
        ('{"max_new_tokens": true}', 400),
        ('{"temperature": 0}', 400),
        ('{"temperature": -1}', 400),
        ('{"temperature": "hot"}', 400),
        ('{"top_k": 97}', 400),
        ('{"top_k": -1}', 400),
        ('{"seed": -1}', 400),
        ('{"chunk": 0}', 400),
    ],
)
def test_textgen_bad_request_is_a_client_error(textgen: Any, body: str, status: int) -> None:
    inference, _ = textgen
    with pytest.raises(ValueError) as caught:
        inference.input_fn(body, "application/json")
    assert caught.value.error_code == status
    assert user_error(caught.value).status_code == status  # what the server answers


def test_textgen_refuses_other_types(textgen: Any) -> None:
    inference, _ = textgen
    with pytest.raises(ValueError) as wrong_type:
        inference.input_fn(b"prompt", "text/csv")
    assert wrong_type.value.error_code == 415
    with pytest.raises(ValueError) as wrong_accept:
        inference.output_fn("x", "image/png")
    assert wrong_accept.value.error_code == 406
    assert "text/plain" in str(wrong_accept.value)


def test_textgen_training_is_deterministic(textgen_dir: Path, tmp_path: Path) -> None:
    run_script(EXAMPLES / "textgen" / "train.py", "--out", tmp_path)
    first = torch.load(textgen_dir / "model.pt", weights_only=True)
    second = torch.load(tmp_path / "model.pt", weights_only=True)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
