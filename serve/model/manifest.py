"""An archive's manifest (``MAR-INF/MANIFEST.json``, TorchServe's and MMS's layout), typed.

Read once, where the model directory is prepared (serve/model/directory.py); the server reads
its fields, and handlers get the document itself (``context.manifest``), unchanged, as TorchServe
and MMS handlers expect a dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, slots=True)
class Manifest:
    """The manifest's fields the server reads, and the document handlers get.

    Attributes:
        model_name: ``model.modelName``; empty when not given.
        model_version: ``model.modelVersion``; empty when not given.
        handler: ``model.handler``: a file, a module, ``file.py:function`` or a built-in's name.
        serialized_file: ``model.serializedFile``, the weights.
        model_file: ``model.modelFile``, the file defining the ``nn.Module``.
        config_file: ``model.configFile``, per-model settings (``model-config.yaml``).
        requirements_file: ``model.requirementsFile``, installed with pip.
        extensions: ``model.extensions`` (MMS): the extension files, as written.
        archiver_version: ``archiverVersion``: which archiver wrote it.
        options: the top-level ``options`` object (byoserve's archiver): per-model settings.
        raw: the whole document, read-only, for handlers' ``context.manifest``.
    """

    model_name: str = ""
    model_version: str = ""
    handler: str = ""
    serialized_file: str = ""
    model_file: str = ""
    config_file: str = ""
    requirements_file: str = ""
    extensions: str = ""
    archiver_version: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_raw(cls, document: Mapping[str, Any]) -> Manifest:
        """The fields of a manifest document (a JSON object); a field of another kind than text
        or a number reads as not given, as does a ``model`` section that is not an object."""
        section = document.get("model")
        model: Mapping[str, Any] = section if isinstance(section, Mapping) else {}
        options = document.get("options")
        return cls(
            model_name=_text(model.get("modelName")),
            model_version=_text(model.get("modelVersion")),
            handler=_text(model.get("handler")).strip(),
            serialized_file=_text(model.get("serializedFile")),
            model_file=_text(model.get("modelFile")),
            config_file=_text(model.get("configFile")),
            requirements_file=_text(model.get("requirementsFile")),
            extensions=_text(model.get("extensions")),
            archiver_version=_text(document.get("archiverVersion")),
            options=MappingProxyType(dict(options)) if isinstance(options, Mapping) else {},
            raw=document if isinstance(document, MappingProxyType) else MappingProxyType(document),
        )

    def with_handler(self, handler: str) -> Manifest:
        """This manifest naming ``handler`` (a registration's, over the archive's), in its
        fields and in the document handlers see."""
        section = self.raw.get("model")
        model = {**(section if isinstance(section, Mapping) else {}), "handler": handler}
        return Manifest.from_raw(MappingProxyType({**self.raw, "model": model}))


def _text(value: Any) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    return str(value)
