"""TorchServe 0.12's token authorization, for ``serve --start`` (docs/torchserve.md).

At start the server writes ``key_file.json`` in its working directory (owner-only), in
TorchServe's layout: an inference key and a management key, each with an expiry time, and an API
key that does not expire. Every request on the inference port then needs
``Authorization: Bearer <inference key>`` (``/ping`` too, as in TorchServe), every request on the
management port the management key; ``/api-description`` and ``OPTIONS /`` need none. A refusal is
TorchServe's: 400 ``InvalidKeyException``. ``/token?type=management|inference`` on the management
port, authorized by the API key, replaces that key (and its expiry) in the file.

The file is the one copy of the keys every worker process reads: the ``serve --start`` process
writes it once before the HTTP engine forks its workers (:func:`issue_key_file`), each worker
looks at its modification time on every request and reads it again when it changed, and the
token API rewrites it in place under an exclusive ``flock`` with a later modification time, so a
key replaced in one worker is refused by all of them from the next request on. Off (``--disable-
token-auth``, the SageMaker path) nothing here is in the request path (:func:`protect`).
"""

from __future__ import annotations

import fcntl
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs

from serve.config import ServingConfig
from serve.contract import INFERENCE_ID
from serve.http.errors import REQUEST_ID_HEADER, request_id
from serve.observe.observer import Observer

logger = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Kind = Literal["inference", "management"]

KEY_FILE_NAME = "key_file.json"
TOKEN_PATH = "/token"
EXEMPT = frozenset({"/", "/api-description"})  # TorchServe's API description comes first
REFUSED = "Token Authorization failed. Token either incorrect, expired, or not provided correctly"
TOKEN_API_REFUSED = (  # TorchServe's token API says "Authentication" here
    "Token Authentication failed. Token either incorrect, expired, or not provided correctly"
)
_BEARER = re.compile(r"^Bearer\s+(\S+)$", re.ASCII)
_JSON = "application/json"
_OPEN = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW  # never write the keys through a planted link
_INFERENCE_ID_KEY = "HTTP_" + INFERENCE_ID.upper().replace("-", "_")


def new_key() -> str:
    """A key as TorchServe makes them: 6 random bytes, URL-safe base64 (8 characters)."""
    return secrets.token_urlsafe(6)


def _same(token: str, key: str) -> bool:
    """In constant time (bytes: a header's text may be any character)."""
    return hmac.compare_digest(token.encode(), key.encode())


