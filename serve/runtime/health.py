"""Whether a worker can answer: a handler call that overruns its model's timeout makes that model
*stuck* at once, and one that overruns it by ``BYOSERVE_HUNG_GRACE`` too makes the worker *hung*.

No thread can be stopped from outside, so a call that does not return holds its model's inference
thread: every request queued behind it would wait out its own timeout (504). From the moment the
call passes the model's timeout:

- the model's requests are answered 503 with ``Retry-After`` at once: the queued ones by
  :class:`HealthWatch` (it sheds the queue), new ones by the pipeline's readiness check
  (``ModelRuntime.ensure_ready``);
- the worker takes no new connections where its engine lets it (gunicorn hands its share to its
  siblings: serve/process/worker.py), told at once through :meth:`HealthWatch.on_change`;
- ``/ping`` answers 503 with why, unless another model of the worker is loaded and free: with
  several models (a multi-model endpoint) SageMaker would replace the whole instance on a failing
  ``/ping``, unloading every model, for a fault the worker cures by itself (below).

When the call returns the model serves again and the worker is healthy. When it has not returned
by the grace, the worker is hung: it stops and its engine starts another in its place, which loads
the models again (as TorchServe restarts a worker after its response timeout).

The watch is one thread per worker that sleeps until the next moment a running call could pass
its timeout, so nothing is added to a request's path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from serve.config import ServingConfig
from serve.runtime.inference import ModelRuntime

logger = logging.getLogger(__name__)

WATCH_S = 1.0  # the longest the watch sleeps (a model added meanwhile may have a short timeout)
STUCK_POLL_S = 0.05  # while a model is stuck: how often its queue is shed and its return looked for


class HealthWatch:
    """Watches one worker's inference threads for handler calls past their timeout.

    Args:
        config: the serving configuration (``BYOSERVE_HUNG_GRACE``).
        runtimes: the worker's models now (read on every check).
        on_hung: called once, when a call has overrun its timeout by the grace too: the worker
            is to be recycled.
    """

    def __init__(
        self,
        config: ServingConfig,
        runtimes: Callable[[], list[ModelRuntime]],
        on_hung: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self._runtimes = runtimes
        self._on_hung = on_hung
        self._listeners: list[Callable[[], None]] = []
        self._stuck: dict[ModelRuntime, float] = {}  # the call each was stuck in (its start)
        self._hung = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def hung(self) -> bool:
        """Whether a call has overrun its timeout and the grace: the worker is being recycled."""
        return self._hung

    @property
    def reported(self) -> bool:
        """Whether a model was stuck when last watched: cheaper than :meth:`stuck`, for what
        runs on every request (and the watch looks the moment a call passes its timeout)."""
        return bool(self._stuck)

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (on the watch's thread) whenever a model becomes stuck or serves
        again, so the engine can stop or resume taking connections at once."""
        self._listeners.append(listener)

    def stuck(self, now: float | None = None) -> list[ModelRuntime]:
        """The models whose handler call has overrun its timeout, now (not as last watched)."""
        moment = time.monotonic() if now is None else now
        return [runtime for runtime in self._runtimes() if runtime.overdue_for(moment) > 0]

    def serving(self) -> bool:
        """Whether the worker can answer: no model is stuck, or another is loaded and free."""
        now = time.monotonic()
        runtimes = self._runtimes()
        stuck = [runtime for runtime in runtimes if runtime.overdue_for(now) > 0]
        if not stuck:
            return True
        return any(runtime.ready and runtime not in stuck for runtime in runtimes)

    def describe(self) -> str | None:
        """Why the worker is unhealthy, for ``/ping``'s body; None when nothing is stuck."""
        now = time.monotonic()
        stuck = self.stuck(now)
        if not stuck:
            return None
        grace = self.config.hung_grace
        return "; ".join(
            f"model {runtime.name!r} is stuck in a handler call for "
            f"{runtime.settings.timeout + runtime.overdue_for(now):.1f} s, past its "
            f"{runtime.settings.timeout:g} s timeout: it takes no new requests until the call "
            f"returns, and the worker is replaced if it has not returned "
            f"{grace:g} s (BYOSERVE_HUNG_GRACE) after the timeout"
            for runtime in stuck
        )

    def start(self) -> None:
        """Start the watch's thread (after fork)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="byoserve-health", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def _run(self) -> None:
        wait = 0.0
        while not self._stopping.wait(wait):
            try:
                wait = self.check()
            except Exception:  # the watch must outlive a listener's failure
                logger.exception("the hung-handler watch failed; it goes on")
                wait = WATCH_S

    def check(self) -> float:
        """Look at every model's running call once: report the models that became stuck (and
        shed their queues) or serve again, recycle the worker past the grace; returns how long
        until a call could next pass its timeout."""
        now = time.monotonic()
        wait = WATCH_S
        stuck: dict[ModelRuntime, float] = {}
        for runtime in self._runtimes():
            started = runtime.busy_since
            if started is None:  # a call starting now passes its timeout no sooner than this
                wait = min(wait, runtime.settings.timeout)
            elif runtime.overdue_for(now) > 0:
                stuck[runtime] = started
                wait = STUCK_POLL_S
            else:
                wait = min(wait, started + runtime.settings.timeout - now)
        changed = self._report(stuck, now)
        if changed:
            for listener in self._listeners:
                listener()
        self._check_hung(list(stuck), now)
        return max(0.001, wait)

    def _report(self, stuck: dict[ModelRuntime, float], now: float) -> bool:
        """Log each model that became stuck or serves again, and shed a stuck model's queue;
        True when the set changed."""
        changed = False
        for runtime, started in stuck.items():
            if self._stuck.get(runtime) != started:
                changed = True
                logger.warning(
                    "model %s: a handler call has run past its %g s timeout; its requests are "
                    "answered 503 until it returns (the worker is replaced if it has not "
                    "returned within BYOSERVE_HUNG_GRACE=%g s)",
                    runtime.name,
                    runtime.settings.timeout,
                    self.config.hung_grace,
                )
            shed = runtime.shed(now)
            if shed:
                logger.warning("model %s: %d queued requests answered 503", runtime.name, shed)
        held = set(self._runtimes())
        for runtime, started in self._stuck.items():
            if stuck.get(runtime) != started:  # it returned (a later call may be stuck too)
                changed = True
                if runtime not in held:
                    continue  # unloaded meanwhile (serve/runtime/registry.py says so)
                logger.warning(
                    "model %s: the handler call returned after %.1f s; serving again",
                    runtime.name,
                    now - started,
                )
        self._stuck = stuck
        return changed

    def _check_hung(self, stuck: list[ModelRuntime], now: float) -> None:
        """A call past its timeout and the grace holds its model's inference thread for good:
        the worker says it is not ready and is recycled; its replacement loads the models
        again."""
        hung = [runtime for runtime in stuck if runtime.hung_for(now) > 0]
        if self._hung or not hung:
            return
        self._hung = True
        for runtime in hung:
            logger.error(
                "model %s: a handler call has run for %.0f s, past its %g s timeout and "
                "BYOSERVE_HUNG_GRACE=%g s; this worker stops and another takes its place",
                runtime.name,
                now - (runtime.busy_since or now),
                runtime.settings.timeout,
                self.config.hung_grace,
            )
        for listener in self._listeners:
            listener()
        if self._on_hung is not None:
            self._on_hung()
