"""Preemption: a SIGTERM to any one worker makes every worker save the same step and exit 143.

A preempted machine gets SIGTERM and a short grace period. On one machine
that is simple: note the signal, save at the next execution boundary, exit
with status 143. In a `MultiWorkerMirroredStrategy` cluster only the
preempted worker sees the signal, and a backup of a cluster is a collective
(every worker must call the save, at the same step): if that worker saved
or left alone, the others would block in a collective it never joins and
die with `PeerUnavailableError`, and nothing consistent would be saved.

`PreemptionGuard` owns the SIGTERM flag. `BackupAndRestore` makes one per
`fit` and puts it in the run's `RunState`; the driver calls
`RunState.preemption_point()` at every execution boundary (after the
batch-end hooks) and after each epoch's end hooks. There, under
multi-worker, the guard all-reduces its 0/1 flag across the workers (one
scalar collective per execution, through a `tf.function` traced once per
strategy), so every worker learns at the same boundary that some worker was
signalled; then each one runs the save (the chief into `backup_dir`, the
others into their scratch directories, as every backup does) and raises
`Preempted` (exit status 143). On one worker there is no collective: the
local flag decides, as before. The cost is one tiny all-reduce and a host
read per execution, and only while a `BackupAndRestore` is in the fit.

Why not `tf.distribute.experimental.PreemptionCheckpointHandler` (what
tf-keras's `BackupAndRestore(save_before_preemption=True)` uses): it counts
its own `run` calls and assumes single-step train functions and workers at
most one step apart; it owns the `CheckpointManager` (its own variable in
the checkpoint, `max_to_keep=1`, its own scratch layout) where ours records
the exact training position; it agrees on the step through coordination
service keys (`RUN_TO_CHECKPOINT`) that are never cleared, so a second
`fit` in the same cluster process fails with `AlreadyExistsError`; it exits
through `sys.exit(42)` (or a platform code), not 143; and on GCE CPU and
TPU VMs (detected through the metadata server) it only logs that it is not
supported and never saves. Our boundaries are already identical on every
worker, so one all-reduce there gives the same agreement without those
constraints. See docs/reliability.md, "Preemption in a cluster".
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tfk_trainer import distribute

__all__ = ["PREEMPTED_EXIT_CODE", "Preempted", "PreemptionGuard"]

log = logging.getLogger("tfk_trainer")

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: the conventional status of a terminated process


class Preempted(SystemExit):
    """Raised after saving on SIGTERM (by `BackupAndRestore`, and by the binary); exits 143."""

    def __init__(self, message: str):
        super().__init__(PREEMPTED_EXIT_CODE)
        self.message = message
        # SystemExit prints nothing when it ends the process: say what happened.
        print(f"tfk_trainer: {message}", file=sys.stderr, flush=True)

    def __str__(self) -> str:
        return self.message


# One traced all-reduce per strategy (a new trace per fit would allocate new
# collective keys and cost a trace each time); weak, so strategies still die.
_ANY_FLAG: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _any_flag_function(strategy: tf.distribute.Strategy) -> Callable[[tf.Tensor], tf.Tensor]:
    """A `tf.function` summing a scalar 0/1 flag over every replica of `strategy`."""
    function = _ANY_FLAG.get(strategy)
    if function is None:

        def replica_sum(flag: tf.Tensor) -> tf.Tensor:
            context = tf.distribute.get_replica_context()
            # Made on the replica's device: the collective reduces to where its input lives.
            return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(flag))

        @tf.function(autograph=False)
        def any_flag(flag: tf.Tensor) -> tf.Tensor:
            summed = strategy.run(replica_sum, args=(flag,))
            return strategy.experimental_local_results(summed)[0]

        function = any_flag
        _ANY_FLAG[strategy] = function
    return function


class PreemptionGuard:
    """Owns the SIGTERM flag of one `fit` and makes the cluster agree on it.

    Args:
        strategy: the model's strategy; under multi-worker, `agreed()` is a
            collective every worker must call at the same boundary.
        on_preempt: called on every worker at the boundary where the cluster
            agreed, with whether this worker itself received SIGTERM; it
            saves and raises `Preempted`.
    """

    def __init__(self, strategy: tf.distribute.Strategy, on_preempt: Callable[[bool], Any]):
        self._strategy = strategy
        self._multi_worker = distribute.is_multi_worker(strategy)
        self._on_preempt = on_preempt
        self._signalled = False  # this process received SIGTERM
        self._previous: Any = None
        self._installed = False
        self._flags: dict[bool, tf.Tensor] = {}

    @property
    def signalled(self) -> bool:
        """Whether this process received SIGTERM (since `install`)."""
        return self._signalled

    def request(self) -> None:
        """Marks this worker preempted, as SIGTERM does (for callers with another signal)."""
        self._signalled = True

    def install(self) -> None:
        """Catches SIGTERM from now on (the main thread only: Python delivers signals there)."""
        self._signalled = False
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame):
            self._signalled = True

        self._previous = signal.signal(signal.SIGTERM, handler)
        self._installed = True

    def uninstall(self) -> None:
        """Puts the previous SIGTERM handler back.

        A SIGTERM received and not acted on (it came after the last boundary,
        e.g. while `fit` was ending) is handed to that handler, so it is never
        lost: the binary's handler exits 143, the default one ends the process.
        """
        if not self._installed:
            return
        self._installed = False
        previous = signal.SIG_DFL if self._previous is None else self._previous  # None: set in C
        self._previous = None
        signal.signal(signal.SIGTERM, previous)
        if self._signalled:
            self._signalled = False
            signal.raise_signal(signal.SIGTERM)

    def agreed(self) -> bool:
        """Whether any worker received SIGTERM: the same answer on every worker.

        Under multi-worker this is one scalar all-reduce (a collective: every
        worker must call it at the same boundary); otherwise the local flag.
        """
        if not self._multi_worker:
            return self._signalled
        flag = self._signalled
        if flag not in self._flags:
            self._flags[flag] = tf.constant(1.0 if flag else 0.0, tf.float32)
        total = _any_flag_function(self._strategy)(self._flags[flag])
        return float(total.numpy()) > 0.0

    def at_boundary(self) -> None:
        """An execution or epoch boundary: when the cluster agreed, save and exit."""
        if not self.agreed():
            return
        signalled = self._signalled
        if not signalled:
            log.warning("Another worker of the cluster received SIGTERM: saving and exiting.")
        try:
            # The handler stays installed while saving: a second SIGTERM must not
            # end the process half-way through the backup.
            self._on_preempt(signalled)
        finally:
            self._signalled = False  # acted on: `uninstall` must not deliver it again
            self.uninstall()
