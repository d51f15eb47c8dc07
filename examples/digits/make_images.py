"""Write held-out digits as PNGs for tests and demos.

For each of the first ``--count`` held-out images (the same split ``train.py``
holds out, so the model never saw them) it writes ``digit-NNN-8.png`` (the 8x8
original) and ``digit-NNN-28.png`` (upscaled to 28x28, nearest neighbour), both
8-bit grayscale with light strokes (255) on a dark background (0), plus
``labels.json`` mapping each file name to its digit.

Usage::

    python examples/digits/make_images.py --out build/digit-images --count 20
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from dataset import load_split
from PIL import Image

SIZES = (8, 28)


def write_images(out: Path, count: int) -> dict[str, str]:
    """Write ``count`` held-out digits at each size; return file name to label."""
    _, images, _, labels = load_split()
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for i, (pixels, label) in enumerate(zip(images[:count], labels[:count], strict=True)):
        image = Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="L")
        for size in SIZES:
            name = f"digit-{i:03d}-{size}.png"
            image.resize((size, size), Image.Resampling.NEAREST).save(out / name)
            written[name] = str(label)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``--out`` and ``--count`` and write the images and ``labels.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--count", type=int, default=20, help="digits to write (max 360)")
    args = parser.parse_args(argv)
    labels = write_images(args.out, args.count)
    (args.out / "labels.json").write_text(json.dumps(labels, indent=2), encoding="utf-8")
    print(f"wrote {len(labels)} images to {args.out}")


if __name__ == "__main__":
    main()
