"""How many models, and how much memory, the server may hold: ``BYOSERVE_MAX_MODELS``,
``BYOSERVE_MEMORY_BUDGET_MB`` and the memory the machine (or the container's cgroup) has left,
checked before a model is loaded; and which model to unload first when room must be made."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from serve.config import MIB
from serve.errors import InsufficientStorageError
from serve.runtime.memory import available_bytes
from serve.runtime.shared import LOADED, DesiredSet, ModelSpec, WorkerReport


class Budget:
    """The limits on the models the server holds.

    Args:
        max_models: the most models at once, or None.
        memory: the most bytes the models may take, summed over the workers, or None.
        workers: the worker processes the server runs (each loads every model).
    """

    def __init__(self, max_models: int | None, memory: int | None, workers: int) -> None:
        self.max_models = max_models
        self.memory = memory
        self.workers = workers

    def check(
        self,
        desired: DesiredSet,
        reports: Mapping[int, WorkerReport],
        estimate: int,
        exclude: str = "",
        measure_available: bool = True,
    ) -> None:
        """Refuse one more model of ``estimate`` bytes per worker (its files' size) beside the
        set's others (all but ``exclude``).

        Raises:
            InsufficientStorageError: it would pass a limit, or (``measure_available``) need more
                memory than the machine has left; the message says which and by how much.
        """
        others = [spec for name, spec in desired.models.items() if name != exclude]
        if self.max_models is not None and len(others) >= self.max_models:
            raise InsufficientStorageError(
                f"the server holds its maximum of {self.max_models} models (BYOSERVE_MAX_MODELS)"
            )
        # every worker loads it: those not started (or not reporting) yet too
        workers = max(1, self.workers, len(reports))
        needed = estimate * workers
        if self.memory is not None:
            used = _in_use(others, reports.values(), workers)
            if used + needed > self.memory:
                raise InsufficientStorageError(
                    f"the model needs about {needed / MIB:.0f} MiB ({workers} workers), and "
                    f"{max(0, self.memory - used) / MIB:.0f} MiB of BYOSERVE_MEMORY_BUDGET_MB="
                    f"{self.memory / MIB:.0f} are left"
                )
        available = available_bytes() if measure_available else None
        if available is not None and needed > available:
            raise InsufficientStorageError(
                f"the model needs about {needed / MIB:.0f} MiB ({workers} workers); "
                f"{available / MIB:.0f} MiB of memory are available"
            )


def _in_use(specs: list[ModelSpec], reports: Collection[WorkerReport], workers: int) -> int:
    """What the models take: what their loads added in each worker, else their estimate."""
    total = 0
    for spec in specs:
        measured = [
            held.memory
            for report in reports
            if (held := report.held(spec.name, spec.generation)) is not None
            and held.state == LOADED
        ]
        total += sum(measured) if measured else spec.estimate * workers
    return total


def least_recently_used(
    desired: DesiredSet, reports: Mapping[int, WorkerReport]
) -> ModelSpec | None:
    """The model loaded in every worker whose last use (in any worker; its load counts) is the
    oldest; None when there is none."""
    candidates: list[tuple[float, ModelSpec]] = []
    for spec in desired.models.values():
        held = [report.held(spec.name, spec.generation) for report in reports.values()]
        if held and all(m is not None and m.state == LOADED for m in held):
            candidates.append((max(m.used for m in held if m is not None), spec))
    return min(candidates, key=lambda pair: pair[0])[1] if candidates else None
