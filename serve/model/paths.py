"""Whether a path stays in the directory it must: a file a manifest or a setting names in a model
directory, a model a request names in the model store.

Links are followed first: a ``weights.pt`` that is a symlink to ``/etc/shadow`` is outside, as
is ``../other/model.pt``.
"""

from __future__ import annotations

from pathlib import Path


def inside(root: Path, path: Path) -> bool:
    """Whether ``path``, its links resolved, is ``root`` or below it (``root``'s links resolved
    too: a model directory may itself be reached through one)."""
    return path.resolve().is_relative_to(root.resolve())
