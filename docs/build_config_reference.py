"""Write docs/reference/configuration.md from ``ServingConfig``'s declarations.

As gunicorn builds its settings reference from its ``Setting`` classes: each setting is declared
once in serve/config.py (``setting(default, *env, parse=, flag=, help=)``, kept as the dataclass
field's metadata), and the reference is read from those declarations, so it cannot fall behind
them. ``make docs-reference`` runs this; tests/unit/test_docs.py fails when the file is stale.

Run from the repository root: ``python -m docs.build_config_reference``.
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any

from serve.config import ServingConfig

TARGET = Path(__file__).resolve().parent / "reference" / "configuration.md"

HEADER = """\
# Configuration reference

Generated file: edit serve/config.py instead, then run `make docs-reference`.

Every setting is an environment variable (SageMaker's name where it has one; the first name is the
main one, the others are aliases read when it is unset), and some also have a `python -m serve`
flag, which overrides the variable and goes through the same check. A bad value stops the start
with one line naming the variable (or flag) and the value (exit 2). `--no-install-requirements`
sets `BYOSERVE_INSTALL_REQUIREMENTS=false`. TorchServe's `config.properties` keys map onto these
settings with `serve --start` ([Coming from TorchServe / MMS](../torchserve.md)).
"""


def default_of(spec: dataclasses.Field[Any]) -> Any:
    """The declared default, a ``default_factory``'s value included."""
    if spec.default is dataclasses.MISSING and spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return spec.default


def show_default(value: Any) -> str:
    """The default as a reader would type it: None is "unset", and 0 "chosen at start" (the
    worker, thread and queue counts ServingConfig works out from the CPUs and the threads)."""
    if value is None:
        return "unset"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == 0 and not isinstance(value, tuple):
        return "chosen at start"
    if isinstance(value, tuple):
        return f"`{','.join(map(str, value))}`" if value else "none"
    return f"`{value}`"


def render() -> str:
    """The reference's text: a table of every setting, then one section each."""
    specs = [spec for spec in dataclasses.fields(ServingConfig) if "env" in spec.metadata]
    lines = [HEADER, "| variable | flag | default |", "|---|---|---|"]
    for spec in specs:
        main = spec.metadata["env"][0]
        flag = f"`{spec.metadata['flag']}`" if spec.metadata["flag"] else ""
        lines.append(f"| [`{main}`](#{main.lower()}) | {flag} | {show_default(default_of(spec))} |")
    for spec in specs:
        main, *aliases = spec.metadata["env"]
        lines += ["", f"## `{main}`", "", spec.metadata["help"].rstrip(".") + ".", ""]
        if aliases:
            lines.append("- aliases: " + ", ".join(f"`{name}`" for name in aliases))
        if spec.metadata["flag"]:
            lines.append(f"- flag: `{spec.metadata['flag']}`")
        lines.append(f"- default: {show_default(default_of(spec))}")
        lines.append(f"- setting: `ServingConfig.{spec.name}`")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Write the reference."""
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(render(), encoding="utf-8")


if __name__ == "__main__":
    main()
