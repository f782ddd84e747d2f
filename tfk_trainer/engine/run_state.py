"""The state of one `fit`, `evaluate` or `predict` run: one explicit object.

The driver (engine/loop.py) and the callbacks share what a run needs
through a `RunState`, never through the model's private attributes: the
model makes one per run (engine/fit_run.py for `fit`), hands it to the
driver, and `CallbackList` passes it to every callback that defines
`set_run_state(state)` (tfk_trainer's `Callback` does; Keras callbacks do
not need it and are left alone).

What lives here and who writes it:

- `position`: where training stands (`Position`). The driver creates it
  when `fit` starts and advances it after every execution; BackupAndRestore
  reads it to write a backup.
- `resume_from`: a `Position` that a restored backup asks the run to
  continue at. BackupAndRestore sets it in `on_train_begin`; the driver
  reads and clears it right after.
- `preemption`: a `tfk_trainer.preemption.PreemptionGuard`, or None.
  BackupAndRestore sets it in `on_train_begin`; the driver calls
  `preemption_point()` at every execution boundary and epoch end, where
  (in a cluster, after one all-reduce) every worker saves and exits at the
  same step when any worker received SIGTERM.
- `executor`: the model's compiled functions (`train`, `test`, `predict`,
  `read_logs`) for this compile and strategy.
- `execution_lengths`: the steps per execution, kept by the model across
  runs (its tuners measure once per compile); `fold_executions` whether
  executions may run longer than `steps_per_execution` when no callback
  watches every batch; `steps_per_execution` the compiled value.

This module is a leaf (it imports only `engine/logs.py`, itself a leaf), so
the engine and the callbacks can both import it without a cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tfk_trainer.engine.logs import to_python


@dataclass
class Position:
    """Where training stands: enough to resume exactly (see BackupAndRestore)."""

    epoch: int = 0  # the epoch in progress (or the next one, with step 0)
    step: int = 0  # steps done in that epoch
    consumed: int = 0  # batches drawn from a persistent iterator since it was made
    first_epoch: int = 0  # the epoch a persistent iterator started at
    data_seed: int | None = None  # the array adapter's shuffle seed


@dataclass
class RunState:
    """What the driver and the callbacks share during one run (see the module docstring).

    Args:
        mode: "fit", "evaluate" or "predict" (validation inside `fit` shares
            the fit's state).
        executor: the compiled functions: `train`, `test`, `predict` (each
            called as `fn(iterator, steps, exact)`) and `read_logs()` (the
            metric results as device tensors).
        execution_lengths: a `tfk_trainer.engine.tuning.ExecutionLengths`.
        fold_executions: executions may run longer when no callback watches
            every batch (`Model.fold_executions`).
        steps_per_execution: the compiled value, an int or "auto".
    """

    mode: str
    executor: Any
    execution_lengths: Any
    fold_executions: bool = True
    steps_per_execution: int | str = 1
    position: Position | None = None
    resume_from: Position | None = None
    preemption: Any = None  # a tfk_trainer.preemption.PreemptionGuard

    def preemption_point(self) -> None:
        """A boundary every worker reaches together: a requested preemption saves and
        exits here (`Preempted`); nothing happens without a guard."""
        if self.preemption is not None:
            self.preemption.at_boundary()

    @property
    def jit_compile(self) -> bool:
        """Whether the train step is XLA-compiled (summary ops cannot be)."""
        return bool(getattr(getattr(self.executor, "train", None), "jit_compile", False))

    def read_logs(self) -> Mapping[str, Any]:
        """The metric results as device tensors (read eagerly, nothing copied yet)."""
        return self.executor.read_logs()

    def materialized_logs(self) -> dict[str, Any]:
        """The metric results as Python numbers."""
        return {k: to_python(v) for k, v in self.read_logs().items()}


class EngineState:
    """The engine's per-model state: what `compile()` and the first build made.

    Plain (not a `tf.Module`), so neither the variable walk
    (engine/variables.py skips it by type) nor TF's object graph sees the loss
    trackers, compiled metrics or compiled functions it holds. One object per
    model; a `RunState` per run borrows its executor and execution lengths.
    """

    def __init__(self) -> None:
        self.built = False  # loss, metrics and optimizer ready
        self.network_built = False  # variables created, executor made
        self.compile_config: Any = None
        self.objectives: Any = None  # compile.CompiledObjectives
        self.loss_tracker: Any = None
        self.output_trackers: list = []
        self.execution_lengths: Any = None  # engine.tuning.ExecutionLengths
        self.jit: bool = False
        self.strategy: Any = None
        self.sample_output: Any = None
        self.user_metrics: list = []
        self.input_spec: Any = None
        self.base_compute_loss_calls = 0  # counted at trace time; see Model.compute_loss
        self.trainable: list = []
        self.non_trainable: list = []
        self.layers: list = []
        self.executor: Any = None
        self.output_structure: Any = None
        self.y_spec: Any = None
