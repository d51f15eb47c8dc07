"""``--dry-run``: print each request that would change something, instead of making it.

Read-only AWS requests (Describe*, List*, Get*, Head*) are still made, so the plan shows what
would really happen (create or update, skip an upload already there); every other request, and
every Docker build, tag and push, is printed as one line and not sent.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

READ_ONLY_PREFIXES = ("describe_", "list_", "get_", "head_")


def is_read_only(operation: str) -> bool:
    """Whether ``operation`` (a boto3 method name) only reads state."""
    return operation.startswith(READ_ONLY_PREFIXES)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if hasattr(value, "read"):
        return f"<file {getattr(value, 'name', '')}>"
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


@dataclass
class Plan:
    """The requests a dry run would have made, printed as they are recorded."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def record(self, service: str, operation: str, params: dict[str, Any]) -> None:
        """Remember and print one request: ``DRY-RUN service Operation {params}``."""
        shown = _jsonable(params)
        self.requests.append((service, operation, shown))
        text = json.dumps(shown, sort_keys=True, default=str)
        print(f"DRY-RUN {service} {operation} {text}", file=self.out, flush=True)