def _instant(moment: datetime) -> str:
    """Java's ``Instant.toString()``: ``2024-02-16T21:12:24.801167Z``."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Keys:
    """The three keys, and when the inference and management keys expire."""

    management: str
    management_expires: datetime
    inference: str
    inference_expires: datetime
    api: str

    @classmethod
    def issue(cls, lifetime: timedelta) -> Keys:
        """Three new keys, the first two expiring ``lifetime`` from now."""
        expires = datetime.now(UTC) + lifetime
        return cls(new_key(), expires, new_key(), expires, new_key())

    def renewed(self, kind: Kind, lifetime: timedelta) -> Keys:
        """These keys with ``kind``'s replaced, expiring ``lifetime`` from now."""
        expires = datetime.now(UTC) + lifetime
        if kind == "management":
            return replace(self, management=new_key(), management_expires=expires)
        return replace(self, inference=new_key(), inference_expires=expires)

    def accepts(self, kind: Kind | Literal["api"], token: str) -> bool:
        """Whether ``token`` is ``kind``'s key and has not expired (the API key never does)."""
        if kind == "api":
            return _same(token, self.api)
        key, expires = (
            (self.management, self.management_expires)
            if kind == "management"
            else (self.inference, self.inference_expires)
        )
        return _same(token, key) and datetime.now(UTC) < expires

    def dumps(self) -> str:
        """The key file's text, as TorchServe writes it (Gson's pretty print)."""
        document = {
            "management": {
                "key": self.management,
                "expiration time": _instant(self.management_expires),
            },
            "inference": {
                "key": self.inference,
                "expiration time": _instant(self.inference_expires),
            },
            "API": {"key": self.api},
        }
        return json.dumps(document, indent=2)

    @classmethod
    def loads(cls, text: str) -> Keys:
        """Keys from a key file's text.

        Raises:
            ValueError: not a key file.
        """
        try:
            document = json.loads(text)
            return cls(
                document["management"]["key"],
                datetime.fromisoformat(document["management"]["expiration time"]),
                document["inference"]["key"],
                datetime.fromisoformat(document["inference"]["expiration time"]),
                document["API"]["key"],
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a key file: {exc!r} missing") from exc


def lifetime(config: ServingConfig) -> timedelta:
    """How long an inference or management key lasts (``token_expiration_min``)."""
    return timedelta(minutes=config.token_expiration_min)


class KeyFile:
    """``key_file.json``: written once at start, read by every worker, rewritten by the token
    API (see the module's docstring)."""

    def __init__(self, path: Path, lifetime: timedelta) -> None:
        self.path = path
        self.lifetime = lifetime
        # (inode, modification time, size) of the text the keys were read from, and the keys:
        # one attribute, so that a request thread never sees one without the other.
        self._state: tuple[tuple[int, int, int] | None, Keys | None] = (None, None)

    def write_new(self) -> Keys:
        """Write three new keys, readable by this user only.

        Raises:
            OSError: the file cannot be written.
        """
        keys = Keys.issue(self.lifetime)
        fd = os.open(self.path, _OPEN, 0o600)
        with os.fdopen(fd, "r+", encoding="utf-8") as handle:
            os.fchmod(fd, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._rewrite(handle, keys)
        return keys

    def current(self) -> Keys | None:
        """The keys in force: the file's, read again when it changed; the last ones read while
        it is missing or unreadable (None before any: every request is refused)."""
        signature, keys = self._state
        try:
            status = os.stat(self.path)
        except OSError:
            return keys
        now = (status.st_ino, status.st_mtime_ns, status.st_size)
        if now == signature:
            return keys
        try:
            with self.path.open(encoding="utf-8") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
                text = handle.read()
                status = os.fstat(handle.fileno())
            now = (status.st_ino, status.st_mtime_ns, status.st_size)
            keys = Keys.loads(text)
        except (OSError, ValueError) as exc:
            logger.error("%s: cannot read the keys (%s); the last ones read stay", self.path, exc)
        self._state = (now, keys)
        return keys

    def renew(self, kind: Kind) -> None:
        """Replace ``kind``'s key (the token API), for every worker.

        Raises:
            OSError: the file cannot be written.
        """
        fd = os.open(self.path, _OPEN, 0o600)
        with os.fdopen(fd, "r+", encoding="utf-8") as handle:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                keys: Keys | None = Keys.loads(handle.read())
            except ValueError:
                keys = self._state[1]  # emptied or edited: go on from the keys in force
            if keys is None:
                keys = Keys.issue(self.lifetime)
            self._rewrite(handle, keys.renewed(kind, self.lifetime))

    @staticmethod
    def _rewrite(handle: Any, keys: Keys) -> None:
        """Write ``keys`` over the file's text (its lock held) with a modification time later
        than the one it had, so that every reader sees the change even within a clock tick."""
        fd = handle.fileno()
        before = os.fstat(fd).st_mtime_ns
        handle.seek(0)
        handle.truncate()
        handle.write(keys.dumps())
        handle.flush()
        stamp = max(time.time_ns(), before + 1)
        os.utime(fd, ns=(stamp, stamp))


def bearer(token: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, "" for any other value."""
    match = _BEARER.match(token or "")
    return match.group(1) if match else ""


class TokenGuard:
    """WSGI middleware in front of one port's app: the key check and the token API."""

    def __init__(self, app: WSGIApp, keys: KeyFile, kind: Kind, observer: Observer) -> None:
        self.app = app
        self.keys = keys
        self.kind = kind
        self.observer = observer

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path in EXEMPT:
            return self.app(environ, start_response)
        if self.kind == "management" and path == TOKEN_PATH:
            return self._token_api(environ, start_response)
        if self._authorized(environ, self.kind):
            return self.app(environ, start_response)
        return self._answer(environ, start_response, "unauthorized", REFUSED)

    def _authorized(self, environ: dict[str, Any], kind: Kind | Literal["api"]) -> bool:
        keys = self.keys.current()
        token = bearer(environ.get("HTTP_AUTHORIZATION"))
        return keys is not None and bool(token) and keys.accepts(kind, token)

    def _token_api(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """``/token?type=management|inference`` with the API key: that key replaced (200, an
        empty body, as TorchServe answers); anything else is refused."""
        kind = parse_qs(environ.get("QUERY_STRING", "")).get("type", [""])[0]
        if not self._authorized(environ, "api") or kind not in ("management", "inference"):
            return self._answer(environ, start_response, "token", TOKEN_API_REFUSED)
        try:
            self.keys.renew("management" if kind == "management" else "inference")
        except OSError as exc:
            logger.error("%s: cannot write the new %s key: %s", self.keys.path, kind, exc)
            return self._answer(environ, start_response, "token", TOKEN_API_REFUSED)
        logger.info("token API: a new %s key is in %s", kind, self.keys.path)
        return self._answer(environ, start_response, "token", None)

    def _answer(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        route: str,
        refusal: str | None,
    ) -> list[bytes]:
        started = time.monotonic()
        rid = request_id(environ.get(_INFERENCE_ID_KEY))
        if refusal is None:
            status, body, error = 200, b"\n", None
        else:
            document = {"code": 400, "type": "InvalidKeyException", "message": refusal}
            body = (json.dumps(document, separators=(",", ":"), sort_keys=True) + "\n").encode()
            status, error = 400, "invalid_key"
        headers = [("Content-Type", _JSON), ("Content-Length", str(len(body)))]
        start_response(
            "200 OK" if status == 200 else "400 Bad Request",
            [*headers, (REQUEST_ID_HEADER, rid)],
        )
        self.observer.request_done(route, status, time.monotonic() - started, error)
        return [body]


def protect(app: WSGIApp, config: ServingConfig, kind: Kind, observer: Observer) -> WSGIApp:
    """``app`` behind the key check of ``kind``'s port when token authorization is on (the key
    file of the working directory); ``app`` itself when it is off."""
    if not config.token_auth:
        return app
    keys = KeyFile(Path.cwd() / KEY_FILE_NAME, lifetime(config))
    return TokenGuard(app, keys, kind, observer)


def issue_key_file(config: ServingConfig) -> Path | None:
    """At start, before the workers: write new keys to ``./key_file.json`` and say where; None
    when token authorization is off.

    Raises:
        OSError: the file cannot be written.
    """
    if not config.token_auth:
        logger.info(
            "token authorization is off (with serve --start: on loopback unless "
            "disable_token_authorization=false; docs/torchserve.md#token-authorization)"
        )
        return None
    path = Path.cwd() / KEY_FILE_NAME
    KeyFile(path, lifetime(config)).write_new()
    logger.info(
        "token authorization is on, as in TorchServe 0.12: the keys are in %s "
        "(--disable-token-auth turns it off; docs/torchserve.md#token-authorization)",
        path,
    )
    return path


def key_header(path: Path, kind: Kind) -> dict[str, str]:
    """The ``Authorization`` header with ``kind``'s key from the key file at ``path``; none
    while the file is missing or not (yet) a key file."""
    try:
        keys = Keys.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {"Authorization": f"Bearer {keys.inference if kind == 'inference' else keys.management}"}
