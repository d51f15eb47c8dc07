"""The parameters of TorchServe's register and scale calls, read as TorchServe 0.12 reads them
(``NettyUtils.getIntParameter``, ``Boolean.parseBoolean``): a number that does not parse takes
the parameter's default, ``synchronous`` is true only for ``true``. Unknown parameters are still
refused: a misspelt setting TorchServe would drop silently (``batchsize=8``) is the user's to know
about."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Request

from serve.errors import BadRequestError, ModelNotFoundError
from serve.model.settings import ModelOverrides, SettingError, spellings

MAX_BODY = 64 * 1024
JAVA_INT = 2**31
# Register parameters that are not model settings (serve/model/settings.py has those): read and
# answered for, not kept; every worker serves every model, within the server's start-up time.
COUNTS = ("initial_workers", "startup_timeout")
TEXT = ("url", "model_name", "handler", "runtime", "synchronous", "s3_sse_kms")
ACCEPTED = (*TEXT, *spellings("register"), *COUNTS)
SCALE = ("min_worker", "max_worker", "synchronous", "timeout", "number_gpu", "model_version")
RUNTIMES = ("python", "python3")


@dataclass(frozen=True, slots=True)
class RegisterParams:
    """A registration: where the model is, its name and handler if given, its settings, and the
    workers asked for (``initial_workers``, 0 when not given or not a positive number)."""

    url: str
    model_name: str = ""
    handler: str = ""
    synchronous: bool = True
    initial_workers: int = 0
    overrides: ModelOverrides = ModelOverrides()


@dataclass(frozen=True, slots=True)
class ScaleParams:
    """A scale call: the workers asked for, and whether to answer once they are there."""

    min_worker: int
    max_worker: int
    synchronous: bool


def register_params(request: Request) -> RegisterParams:
    """The register call's parameters (TorchServe takes the query string or a JSON body).

    Raises:
        BadRequestError: no url, an unknown parameter, an unknown runtime, or a setting out of its
            range. ModelNotFoundError: an empty url (TorchServe's 404 "empty url").
    """
    given: dict[str, Any] = dict(request.args.items())
    if request.content_length or request.headers.get("Transfer-Encoding"):
        given.update(_json_body(request))
    unknown = sorted(set(given) - set(ACCEPTED))
    if unknown:
        accepted = ", ".join(ACCEPTED)
        raise BadRequestError(f"unknown parameters {', '.join(unknown)}; accepted: {accepted}")
    url = given.get("url")
    if url is None:
        raise BadRequestError("Parameter url is required.")
    if not isinstance(url, str):
        raise BadRequestError(f"url must be text, not {url!r}"[:200])
    if not url:
        raise ModelNotFoundError("empty url")
    runtime = str(given.get("runtime") or "python")
    if runtime.lower() not in RUNTIMES:
        raise BadRequestError(f"runtime {runtime!r}: only python is served here")
    # What does not parse, and TorchServe's negative "not given", leave the setting to the archive
    settings = {
        name: number
        for name, value in given.items()
        if name in spellings("register") and (number := _whole(value, None)) is not None
        if number >= 0
    }
    try:
        overrides = ModelOverrides.from_register_params(settings)
    except SettingError as exc:
        raise BadRequestError(str(exc)) from exc
    return RegisterParams(
        url=url,
        model_name=str(given.get("model_name") or ""),
        handler=str(given.get("handler") or ""),
        synchronous=_flag(given.get("synchronous"), default=True),
        initial_workers=max(_whole(given.get("initial_workers"), 0) or 0, 0),
        overrides=overrides,
    )


def scale_params(args: Mapping[str, str]) -> ScaleParams:
    """``min_worker`` (default 1) and ``max_worker`` (default the min) of a scale call; what does
    not parse takes the default, as TorchServe has it. ``number_gpu`` and ``timeout`` are taken
    and have nothing to change here.

    Raises:
        BadRequestError: unknown parameters, max below min, or a negative min (TorchServe answers
            500 for that one, after trying to start workers).
    """
    unknown = sorted(set(args) - set(SCALE))
    if unknown:
        raise BadRequestError(f"unknown parameters {', '.join(unknown)}; accepted: {SCALE}")
    low = _whole(args.get("min_worker"), 1)
    high = _whole(args.get("max_worker"), low)
    assert low is not None and high is not None
    if high < low:
        raise BadRequestError("max_worker cannot be less than min_worker.")
    if low < 0:
        raise BadRequestError(f"min_worker must be 0 or more, not {low}")
    return ScaleParams(low, high, _flag(args.get("synchronous"), default=False))


def int_param(args: Mapping[str, str], name: str, default: int) -> int:
    """A query parameter read as TorchServe reads numbers: ``default`` when absent or not one."""
    value = _whole(args.get(name), default)
    assert value is not None
    return value


def _json_body(request: Request) -> dict[str, Any]:
    if (request.content_length or 0) > MAX_BODY:
        raise BadRequestError(f"the body is over {MAX_BODY} bytes")
    from serve.http.context import request_body  # read as invocations are: framing errors are 400

    try:
        body = json.loads(request_body(MAX_BODY))
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise BadRequestError("the body must be a JSON object of register parameters")
    return body


def _whole(value: Any, default: int | None) -> int | None:
    """Java's ``Integer.parseInt`` with a fallback: ``default`` for anything it refuses."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.lstrip("+-").isascii() and value.lstrip("+-").isdigit():
        if value.count("-") + value.count("+") > 1:
            return default
        number = int(value)
    else:
        return default
    return number if -JAVA_INT <= number < JAVA_INT else default


def _flag(value: Any, default: bool) -> bool:
    """Java's ``Boolean.parseBoolean``: true for ``true`` in any case, false for anything else."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() == "true"
