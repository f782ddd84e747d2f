"""`TensorBoard`: Keras's callback, with steps counted in optimizer steps.

Keras 3 counts batch summaries in *executions*: with `steps_per_execution=4`
its `batch_loss` lands at steps 1, 2, 3 instead of 4, 8, 12, and summaries
written inside the model all land at one step, because the step is a Python
int baked in when the train function is traced. Here every step is the
optimizer's `iterations`:

- batch scalars are written at `int(optimizer.iterations)` after the
  execution, and `update_freq=N` means "at every multiple of N optimizer
  steps" (the callback's `step_interval`: the engine ends executions there);
- epoch scalars are at the epoch index, as in Keras, or with
  `epoch_axis="step"` at the optimizer step (docs/tensorboard.md);
- summaries inside the model (`tf.summary.scalar` in a layer's `call`) use a
  step that is read from the iterations variable *in the graph*, and a
  recording condition that is a tensor too, so one traced function logs
  every step at its own step (except under XLA, which cannot compile
  summary ops; they are switched off there).

Nothing is read from the device unless it is written: batch logs are a
`LazyLogs` mapping, materialised only on the executions that log, and the
decision to log is taken from host-side step counts.

Only the chief writes; other workers read the batch logs at the same
executions (reading logs is a collective across workers) but write nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from tfk_trainer import compat, distribute, paths
from tfk_trainer.callbacks.base import Callback
from tfk_trainer.callbacks.tensorboard_args import (
    _parse_profile_batch,
    check_epoch_axis,
    check_histogram_freq,
    check_update_freq,
    warn_embeddings,
)
from tfk_trainer.callbacks.tensorboard_summaries import (
    _as_tf_variable,
    _NextStep,
    _to_float,
    _trace_off,
    current_learning_rate,
    write_weight_summaries,
)

log = logging.getLogger("tfk_trainer")


class TensorBoard(Callback):
    """Writes TensorBoard logs: epoch and batch scalars, histograms, graph, profile.

    Args:
        log_dir: where to write; runs go to `log_dir/train` and
            `log_dir/validation`.
        histogram_freq: write a histogram of every trainable variable every
            this many epochs (0: never).
        write_graph: write the train function's graph once, on the first
            execution of a fit.
        write_images: with histograms, also write 2-D kernels as images.
        write_steps_per_second: log `epoch_steps_per_second`, and with batch
            logging `batch_steps_per_second` (and `batch_examples_per_second`
            when the batch size is in `params`).
        update_freq: "epoch" (only epoch scalars), "batch" (batch scalars
            after every execution), or an int N: batch scalars at every
            multiple of N optimizer steps (the engine ends executions on
            those multiples, however long `steps_per_execution` is: with 16
            and N=50, scalars land at steps 50, 100, 150). It also sets how
            often in-model summaries record.
        epoch_axis: the step that epoch scalars (and histograms) are written
            at. "epoch" (the default, as Keras's callback): the epoch index
            0, 1, 2, ... "step": the optimizer step count at the end of the
            epoch, the axis of the batch scalars and of Model Garden/Orbit
            runs; the `tfk-train` binary uses it, so its train, validation
            and test-evaluation curves share one x axis.
        profile_batch: an optimizer step, or `(start, stop)` steps, to
            profile (rounded out to whole executions); 0 disables it.
        embeddings_freq: accepted for compatibility; the embedding projector
            is not supported (a warning says so when it or
            `embeddings_metadata` is given).
        embeddings_metadata: accepted for compatibility, unused.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike = "logs",
        histogram_freq: int = 0,
        write_graph: bool = True,
        write_images: bool = False,
        write_steps_per_second: bool = False,
        update_freq: str | int = "epoch",
        profile_batch: int | tuple[int, int] | str = 0,
        embeddings_freq: int = 0,
        embeddings_metadata: Any = None,
        epoch_axis: str = "epoch",
    ) -> None:
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        self.epoch_axis = check_epoch_axis(epoch_axis)
        self.histogram_freq = check_histogram_freq(histogram_freq)
        self.write_graph = bool(write_graph)
        self.write_images = bool(write_images)
        self.write_steps_per_second = bool(write_steps_per_second)
        self.update_freq: str | int = check_update_freq(update_freq)
        self._profile_start, self._profile_stop = _parse_profile_batch(profile_batch)
        self.embeddings_freq = embeddings_freq
        self.embeddings_metadata = embeddings_metadata
        warn_embeddings(embeddings_freq, embeddings_metadata)

        self._train_dir = paths.join(self.log_dir, "train")
        self._val_dir = paths.join(self.log_dir, "validation")
        self._writers: dict[str, Any] = {}
        self._chief = True
        self._in_fit = False
        # Summary state pushed for the duration of fit (default writer, step, record_if).
        self._summary_stack: contextlib.ExitStack | None = None
        self._step_var: Any = None
        # Per-callback switch read by the traced recording condition; see _in_model_summaries.
        self._record_var: tf.Variable | None = None
        self._keep_train_writer = False
        self._recording_in_model = False
        self._in_execution = False
        self._previous_recording: Any = None
        self._reset_fit_state()

    # -- small helpers -------------------------------------------------------

    def _reset_fit_state(self) -> None:
        self._first_execution = True
        self._tracing_graph = False
        self._profiling = False
        self._profile_done = False
        self._epoch_start_step = 0
        self._last_logged_step = 0
        self._exec_begin_batch = 0
        self._exec_begin_time = 0.0
        self._rate_steps = 0
        self._rate_seconds = 0.0
        self._epoch_begin_time = 0.0
        self._epoch_train_seconds: float | None = None

    def _writer(self, run: str) -> Any:
        """The writer for `run` ("train" or "validation"), created on first use."""
        writer = self._writers.get(run)
        if writer is None:
            logdir = self._train_dir if run == "train" else self._val_dir
            try:
                writer = tf.summary.create_file_writer(logdir)
            except tf.errors.OpError as e:
                raise paths.path_error(e, "log_dir", self.log_dir, owner="TensorBoard") from e
            self._writers[run] = writer
        return writer

    def _close_writers(self, keep_train: bool = False) -> None:
        for run in list(self._writers):
            writer = self._writers[run]
            if keep_train and run == "train":
                writer.flush()
                continue
            writer.close()
            del self._writers[run]

    def _iterations(self) -> Any:
        optimizer = getattr(self.model, "optimizer", None)
        return getattr(optimizer, "iterations", None)

    def _current_step(self) -> int:
        """The true optimizer step count (a host read of `iterations`)."""
        iterations = self._iterations()
        if iterations is None:
            return 0
        return int(np.asarray(tf.convert_to_tensor(_as_tf_variable(iterations)).numpy()))

    @property
    def step_interval(self) -> int | None:
        """`update_freq=N`: the engine ends train executions on multiples of N steps."""
        return self.update_freq if isinstance(self.update_freq, int) else None

    @property
    def coarse_batch_hooks(self) -> bool:
        """Epoch-only logging needs no batch boundaries (rates are sums over executions)."""
        return self.update_freq == "epoch" and not self._profile_start

    def _steps_per_execution(self) -> int:
        value = getattr(self.run_state, "steps_per_execution", 1)
        return value if isinstance(value, int) and value > 0 else 1  # "auto": tuned, >= 1

    def _learning_rate(self) -> float | None:
        return current_learning_rate(getattr(self.model, "optimizer", None))

    def _write_scalars(self, run: str, prefix: str, values: Mapping[str, Any], step: int) -> None:
        writer = self._writer(run)
        with writer.as_default(), tf.summary.record_if(True):
            for name, value in values.items():
                number = _to_float(value)
                if number is not None:
                    tf.summary.scalar(prefix + name, number, step=step)

    # -- in-model summaries --------------------------------------------------

    def _in_model_summaries(self) -> bool:
        """Whether summaries inside the model record: batch cadence, chief, no XLA."""
        if self.update_freq == "epoch" or not self._chief:
            return False
        # XLA cannot compile summary ops; a traced summary would make the
        # compile fail (or silently cost the XLA speed-up under "auto").
        return not bool(getattr(self.run_state, "jit_compile", False))

    def _should_record(self) -> Any:
        """The recording condition, evaluated where a summary is written.

        Inside a traced function it is a tensor: this callback's switch (off
        during validation and after fit, so a function that captured this
        callback's writer never writes to it later) and, for `update_freq=N`,
        whether the step being computed is a multiple of N. Eagerly (another
        callback writing its own summaries) it defers to the previous
        condition, except during a `run_eagerly` train execution.
        """
        if not tf.inside_function() and not self._in_execution:
            previous = self._previous_recording
            previous = previous() if callable(previous) else previous
            return True if previous is None else previous
        record = tf.convert_to_tensor(self._record_var)
        if self.update_freq == 1:
            return record
        step = tf.convert_to_tensor(_NextStep(self._step_var))
        return tf.logical_and(record, tf.equal(tf.math.floormod(step, self.update_freq), 0))

    def _push_summary_state(self) -> None:
        """Makes the train writer the default, with a graph-read step and condition.

        The engine traces its train function inside fit, so what is default
        here is what the function captures; `_pop_summary_state` restores
        the previous writer, step and condition. With update_freq="epoch"
        (or XLA, or on a non-chief worker) nothing is pushed, as in tf.keras:
        a user's own default writer and `record_if` stay in charge.
        """
        iterations = self._iterations()
        if not self._in_model_summaries() or iterations is None:
            return
        self._step_var = _as_tf_variable(iterations)
        if self._record_var is None:
            with tf.init_scope():
                self._record_var = tf.Variable(False, trainable=False, name="tensorboard_record")
        self._record_var.assign(True)
        self._recording_in_model = True
        # The train writer may now be captured by a traced function: it stays
        # open for later fits with this callback (see on_train_end).
        self._keep_train_writer = True
        self._previous_recording = compat.summary_recording_condition()
        stack = contextlib.ExitStack()
        stack.enter_context(self._writer("train").as_default(step=_NextStep(self._step_var)))
        stack.enter_context(tf.summary.record_if(self._should_record))
        self._summary_stack = stack

    def _pop_summary_state(self) -> None:
        self._recording_in_model = False
        if self._record_var is not None:
            self._record_var.assign(False)
        if self._summary_stack is not None:
            stack, self._summary_stack = self._summary_stack, None
            stack.close()

    # -- graph and profiler --------------------------------------------------

    def _start_graph_trace(self) -> None:
        try:
            tf.summary.trace_on(graph=True, profiler=False)
            self._tracing_graph = True
        except Exception as e:  # noqa: BLE001 - the graph is optional
            warnings.warn(
                f"TensorBoard could not trace the train function's graph: {e}", stacklevel=3
            )

    def _export_graph(self) -> None:
        self._tracing_graph = False
        try:
            with self._writer("train").as_default(), tf.summary.record_if(True):
                tf.summary.trace_export(name="train_function", step=0)
        except Exception as e:  # noqa: BLE001 - the graph is optional
            warnings.warn(
                f"TensorBoard could not write the train function's graph: {e}", stacklevel=3
            )
        finally:
            _trace_off()

    def _start_profiler(self) -> None:
        self._profile_done = True
        try:
            tf.profiler.experimental.start(self._train_dir)
            self._profiling = True
        except Exception as e:  # noqa: BLE001 - e.g. another profiler is running
            warnings.warn(f"TensorBoard could not start the profiler: {e}", stacklevel=3)

    def _stop_profiler(self) -> None:
        if not self._profiling:
            return
        self._profiling = False
        try:
            tf.profiler.experimental.stop()
        except Exception as e:  # noqa: BLE001
            warnings.warn(f"TensorBoard could not stop the profiler: {e}", stacklevel=3)

    def _abandon_previous_fit(self) -> None:
        """Undoes what a fit that raised left behind (the engine skips on_train_end then)."""
        if self._tracing_graph:
            self._tracing_graph = False
            _trace_off()
        self._stop_profiler()
        self._pop_summary_state()

    # -- fit -----------------------------------------------------------------

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self._abandon_previous_fit()
        self._reset_fit_state()
        self._in_fit = True
        self._chief = distribute.is_chief(self.model.distribute_strategy)
        if self._chief:  # before any training: a later failure would cost an epoch
            paths.make_dirs(self.log_dir, "log_dir", owner="TensorBoard")
        start = self._current_step()
        self._epoch_start_step = start
        self._last_logged_step = start
        self._push_summary_state()

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        # One host read per epoch (the device is idle after the last epoch's
        # logs were read); batch steps are then counted on the host.
        self._epoch_start_step = self._current_step()
        self._epoch_begin_time = time.perf_counter()
        self._epoch_train_seconds = None

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._in_execution = True
        if self._first_execution and self.write_graph and self._chief and not self._tracing_graph:
            self._start_graph_trace()
        if self._profile_start and self._chief and not self._profiling and not self._profile_done:
            done = self._epoch_start_step + batch
            if done >= self._profile_stop:
                self._profile_done = True  # the window is already behind us
            elif done + self._steps_per_execution() >= self._profile_start:
                self._start_profiler()
        self._exec_begin_batch = batch
        self._exec_begin_time = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        now = time.perf_counter()
        self._in_execution = False
        step = self._epoch_start_step + batch + 1  # host count; no device read
        first = self._first_execution
        self._first_execution = False
        if self._tracing_graph:
            self._export_graph()
        if not first:  # the first execution includes tracing and compilation
            self._rate_steps += batch + 1 - self._exec_begin_batch
            self._rate_seconds += now - self._exec_begin_time
        if self.update_freq != "epoch" and self._crossed(step):
            self._log_batch(logs, now)
        if self._profiling and step >= self._profile_stop:
            self._stop_profiler()

    def _crossed(self, step: int) -> bool:
        """True when a multiple of `update_freq` was passed since the last batch log."""
        n = self.update_freq
        crossed = step // n > self._last_logged_step // n
        if crossed:
            self._last_logged_step = step
        return crossed

    def _log_batch(self, logs: Mapping[str, Any] | None, end_time: float) -> None:
        # Every worker reads (a collective across workers); only the chief writes.
        values = dict(logs or {})
        steps, seconds = self._rate_steps, self._rate_seconds
        self._rate_steps, self._rate_seconds = 0, 0.0
        if not self._chief:
            return
        step = self._current_step()
        if self.write_steps_per_second and steps:
            # Reading the logs synchronised the device: include the wait.
            seconds += time.perf_counter() - end_time
            if seconds > 0:
                values["steps_per_second"] = steps / seconds
                batch_size = (self.params or {}).get("batch_size")
                if batch_size:
                    values["examples_per_second"] = steps * batch_size / seconds
        self._write_scalars("train", "batch_", values, step)

    def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._in_fit:
            if self._epoch_train_seconds is None:
                self._epoch_train_seconds = time.perf_counter() - self._epoch_begin_time
            # Validation steps do not advance the optimizer: no in-model summaries.
            if self._record_var is not None:
                self._record_var.assign(False)
        else:
            self._chief = distribute.is_chief(self.model.distribute_strategy)

    def on_test_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._in_fit:
            if self._recording_in_model:
                self._record_var.assign(True)
            return
        # evaluate() on its own: Keras logs against the optimizer's step.
        if self._chief and logs:
            step = self._current_step()
            writer = self._writer("validation")
            with writer.as_default(), tf.summary.record_if(True):
                for name, value in logs.items():
                    number = _to_float(value)
                    if number is not None:
                        tf.summary.scalar(f"evaluation_{name}_vs_iterations", number, step=step)
            self._close_writers(keep_train=self._keep_train_writer)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if not self._chief:
            return
        logs = dict(logs or {})
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        val = {k[len("val_") :]: v for k, v in logs.items() if k.startswith("val_")}
        if "learning_rate" not in train:
            lr = self._learning_rate()
            if lr is not None:
                train["learning_rate"] = lr
        if self.write_steps_per_second:
            seconds = self._epoch_train_seconds
            if seconds is None:
                seconds = time.perf_counter() - self._epoch_begin_time
            steps = self._current_step() - self._epoch_start_step
            if seconds > 0 and steps > 0:
                train["steps_per_second"] = steps / seconds
        at = epoch if self.epoch_axis == "epoch" else self._current_step()
        self._write_scalars("train", "epoch_", train, at)
        if val:
            self._write_scalars("validation", "epoch_", val, at)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            self._log_weights(at)
        # Once an epoch, so a running TensorBoard shows it now rather than
        # after the writer's 2-minute flush interval.
        for writer in self._writers.values():
            writer.flush()

    def _log_weights(self, epoch: int) -> None:
        """Histograms (and with write_images, 2-D kernels as images) at step `epoch`
        (the epoch index, or the optimizer step with `epoch_axis="step"`)."""
        with self._writer("train").as_default(), tf.summary.record_if(True):
            write_weight_summaries(self.model.trainable_variables, epoch, self.write_images)

    def _on_train_abort(self) -> None:
        """Fit raised: stop the profiler and graph trace now and flush what was written
        (the writers stay usable; the next fit or `close()` tidies the rest)."""
        self._abandon_previous_fit()
        self._in_fit = False
        self._in_execution = False
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        self._abandon_previous_fit()
        self._in_fit = False
        self._in_execution = False
        # A train writer that a traced function may have captured stays open
        # (flushed): closing it would make the next fit with this callback write
        # to a closed writer. Everything else is closed.
        self._close_writers(keep_train=self._keep_train_writer)

    def close(self) -> None:
        """Closes every writer; later fits with this callback get fresh ones.

        A function traced while the old train writer was default keeps
        referring to it, so in-model summaries stop for that function (its
        recording switch stays off); epoch and batch logs carry on.
        """
        self._abandon_previous_fit()
        if self._record_var is not None:
            self._record_var.assign(False)
            self._record_var = None
        self._keep_train_writer = False
        self._close_writers()
