"""The Java properties format, as ``java.util.Properties.load`` reads it (TorchServe's and MMS's
``config.properties``).

- A line whose first non-blank character is ``#`` or ``!`` is a comment; blank lines are skipped.
- A line ending in an odd number of backslashes goes on with the next one, whose leading blanks
  are dropped (TorchServe's ``models`` JSON is usually written this way).
- The key ends at the first unescaped ``=``, ``:`` or blank; blanks around the separator are
  dropped, blanks at the end of the value are kept. A line with a key only has the value "".
- ``\\t``, ``\\n``, ``\\r``, ``\\f`` and ``\\uXXXX`` are escapes; a backslash before any other
  character stands for that character. A key given twice keeps its last value.

Java reads the file as ISO-8859-1; it is read here as UTF-8 (what editors write), or as
ISO-8859-1 when it is not UTF-8.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

BLANKS = " \t\f"
SEPARATORS = "=:"
ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_NEWLINE = re.compile(r"\r\n|\r|\n")


class PropertiesError(ValueError):
    """The file does not follow the properties format (a malformed ``\\uXXXX``)."""


def read_properties(path: Path) -> dict[str, str]:
    """The keys and values of the properties file at ``path``.

    Raises:
        OSError: it cannot be read. PropertiesError: a malformed escape (the line is named).
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return parse_properties(text)


def parse_properties(text: str) -> dict[str, str]:
    """The keys and values of properties ``text``.

    Raises:
        PropertiesError: a malformed ``\\uXXXX`` escape, naming its line.
    """
    properties: dict[str, str] = {}
    for number, line in _logical_lines(text):
        key, value = _split(line)
        try:
            properties[_unescape(key)] = _unescape(value)
        except ValueError as exc:
            raise PropertiesError(f"line {number}: {exc}") from exc
    return properties


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Each logical line (continuations joined) with the number of its first natural line."""
    current: str | None = None
    first = 0
    for number, natural in enumerate(_NEWLINE.split(text), start=1):
        line = natural.lstrip(BLANKS)
        if current is None:
            if not line or line[0] in "#!":
                continue
            current, first = "", number
        backslashes = len(line) - len(line.rstrip("\\"))
        if backslashes % 2:
            current += line[:-1]
            continue
        yield first, current + line
        current = None
    if current is not None:  # the file ends with a continuation
        yield first, current


def _split(line: str) -> tuple[str, str]:
    """The raw key and value of a logical line."""
    escaped = False
    for index, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in SEPARATORS:
            return line[:index], line[index + 1 :].lstrip(BLANKS)
        elif char in BLANKS:
            rest = line[index:].lstrip(BLANKS)
            if rest[:1] and rest[0] in SEPARATORS:
                rest = rest[1:].lstrip(BLANKS)
            return line[:index], rest
    return line, ""


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        index += 1
        if char != "\\":
            out.append(char)
            continue
        if index == len(text):
            break  # a lone backslash at the very end stands for nothing
        char = text[index]
        index += 1
        if char == "u":
            digits = text[index : index + 4]
            if len(digits) < 4 or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError(f"malformed \\uXXXX escape: \\u{digits}")
            out.append(chr(int(digits, 16)))
            index += 4
        else:
            out.append(ESCAPES.get(char, char))
    return "".join(out)
