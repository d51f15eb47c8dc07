"""Load a PyTorch model from a model directory without user code: the default ``model_fn``.

Formats, in the order they are recognised: a ``torch.export`` program (``.pt2``), TorchScript, a
``state_dict`` plus a model file defining the ``nn.Module`` (loaded with ``weights_only=True``),
and, only on explicit opt-in, a whole pickled module (unpickling runs arbitrary code).
"""

from __future__ import annotations

import inspect
import logging
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from serve.contract import HandlerLoadError
from serve.model.manifest import Manifest
from serve.model.namespace import import_file
from serve.model.paths import inside

logger = logging.getLogger(__name__)

PREFERRED_NAMES = ("model.pt", "model.pth", "model.ts", "model.pt2")
SUFFIXES = (".pt", ".pth", ".pt2")
MODEL_FILE = "model.py"
OPT_IN = "BYOSERVE_ALLOW_PICKLED_MODELS=true"


def device_for(gpu_id: int | None) -> str:
    """The torch device string for a worker's GPU: ``"cpu"`` or ``"cuda:N"``."""
    return "cpu" if gpu_id is None else f"cuda:{gpu_id}"


def load_model(
    model_dir: Path,
    manifest: Manifest | Mapping[str, Any],
    *,
    device: str = "cpu",
    allow_pickled: bool = False,
) -> Any:
    """Load the model file in ``model_dir``, in eval mode, on ``device``.

    Args:
        model_dir: the extracted model directory.
        manifest: the archive manifest (``context.manifest`` will do); ``model.serializedFile``
            and ``model.modelFile`` are used.
        device: where the model goes, e.g. ``"cpu"`` or ``"cuda:0"``.
        allow_pickled: whether a whole pickled module may be unpickled.

    Returns:
        The model: a ``torch.nn.Module`` (scripted, exported or eager).

    Raises:
        HandlerLoadError: no model file, an ambiguous one, or one that cannot be loaded.
    """
    manifest = _typed(manifest)
    path = find_serialized_file(model_dir, manifest)
    logger.info("loading model %s onto %s", path, device)
    try:
        model = _load(path, model_dir, manifest, device, allow_pickled)
    except HandlerLoadError:
        raise
    except Exception as exc:
        raise HandlerLoadError(f"{path.name}: cannot load: {type(exc).__name__}: {exc}") from exc
    return model


def find_serialized_file(model_dir: Path, manifest: Manifest | Mapping[str, Any]) -> Path:
    """The serialized model: the manifest's ``model.serializedFile``, else ``model.pt`` (``.pth``,
    ``.ts``, ``.pt2``), else the only ``*.pt``/``*.pth``/``*.pt2`` file."""
    named = _typed(manifest).serialized_file
    if named:
        path = _inside(model_dir, str(named), "serializedFile")
        if not path.is_file():
            raise HandlerLoadError(f"manifest model.serializedFile {named!r}: no such file")
        return path
    for name in PREFERRED_NAMES:
        if (model_dir / name).is_file():
            return model_dir / name
    found = sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in SUFFIXES)
    if len(found) == 1:
        return found[0]
    if not found:
        raise HandlerLoadError(
            f"no model file in {model_dir}: expected model.pt (TorchScript, torch.export or a "
            "state_dict with model.py), or a code/inference.py defining model_fn"
        )
    names = ", ".join(p.name for p in found)
    raise HandlerLoadError(
        f"{model_dir} holds several model files ({names}); name one in the manifest's "
        "model.serializedFile or call one model.pt"
    )


def _typed(manifest: Manifest | Mapping[str, Any]) -> Manifest:
    """A handler may pass ``context.manifest``, the document itself."""
    return manifest if isinstance(manifest, Manifest) else Manifest.from_raw(manifest)


def _inside(root: Path, name: str, what: str) -> Path:
    path = root / name
    if not inside(root, path):
        raise HandlerLoadError(f"manifest model.{what} {name!r} is outside {root}")
    return path


def _archive_kind(path: Path) -> str:
    """``"export"``, ``"torchscript"`` or ``"pickle"`` (a state_dict or a whole module)."""
    if not zipfile.is_zipfile(path):
        return "pickle"  # the legacy torch.save format; never TorchScript
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any(n.endswith(("/archive_format", "/models/model.json")) for n in names):
        return "export"
    if any(n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    return "pickle"


def _load(path: Path, model_dir: Path, manifest: Manifest, device: str, allow_pickled: bool) -> Any:
    import torch

    kind = _archive_kind(path)
    if kind == "export":
        # exported programs keep the mode they were exported in; eval() is not supported on them
        return torch.export.load(str(path)).module().to(device)
    if kind == "torchscript":
        jit = cast(Any, torch.jit)  # torch.jit.load is untyped
        model: Any = jit.load(str(path), map_location=device)
    else:
        model = _load_pickled(path, _find_model_file(model_dir, manifest), device, allow_pickled)
    model.eval()
    return model.to(device)


def _load_pickled(path: Path, model_file: Path | None, device: str, allow_pickled: bool) -> Any:
    """A state_dict for the one nn.Module in ``model_file``, or (opt-in) a whole module."""
    import torch

    # imported first, so a whole pickled module whose class lives there can be found
    model_class = _module_class(model_file) if model_file is not None else None
    loaded = _torch_load(path, device, allow_pickled)
    if isinstance(loaded, Mapping):
        if model_class is None:
            raise HandlerLoadError(
                f"{path.name} holds a state_dict but there is no model file: add {MODEL_FILE} "
                "defining the nn.Module, or name it in the manifest's model.modelFile"
            )
        model = model_class()
        model.load_state_dict(loaded)
        return model
    if not isinstance(loaded, torch.nn.Module):
        raise HandlerLoadError(f"{path.name} holds a {type(loaded).__name__}, not an nn.Module")
    return loaded


def _find_model_file(model_dir: Path, manifest: Manifest) -> Path | None:
    named = manifest.model_file
    if named:
        path = _inside(model_dir, str(named), "modelFile")
        if not path.is_file():
            raise HandlerLoadError(f"manifest model.modelFile {named!r}: no such file")
        return path
    for candidate in (model_dir / MODEL_FILE, model_dir / "code" / MODEL_FILE):
        if candidate.is_file():
            return candidate
    return None


def _module_class(model_file: Path) -> Any:
    import torch

    module = import_file(model_file, model_file.name)
    classes = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and obj.__module__ == module.__name__
        and issubclass(obj, torch.nn.Module)
    ]
    if len(classes) != 1:
        names = f" ({', '.join(c.__name__ for c in classes)})" if classes else ""
        raise HandlerLoadError(
            f"{model_file.name} defines {len(classes)} nn.Module classes{names}; expected one"
        )
    return classes[0]


def _torch_load(path: Path, device: str, allow_pickled: bool) -> Any:
    import torch

    try:
        return torch.load(str(path), map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        if not allow_pickled:
            raise HandlerLoadError(
                f"{path.name} is a pickled module, and unpickling runs arbitrary code: set "
                f"{OPT_IN} to load it anyway, or save the model with torch.jit.save, "
                "torch.export.save, or as a state_dict with a model.py"
            ) from exc
    logger.warning("unpickling %s with weights_only=False (%s)", path, OPT_IN)
    return torch.load(str(path), map_location=device, weights_only=False)
