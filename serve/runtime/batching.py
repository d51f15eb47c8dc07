"""How large a batch one worker gathers and how long it waits for one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from handlers.contract import Handler
from serve.config import ServingConfig

DEFAULT_BATCH_DELAY_MS = 5.0


def _option_number(options: Any, *names: str) -> float | None:
    for name in names:
        value = options.get(name) if hasattr(options, "get") else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """A worker's batching settings.

    Attributes:
        max_batch_size: the most requests passed to one handler call.
        max_delay: seconds to wait for a batch to fill, counted from its first request's arrival;
            zero when the batch size is 1, so unbatched serving adds no delay.
    """

    max_batch_size: int = 1
    max_delay: float = 0.0

    @classmethod
    def choose(cls, config: ServingConfig, handler: Handler) -> BatchPolicy:
        """Environment first, then the model's own settings (archive config), then unbatched.

        The result never exceeds what the handler says it can take.
        """
        options = handler.options
        size = config.max_batch_size or _option_number(options, "batch_size", "batchSize") or 1
        size = max(1, min(int(size), handler.max_batch_size))
        if size == 1:
            return cls(1, 0.0)
        delay_ms = config.max_batch_delay_ms
        if delay_ms is None:
            delay_ms = _option_number(options, "max_batch_delay", "maxBatchDelay")
        if delay_ms is None:
            delay_ms = DEFAULT_BATCH_DELAY_MS
        return cls(size, delay_ms / 1000.0)
