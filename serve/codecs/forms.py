"""Form bodies as TorchServe splits them: each field of a ``multipart/form-data`` or
``application/x-www-form-urlencoded`` body is a separate input, with the Content-Type of its
part (files) or none (plain fields). Parsed by werkzeug, with TorchServe's limits on parts."""

from __future__ import annotations

import io
from dataclasses import dataclass

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from serve.codecs.media import parse_media_type
from serve.errors import BadRequestError

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
MAX_PARTS = 1000


@dataclass(frozen=True, slots=True)
class FormField:
    """One field: its name, its bytes, and its part's Content-Type ("" for a plain field)."""

    name: str
    value: bytes
    content_type: str = ""


def is_form(content_type: str) -> bool:
    return parse_media_type(content_type)[0] in FORM_TYPES


def form_fields(body: bytes, content_type: str) -> list[FormField]:
    """The fields of a form body, in order: plain fields, then files.

    Raises:
        BadRequestError: a multipart body without a boundary, or one that does not parse.
    """
    media_type, params = parse_media_type(content_type)
    if media_type == "multipart/form-data" and not params.get("boundary"):
        raise BadRequestError("multipart/form-data without a boundary parameter")
    parser = FormDataParser(silent=False, max_form_parts=MAX_PARTS)
    try:
        _, form, files = parser.parse(io.BytesIO(body), media_type, len(body), params)
    except (ValueError, RequestEntityTooLarge) as exc:
        raise BadRequestError(f"malformed {media_type} body: {exc}") from exc
    fields = [FormField(name, value.encode()) for name, value in form.items(multi=True)]
    for name, upload in files.items(multi=True):
        part_type = upload.headers.get("Content-Type", "")
        fields.append(FormField(name, upload.read(), part_type))
    return fields
