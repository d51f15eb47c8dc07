"""A model file's one ``nn.Module`` class, found statically (``--model-file``): the archiver
checks what the loader will count when it imports the file, without importing it."""

from __future__ import annotations

import ast
from pathlib import Path

from serve.archive.spec import ArchiveError

# names a model file may import nn.Module (or its subclasses) under
_TORCH_MODULES = ("torch.nn", "torch.nn.modules")


def check_model_file(path: Path) -> str:
    """The name of the one ``nn.Module`` class ``path`` defines, found without importing it.

    Counts the module-level classes deriving, directly or through each other, from a class of
    ``torch.nn`` (``nn.Module``, ``torch.nn.Sequential``, ``Module`` imported from there...):
    the same classes the loader counts when it imports the file.

    Raises:
        ArchiveError: the file does not parse, or defines zero or several such classes.
    """
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise ArchiveError(f"--model-file {path}: syntax error on line {exc.lineno}") from exc
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"--model-file {path}: cannot read: {exc}") from exc
    names = _module_classes(tree)
    if len(names) != 1:
        found = f" ({', '.join(names)})" if names else ""
        raise ArchiveError(
            f"--model-file {path}: defines {len(names)} nn.Module classes{found}; expected one"
        )
    return names[0]


def _module_classes(tree: ast.Module) -> list[str]:
    aliases = _torch_aliases(tree)
    found: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
            _is_module_base(base, aliases, found) for base in node.bases
        ):
            found.append(node.name)
    return found


def _torch_aliases(tree: ast.Module) -> tuple[set[str], set[str], set[str]]:
    """Names bound to ``torch``, to ``torch.nn`` (or a submodule), and to classes from there."""
    torch_names: set[str] = set()
    nn_names: set[str] = set()
    classes: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name.startswith(_TORCH_MODULES):
                    nn_names.add(alias.asname)
                elif alias.name == "torch" or alias.name.startswith("torch."):
                    torch_names.add(alias.asname or "torch")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                bound = alias.asname or alias.name
                if node.module == "torch" and alias.name == "nn":
                    nn_names.add(bound)
                elif node.module.startswith(_TORCH_MODULES):
                    (nn_names if alias.name[:1].islower() else classes).add(bound)
    return torch_names, nn_names, classes


def _is_module_base(
    base: ast.expr, aliases: tuple[set[str], set[str], set[str]], local: list[str]
) -> bool:
    torch_names, nn_names, classes = aliases
    if isinstance(base, ast.Name):
        return base.id in classes or base.id in local
    parts: list[str] = []
    node: ast.expr = base
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or not parts or not parts[-1][:1].isupper():
        return False
    return node.id in nn_names or (node.id in torch_names and parts[0] == "nn")
