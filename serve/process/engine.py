"""What the HTTP layer needs to know of the engine that serves it, by engine.

gunicorn parses a chunked body while the app reads it, so its framing errors (a bad chunk size, a
missing terminator) surface as its ``ParseException`` during the read: the client's, a 400.
granian ends such a body without a word (its WSGI input reads a framing error as the end of the
body), so there a chunked body is refused (411): a truncated input is never predicted on.
"""

from __future__ import annotations

from serve.http.invocation import BodyRules

GRANIAN_CHUNKED = (
    "send the body with a Content-Length: BYOSERVE_HTTP_ENGINE=granian cannot tell a complete "
    "chunked body from one cut short (BYOSERVE_HTTP_ENGINE=gunicorn can)"
)


def body_rules(http_engine: str) -> BodyRules:
    """How ``http_engine`` hands request bodies to the app."""
    if http_engine == "granian":
        return BodyRules(reads_chunked=False, chunked_refusal=GRANIAN_CHUNKED)
    from gunicorn.http.errors import ParseException

    return BodyRules(reads_chunked=True, malformed=(ParseException,))
