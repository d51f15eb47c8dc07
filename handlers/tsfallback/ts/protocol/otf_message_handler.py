"""``ts.protocol.otf_message_handler.send_intermediate_predict_response`` (TorchServe's older
place for it, still imported by handlers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers.context import Context
from handlers.intermediate import send_intermediate


def send_intermediate_predict_response(
    ret: Any,
    req_id_map: Mapping[int, str],
    message: str,
    code: int,
    context: Context | None = None,
) -> None:
    """Send one piece of each request's answer now (see ts.handler_utils.utils)."""
    if context is None:
        raise TypeError("send_intermediate_predict_response needs the handler's context")
    send_intermediate(context, ret, req_id_map, message, code)
