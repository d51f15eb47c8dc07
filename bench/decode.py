"""Image decode per image: Pillow, the alternatives on the package index, and the built-ins' path.

Usage: .venv/bin/python bench/decode.py [--rounds 15] [--target-ms 20]

Samples: a digit PNG of examples/digits/make_images.py (28x28), the bench's digit PNG (28x28,
noisy) and 224x224 JPEG, and a 640x480 photo (scikit-learn's china.jpg, resized) as JPEG and PNG.

First table: each decoder, bytes to a uint8 array of the image's own mode (L or RGB). Decoders
that are not installed are listed as such (imagecodecs is a dependency; pyspng, simplejpeg and
opencv-python-headless are not: install them beside Pillow to compare; pillow-simd replaces
Pillow, so run this in a venv that has it instead). The last two rows are the image codec as the
built-ins call it, to the Pillow image they use: before, Pillow's open and load; now, with the
body marked PixelsOnly, the header, chunk and pixel-budget checks and libspng (imagecodecs) for a
plain 8-bit PNG, Pillow for anything else (JPEG included).

Second table: the built-ins' whole image path, bytes to the model's input array (``digit``:
8x8 floats; ``image_classifier``: 3x224x224 after resize, crop and normalisation), with Pillow
decoding (as before) and with the fast path (as now).

Times are CPU time of this process per image (so other load on a shared machine counts less than
in wall time): min / median of interleaved rounds, in microseconds. "diff": the largest difference
from Pillow's pixels (or model input), 0 when identical.
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/decode.py`

from handlers.builtins.digit import DigitClassifier  # noqa: E402
from handlers.builtins.image_classifier import ImageClassifier  # noqa: E402
from serve.codecs.images import ImageCodec, PixelsOnly  # noqa: E402

Pixels = np.ndarray[Any, Any]
Decode = Callable[[bytes], Pixels]
CODEC = ImageCodec()


def pillow(body: bytes) -> Pixels:
    image = Image.open(io.BytesIO(body))
    image.load()
    return np.asarray(image)


@dataclass(frozen=True)
class Sample:
    name: str
    kind: str  # "png" or "jpeg"
    body: bytes


@dataclass(frozen=True)
class Decoder:
    name: str
    kinds: tuple[str, ...]
    decode: Callable[[bytes], Any] | None  # what is timed; None: not installed
    compare: Decode = pillow  # what its pixels are compared with
    pixels: Callable[[Any], Pixels] = np.asarray  # its result as an array, for that comparison


def _encode(image: Image.Image, image_format: str, **options: int) -> bytes:
    out = io.BytesIO()
    image.save(out, format=image_format, **options)
    return out.getvalue()


def samples() -> list[Sample]:
    """The images measured (see the module docstring)."""
    sys.path.insert(0, str(ROOT / "examples" / "digits"))
    import make_images  # examples/digits/make_images.py

    from bench.models import digit_png, photo_jpeg

    with tempfile.TemporaryDirectory() as folder:
        make_images.write_images(Path(folder), 1)
        digit = (Path(folder) / "digit-000-28.png").read_bytes()
    datasets = importlib.import_module("sklearn.datasets").__file__ or ""
    china = Image.open(Path(datasets).parent / "images" / "china.jpg")
    # np.asarray drops the ICC profile, which libpng would warn about on stderr
    photo = Image.fromarray(np.asarray(china)).resize((640, 480), Image.Resampling.BILINEAR)
    bench_digit, bench_jpeg = digit_png(), photo_jpeg()
    return [
        Sample(f"digit 28x28 L PNG, {len(digit)} B", "png", digit),
        Sample(f"bench digit 28x28 L PNG, {len(bench_digit)} B", "png", bench_digit),
        Sample(f"bench 224x224 RGB JPEG, {len(bench_jpeg) // 1000} kB", "jpeg", bench_jpeg),
        Sample("640x480 RGB JPEG q90", "jpeg", _encode(photo, "JPEG", quality=90)),
        Sample("640x480 RGB PNG", "png", _encode(photo, "PNG")),
    ]


def pillow_tobytes(body: bytes) -> Pixels:
    image = Image.open(io.BytesIO(body))
    image.load()
    channels = len(image.getbands())
    shape = (image.height, image.width, channels) if channels > 1 else image.size[::-1]
    return np.frombuffer(image.tobytes(), np.uint8).reshape(shape)


def pillow_draft(body: bytes) -> Pixels:
    """A JPEG decoded at half size by libjpeg's DCT scaling (``Image.draft``)."""
    image = Image.open(io.BytesIO(body))
    image.draft(image.mode, (image.width // 2, image.height // 2))
    image.load()
    return np.asarray(image)


def pillow_reduced(body: bytes) -> Pixels:
    """What ``pillow_draft`` is compared with: the full decode halved by ``Image.reduce``."""
    return np.asarray(Image.fromarray(pillow(body)).reduce(2))


def codec_before(body: bytes) -> Image.Image:
    return CODEC.decode(body, {})


def codec_now(body: bytes) -> Image.Image:
    return CODEC.decode(PixelsOnly(body), {})


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _opencv() -> Decode | None:
    cv2 = _optional("cv2")
    if cv2 is None:
        return None
    cv2.setNumThreads(1)

    def decode(body: bytes) -> Pixels:
        pixels: Pixels = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB) if pixels.ndim == 3 else pixels

    return decode


def decoders() -> list[Decoder]:
    """Pillow's ways, each alternative (or a stand-in saying it is not installed), byoserve's."""
    spng = _optional("pyspng")
    simplejpeg = _optional("simplejpeg")
    codecs = _optional("imagecodecs")
    version = PIL.__version__
    name = f"pillow-simd {version}" if ".post" in version else f"Pillow {version}"
    return [
        Decoder(f"{name}: open, load, np.asarray", ("png", "jpeg"), pillow),
        Decoder("Pillow, np.frombuffer(tobytes())", ("png", "jpeg"), pillow_tobytes),
        Decoder("Pillow, draft to 1/2 size", ("jpeg",), pillow_draft, pillow_reduced),
        Decoder("pyspng (libspng)", ("png",), spng and (lambda body: spng.load(body))),
        Decoder("imagecodecs.spng_decode (libspng)", ("png",), codecs and codecs.spng_decode),
        Decoder("imagecodecs.png_decode (libpng)", ("png",), codecs and codecs.png_decode),
        Decoder("opencv cv2.imdecode", ("png", "jpeg"), _opencv()),
        Decoder(
            "simplejpeg (libjpeg-turbo)",
            ("jpeg",),
            simplejpeg and (lambda body: simplejpeg.decode_jpeg(body, colorspace="RGB")),
        ),
        Decoder("imagecodecs.jpeg8_decode (turbo)", ("jpeg",), codecs and codecs.jpeg8_decode),
        Decoder("byoserve codec before: Pillow (a Pillow image)", ("png", "jpeg"), codec_before),
        Decoder("byoserve codec now (a Pillow image)", ("png", "jpeg"), codec_now),
    ]


def builtin_paths() -> list[Decoder]:
    """Bytes to the model's input through each built-in, decoded by Pillow and by the fast path."""
    digit = DigitClassifier.__new__(DigitClassifier)
    digit.configure({})  # 8x8, inverted when dark on light: the digits example
    classifier = ImageClassifier.__new__(ImageClassifier)
    classifier.configure({})  # resize 256, crop 224, ImageNet normalisation

    def digit_before(body: bytes) -> Pixels:
        return digit.image_digit(codec_before(body))

    def classifier_before(body: bytes) -> Pixels:
        return classifier.preprocess(codec_before(body))

    return [
        Decoder("digit, before", ("png",), digit_before, digit_before),
        Decoder(
            "digit, now",
            ("png",),
            lambda body: digit.image_digit(codec_now(body)),
            digit_before,
        ),
        Decoder("image_classifier, before", ("png", "jpeg"), classifier_before, classifier_before),
        Decoder(
            "image_classifier, now",
            ("png", "jpeg"),
            lambda body: classifier.preprocess(codec_now(body)),
            classifier_before,
        ),
    ]


def cpu_per_call(decode: Callable[[bytes], Any], body: bytes, calls: int) -> float:
    """CPU seconds of one call, averaged over ``calls`` calls."""
    began = time.process_time_ns()
    for _ in range(calls):
        decode(body)
    return (time.process_time_ns() - began) / calls / 1e9


def difference(decoder: Decoder, body: bytes) -> str:
    """The largest difference from the reference's pixels, or why there is none."""
    assert decoder.decode is not None
    reference = decoder.compare(body)
    try:
        pixels = decoder.pixels(decoder.decode(body))
    except Exception as exc:  # a decoder that refuses a sample says so in the table
        return f"error: {type(exc).__name__}"
    if pixels.shape != reference.shape:
        return f"shape {pixels.shape}"
    diff = np.abs(pixels.astype(np.float64) - reference.astype(np.float64)).max()
    return f"{diff:g}"


def table(found: list[Decoder], images: list[Sample], rounds: int, target: float) -> list[str]:
    """Interleaved rounds (each round times every case once, so drifting load hits all alike)."""
    cells: dict[tuple[str, str], str] = {}
    cases: list[tuple[str, str, Callable[[bytes], Any], bytes, int]] = []
    for sample in images:
        for decoder in found:
            if sample.kind not in decoder.kinds or decoder.decode is None:
                continue
            key = (decoder.name, sample.name)
            cells[key] = difference(decoder, sample.body)
            if not cells[key].startswith(("error", "shape")):
                once = max(cpu_per_call(decoder.decode, sample.body, 3), 1e-7)
                cases.append((*key, decoder.decode, sample.body, max(3, int(target / once))))
    times: dict[tuple[str, str], list[float]] = {(row, col): [] for row, col, *_ in cases}
    for _ in range(rounds):
        for row, col, decode, body, calls in cases:
            times[row, col].append(cpu_per_call(decode, body, calls))
    for key, values in times.items():
        low, middle = min(values) * 1e6, statistics.median(values) * 1e6
        cells[key] = f"{low:,.1f} / {middle:,.1f} (diff {cells[key]})"
    lines = ["| | " + " | ".join(s.name for s in images) + " |", "|---" * (len(images) + 1) + "|"]
    for decoder in found:
        shown = [cells.get((decoder.name, s.name), "-") for s in images]
        if decoder.decode is None:
            shown = ["not installed"] + [""] * (len(images) - 1)
        lines.append(f"| {decoder.name} | " + " | ".join(shown) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument(
        "--target-ms", type=float, default=20.0, help="CPU ms per case and round (default 20)"
    )
    args = parser.parse_args(argv)
    images = samples()
    print(f"CPU us per image, min / median of {args.rounds} rounds")
    print("\nDecode to a uint8 array (diff: max |pixel - Pillow's|)\n")
    for line in table(decoders(), images, args.rounds, args.target_ms / 1000):
        print(line)
    print("\nBuilt-ins, bytes to the model's input (diff: max |input - before|)\n")
    for line in table(builtin_paths(), images, args.rounds, args.target_ms / 1000):
        print(line)


if __name__ == "__main__":
    main()
