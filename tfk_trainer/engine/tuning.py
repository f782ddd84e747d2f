"""`steps_per_execution="auto"`: pick the number of steps per call from measured step time.

tf-keras had this; Keras 3 does not. The first execution of a `fit` traces
and is ignored; the next few run one step each and are timed (forcing a
host sync, only while tuning). From the median step time the tuner chooses
enough steps for an execution to last about `target_seconds`, which
amortises the per-call overhead (Python, function dispatch, host sync)
without making callbacks and the progress bar sluggish. The number of
steps is a tensor argument, so changing it never retraces.
"""

from __future__ import annotations

import math
import statistics


class StepsPerExecutionTuner:
    def __init__(
        self,
        *,
        target_seconds: float = 0.05,
        max_steps: int = 512,
        probes: int = 3,
    ):
        self.target_seconds = target_seconds
        self.max_steps = max_steps
        self.probes = probes
        self.current = 1
        self._times: list[float] = []
        self._skipped_first = False
        self.tuned = False

    def reset_for_fit(self) -> None:
        """A new fit: keep the tuned value, but re-measure nothing once tuned."""
        self._skipped_first = False

    @property
    def measuring(self) -> bool:
        return not self.tuned

    def observe(self, steps: int, seconds: float) -> None:
        """Records one execution of `steps` steps that took `seconds` (host-synced)."""
        if self.tuned or steps <= 0:
            return
        if not self._skipped_first:
            self._skipped_first = True  # tracing and compilation
            return
        self._times.append(seconds / steps)
        if len(self._times) >= self.probes:
            per_step = max(statistics.median(self._times), 1e-6)
            self.current = max(1, min(self.max_steps, math.ceil(self.target_seconds / per_step)))
            self.tuned = True

    def steps(self, steps_left: int | None) -> int:
        value = self.current
        if steps_left is not None:
            value = min(value, steps_left)
        return max(1, value)
