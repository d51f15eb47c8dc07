"""A bar chart of served throughput as a share of the in-process limit, drawn with Pillow."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

WIDTH, ROW, LEFT, RIGHT, TOP = 1000, 34, 380, 170, 50
COLOURS = {
    "byoserve": (46, 110, 190),
    "plain": (150, 150, 150),
    "torchserve": (230, 120, 40),
    "limit": (60, 150, 80),
}


def draw_chart(rows: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """One bar per row (``label``, ``requests_per_s``, ``ratio``, ``kind``), scaled per model."""
    height = TOP + ROW * len(rows) + 30
    image = Image.new("RGB", (WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 12), title, fill="black")
    span = WIDTH - LEFT - RIGHT
    for index, row in enumerate(rows):
        y = TOP + index * ROW
        ratio = max(0.0, float(row["ratio"]))
        draw.text((10, y + 8), str(row["label"])[:58], fill="black")
        draw.rectangle(
            (LEFT, y + 4, LEFT + int(span * min(ratio, 1.2) / 1.2), y + ROW - 6),
            fill=COLOURS.get(str(row["kind"]), (46, 110, 190)),
        )
        text = f"{row['requests_per_s']:.0f} req/s  {ratio:.2f}x"
        draw.text((WIDTH - RIGHT + 8, y + 8), text, fill="black")
    limit_x = LEFT + int(span / 1.2)
    draw.line((limit_x, TOP - 6, limit_x, height - 24), fill=(200, 40, 40), width=2)
    draw.text((limit_x - 40, height - 20), "limit = 1.0x", fill=(200, 40, 40))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
