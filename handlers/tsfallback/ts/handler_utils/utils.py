"""``ts.handler_utils.utils.send_intermediate_predict_response``, as TorchServe defines it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers.context import Context
from handlers.intermediate import send_intermediate


def send_intermediate_predict_response(
    ret: Any, req_id_map: Mapping[int, str], message: str, code: int, context: Context
) -> None:
    """Send one piece of each request's answer now (``ret``: one item per request of the
    batch; ``req_id_map``: ``context.request_ids``)."""
    send_intermediate(context, ret, req_id_map, message, code)
