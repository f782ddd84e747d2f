"""How many steps each execution runs: the compiled value, tuned, or folded.

Two things lengthen executions beyond one step:

- `steps_per_execution="auto"` (tf-keras had it; Keras 3 does not): the
  user asks for the value to be tuned from measured step time.
- *Folding*: when no callback observes individual batch boundaries (no
  per-batch hook, or only hooks that are content with a time interval,
  such as the progress bar), running one step per call would only pay the
  per-call overhead (Python, function dispatch, host sync) for nothing.
  The engine then runs longer executions, never shorter than the compiled
  `steps_per_execution`. The steps, their order and their numbers are the
  same; only how often Python regains control changes. It is off under
  multi-worker strategies (every worker must agree on execution lengths,
  and timings differ between hosts) and with `run_eagerly=True`, and
  `Model.fold_executions = False` turns it off.

Tuning: the first execution of each call (tracing, compilation) is ignored;
the next few are timed (forcing a host sync, only while tuning). From the
median step time the tuner chooses enough steps for an execution to last
about `target_seconds`. The number of steps is a tensor argument of the
compiled function, so changing it never retraces.

Multi-worker: every worker measures (its executions are the same, step for
step, as collectives keep them in lockstep), and reaches its decision at the
same execution; the chief's value is then broadcast (`agree`,
`distribute.broadcast_from_chief`) so every worker runs the same execution
boundaries. Per-worker values would put a batch hook (and any collective in
it) at different steps on different workers.

Step intervals: a callback that must act at exact multiples of N optimizer
steps (TensorBoard with `update_freq=N`) declares `step_interval = N`. The
engine then ends a train execution early wherever it would cross such a
multiple (`cut_at_intervals`), so with `steps_per_execution=16` and N=50 the
executions run 16, 16, 16, 2 steps and the callback sees step 50, then 100.
Only lengths change (never the steps), and every worker computes the same
cut from the same step count.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

MODES = ("train", "test", "predict")


class StepsPerExecutionTuner:
    """Chooses an execution length from measured step times.

    `agree`: called with this process's choice, returns the value to use
    (under multi-worker, the chief's; every worker calls it at the same
    execution, since it is a collective).
    """

    def __init__(
        self,
        *,
        target_seconds: float = 0.05,
        max_steps: int = 1024,
        probes: int = 3,
        agree: Callable[[int], int] | None = None,
    ):
        self.agree = agree
        self.target_seconds = target_seconds
        self.max_steps = max_steps
        self.probes = probes
        self.current = 1
        self._times: list[float] = []
        self._skipped_first = False
        self.tuned = False

    def reset_for_call(self) -> None:
        """A new fit/evaluate/predict call: its first execution may trace again."""
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
            value = max(1, min(self.max_steps, math.ceil(self.target_seconds / per_step)))
            if self.agree is not None:
                value = max(1, min(self.max_steps, int(self.agree(value))))
            self.current = value
            self.tuned = True


class ExecutionLengths:
    """The steps of the next execution, per mode ("train", "test", "predict").

    `steps_per_execution` is the compiled value (an int, or "auto");
    `can_fold` is False where executions must keep the compiled length
    (multi-worker, eager); `agree` makes every worker use the chief's tuned
    value (see `StepsPerExecutionTuner`).
    """

    def __init__(
        self,
        steps_per_execution: int | str = 1,
        *,
        can_fold: bool = True,
        agree: Callable[[int], int] | None = None,
    ):
        self.auto = steps_per_execution == "auto"
        self.minimum = 1 if self.auto else int(steps_per_execution)
        self.can_fold = can_fold
        self.agree = agree
        self._tuners: dict[str, StepsPerExecutionTuner] = {}

    def tuner(
        self, mode: str, *, observed: bool, fold: bool = True
    ) -> StepsPerExecutionTuner | None:
        """The tuner that sets this mode's length, or None for the compiled length.

        `observed`: a callback wants every batch boundary of this mode.
        """
        if not self.auto and (observed or not fold or not self.can_fold):
            return None
        if mode not in self._tuners:
            self._tuners[mode] = StepsPerExecutionTuner(agree=self.agree)
        return self._tuners[mode]

    def steps(self, tuner: StepsPerExecutionTuner | None, steps_left: int | None = None) -> int:
        value = self.minimum if tuner is None else max(self.minimum, tuner.current)
        if steps_left is not None:
            value = min(value, steps_left)
        return max(1, value)


def cut_at_intervals(
    requested: int, global_step: int, intervals: list[int] | tuple[int, ...]
) -> int:
    """`requested` shortened so the execution ends at the next multiple of any interval.

    `global_step` is the optimizer step count before the execution; an execution
    that already starts on a multiple runs up to the next one.
    """
    value = requested
    for interval in intervals:
        value = min(value, interval - global_step % interval)
    return max(1, value)
