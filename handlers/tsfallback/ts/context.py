"""``ts.context``: the context handlers get (byoserve's, which TorchServe's API is read from)."""

from handlers.context import Context, RequestProcessor

__all__ = ["Context", "RequestProcessor"]
