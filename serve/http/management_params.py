"""The parameters of TorchServe's register and scale calls: from the query string or (register)
a JSON body, each checked, unknown ones refused."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Request

from serve.errors import BadRequestError
from serve.model.settings import ModelOverrides, SettingError, spellings

MAX_BODY = 64 * 1024
# TorchServe's register parameters that are not model settings (serve/model/settings.py has
# those), checked and not kept: every worker serves every model, within the server's start-up time.
COUNTS: Mapping[str, int] = {"initial_workers": 0, "startup_timeout": 1}
TEXT = ("url", "model_name", "handler", "runtime", "synchronous")
ACCEPTED = (*TEXT, *spellings("register"), *COUNTS)
RUNTIMES = ("python", "python3")


@dataclass(frozen=True, slots=True)
class RegisterParams:
    """A registration: where the model is, its name if given, and its settings."""

    url: str
    model_name: str = ""
    handler: str = ""
    synchronous: bool = False
    overrides: ModelOverrides = ModelOverrides()


def register_params(request: Request) -> RegisterParams:
    """The register call's parameters (TorchServe takes the query string or a JSON body).

    Raises:
        BadRequestError: no url, an unknown parameter, or a value of the wrong kind.
    """
    given: dict[str, Any] = dict(request.args.items())
    if request.content_length or request.headers.get("Transfer-Encoding"):
        given.update(_json_body(request))
    unknown = sorted(set(given) - set(ACCEPTED))
    if unknown:
        accepted = ", ".join(ACCEPTED)
        raise BadRequestError(f"unknown parameters {', '.join(unknown)}; accepted: {accepted}")
    url = given.get("url")
    if not isinstance(url, str) or not url:
        raise BadRequestError("Parameter url is required.")
    runtime = str(given.get("runtime") or "python")
    if runtime not in RUNTIMES:
        raise BadRequestError(f"runtime {runtime!r}: only python is served here")
    for name, minimum in COUNTS.items():
        if name in given:
            _number(name, given[name], minimum)
    try:
        overrides = ModelOverrides.from_register_params(given)
    except SettingError as exc:
        raise BadRequestError(str(exc)) from exc
    return RegisterParams(
        url=url,
        model_name=str(given.get("model_name") or ""),
        handler=str(given.get("handler") or ""),
        synchronous=_flag("synchronous", given.get("synchronous", False)),
        overrides=overrides,
    )


def check_scale(args: Mapping[str, str]) -> tuple[int, int]:
    """``min_worker`` and ``max_worker`` of a scale call (``max_worker`` defaults to the min).

    Raises:
        BadRequestError: not whole numbers, max below min, or unknown parameters.
    """
    unknown = sorted(set(args) - {"min_worker", "max_worker", "synchronous", "timeout"})
    if unknown:
        raise BadRequestError(f"unknown parameters {', '.join(unknown)}")
    low = _number("min_worker", args.get("min_worker", "1"), 0)
    high = _number("max_worker", args.get("max_worker", str(low)), 0)
    if high < low:
        raise BadRequestError(f"max_worker {high} is below min_worker {low}")
    return low, high


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


def _number(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise BadRequestError(f"{name} must be a whole number of at least {minimum}, not {value!r}")
    return value


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0", ""):
        return False
    raise BadRequestError(f"{name} must be true or false, not {value!r}")
