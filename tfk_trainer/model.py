"""`tfk_trainer.Model`: the Keras `Model` training API on our own engine.

A `Model` wraps any callable network (a Keras 3 layer or model, a
`tf.Module`, a Sonnet module) or is subclassed with `call(inputs,
training=False)`. It is a `tf.Module`, so `tf.train.Checkpoint` tracks the
network and the optimizer, and it finds variables of Keras layers and of
`tf.Module`s alike (a plain `tf.Module` does not see Keras variables).

The override points are Keras's: `train_step`, `test_step`, `predict_step`
run once per replica per step; `compute_loss` and `compute_metrics` are
called from them.
"""

from __future__ import annotations

import collections.abc
import inspect
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfk_trainer import compile as compile_lib
from tfk_trainer import distribute
from tfk_trainer.callbacks.base import CallbackList
from tfk_trainer.callbacks.history import History
from tfk_trainer.callbacks.progbar import ProgbarLogger, resolve_verbose
from tfk_trainer.data import adapters as adapters_lib
from tfk_trainer.data import static as static_lib
from tfk_trainer.data import structure
from tfk_trainer.engine import checks, execution
from tfk_trainer.engine import step as step_lib
from tfk_trainer.engine.loop import (
    Driver,
    EpochPlan,
    Iterators,
    check_validation_freq,
    drop_padding,
    peer_unavailable,
)
from tfk_trainer.engine.tuning import ExecutionLengths

# Attributes of the engine itself, never walked for the network's variables.
_ENGINE_ATTRS = frozenset(
    {
        "optimizer",
        "_loss_tracker",
        "_output_trackers",
        "_state",
        "_compile_config",
        "history",
        "_objectives",
        "_position",
        "_resume_from",
        "_execution_lengths",
        "fold_executions",
    }
)


class _LossTracker(keras.metrics.Mean):
    """The `loss` log: a batch-size-weighted mean across steps and replicas.

    The engine calls `add_shares`: each replica adds `share * global_batch`
    to the total and its own batch size to the count, so the result is the
    mean of the per-batch losses weighted by their real sizes, however a
    batch was split. It is still a `keras.metrics.Mean`, so a custom
    `train_step` may call `update_state(loss)` on it as with Keras.
    """

    def add_shares(self, weighted_total, count):
        self.total.assign_add(tf.cast(weighted_total, self.total.dtype))
        self.count.assign_add(tf.cast(count, self.count.dtype))


class _EngineState:
    """Plain (untracked) holder for compiled functions and caches."""

    def __init__(self) -> None:
        self.built = False  # loss, metrics and optimizer ready
        self.network_built = False  # variables created, executor made
        self.sample_output: Any = None
        self.user_metrics: list = []
        self.input_spec: Any = None
        self.base_compute_loss_calls = 0  # counted at trace time; see compute_loss
        self.trainable: list = []
        self.non_trainable: list = []
        self.layers: list = []
        self.executor: _Executor | None = None
        self.output_structure: Any = None
        self.y_spec: Any = None


class _Executor:
    """The model's compiled functions for one compile() and strategy."""

    def __init__(self, model: Model, jit: bool, allow_fallback: bool, run_eagerly: bool):
        strategy = model.distribute_strategy
        self.train = execution.CompiledFunction(
            lambda j, exact: execution.make_step_loop(
                strategy,
                model.train_step,
                jit=j,
                run_eagerly=run_eagerly,
                exact=exact,
                autograph=model._step_autograph(),
            ),
            jit_compile=jit,
            allow_fallback=allow_fallback,
            kind="train",
        )
        self.test = execution.CompiledFunction(
            lambda j, exact: execution.make_step_loop(
                strategy,
                model.test_step,
                jit=j,
                run_eagerly=run_eagerly,
                exact=exact,
                autograph=model._step_autograph(),
            ),
            jit_compile=jit,
            allow_fallback=allow_fallback,
            kind="test",
        )
        self.predict = execution.CompiledFunction(
            lambda j, exact: execution.make_predict_loop(
                strategy,
                model._predict_replica,
                (model._state.output_structure, tf.TensorSpec([None], tf.bool)),
                jit=j,
                run_eagerly=run_eagerly,
                exact=exact,
                autograph=model._step_autograph(),
            ),
            jit_compile=jit,
            allow_fallback=allow_fallback,
            kind="predict",
        )
        # Read eagerly: it runs once per epoch or progress-bar refresh, where a
        # few eager reads cost less than a traced function per model (and TF's
        # retracing detector would warn once a process has built five models).
        self.read_logs = model._metric_results


# Model methods a step calls that a subclass may override.
_STEP_HOOKS = (
    "train_step",
    "test_step",
    "predict_step",
    "compute_loss",
    "compute_metrics",
    "call",
    "__call__",
)


def _accepts_training(fn: Any) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "training" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def _zeros_for(spec: tf.TensorSpec) -> tf.Tensor:
    shape = (
        [1 if d is None else d for d in spec.shape.as_list()]
        if spec.shape.rank is not None
        else [1]
    )
    if spec.dtype == tf.string:
        return tf.fill(shape, "")
    return tf.zeros(shape, spec.dtype)


class Model(tf.Module):
    """The Keras training API (`compile`, `fit`, `evaluate`, `predict`, `*_on_batch`).

    Args:
        network: the callable to train: a Keras layer or model, a `tf.Module`
            or a Sonnet module. Omit it when subclassing and implementing `call`.
        name: optional module name.
        static_shapes: every batch the same shape (what TPUs need). None (the
            default) turns it on under TPUStrategy only. Training then drops
            or wraps the last partial batch (`static_remainder`), and
            `evaluate`/`predict` pad it and ignore the padding, so their
            results equal the dynamic-shape ones.
        static_remainder: "drop" (skip the last partial training batch) or
            "wrap" (complete it with samples from the start of the epoch;
            array inputs only).
    """

    def __init__(
        self,
        network: Any = None,
        *,
        name: str | None = None,
        static_shapes: bool | None = None,
        static_remainder: str = "drop",
    ):
        super().__init__(name=name)
        if static_shapes not in (None, True, False):
            raise ValueError(
                f"`static_shapes` must be None (on under TPUStrategy), True or False; "
                f"received {static_shapes!r}."
            )
        self.static_shapes = static_shapes
        self.static_remainder = static_lib.check_mode(static_remainder)
        if network is not None and not callable(network):
            raise TypeError(
                "`network` must be callable (a Keras layer/model, a tf.Module with "
                f"__call__, or a Sonnet module); received {type(network).__name__}."
            )
        self.network = network
        self._state = _EngineState()
        self._compile_config = None
        self._objectives = None
        self.optimizer = None
        self._loss_tracker = None
        self._output_trackers: list = []
        self.stop_training = False
        self.history = None
        # Longer executions when no callback watches every batch (engine/tuning.py).
        self.fold_executions = True
        self._execution_lengths = ExecutionLengths()
        self._position = None  # engine.loop.Position of the running fit
        self._resume_from = None  # a Position a restored backup asks fit to resume at
        self._strategy = None
        self._network_takes_training = network is not None and _accepts_training(
            getattr(network, "call", network)
            if isinstance(network, keras.layers.Layer)
            else network
        )
        if isinstance(network, keras.layers.Layer):
            self._network_takes_training = True

    # -- forward -------------------------------------------------------------

    def call(self, inputs: Any, training: bool = False) -> Any:
        """The forward pass; override it when subclassing without a network."""
        if self.network is None:
            raise NotImplementedError(
                "tfk_trainer.Model has no network: pass one (`tfk.Model(net)`) or subclass "
                "Model and implement `call(self, inputs, training=False)`."
            )
        if self._network_takes_training:
            return self.network(inputs, training=training)
        return self.network(inputs)

    def __call__(self, inputs: Any, training: bool = False) -> Any:
        return self.call(inputs, training=training)

    # -- variables -----------------------------------------------------------

    def _walk(self) -> tuple[list, list, list]:
        """Keras layers, bare tf.Variables and Keras metrics reachable from the model.

        Metrics held as attributes (a custom `train_step`'s trackers) join
        `model.metrics`: they are reset each epoch and logged by name.
        """
        layers: list = []
        variables: list = []
        metrics: list = []
        seen: set[int] = set()

        def visit(obj: Any) -> None:
            if obj is None or isinstance(obj, (str, bytes, int, float, bool, np.ndarray)):
                return
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if isinstance(obj, keras.metrics.Metric):
                metrics.append(obj)
            elif isinstance(obj, keras.layers.Layer):
                layers.append(obj)
            elif isinstance(obj, keras.Variable):
                variables.append(obj)
            elif isinstance(obj, tf.Variable):
                variables.append(obj)
            elif isinstance(obj, tf.Module):
                for key in sorted(vars(obj)):
                    if obj is self and key in _ENGINE_ATTRS:
                        continue
                    visit(vars(obj)[key])
            elif isinstance(obj, collections.abc.Mapping):
                for key in sorted(obj, key=str):
                    visit(obj[key])
            elif isinstance(obj, (list, tuple)) or (
                isinstance(obj, collections.abc.Sequence) and not isinstance(obj, (str, bytes))
            ):
                for item in obj:
                    visit(item)

        visit(self)
        return layers, variables, metrics

    def _collect_variables(self) -> tuple[list, list]:
        layers, bare, metrics = self._walk()
        self._state.user_metrics = metrics
        trainable: list = []
        non_trainable: list = []
        seen: set[int] = set()

        def add(v: Any, is_trainable: bool) -> None:
            key = id(v)
            if key in seen:
                return
            seen.add(key)
            (trainable if is_trainable else non_trainable).append(v)

        for layer in layers:
            for v in layer.trainable_variables:
                add(v, True)
            for v in layer.non_trainable_variables:
                add(v, False)
        for v in bare:
            add(v, bool(getattr(v, "trainable", True)))
        self._state.layers = layers
        return trainable, non_trainable

    @property
    def trainable_variables(self) -> list:
        if self._state.network_built:
            return list(self._state.trainable)
        return self._collect_variables()[0]

    @property
    def non_trainable_variables(self) -> list:
        if self._state.network_built:
            return list(self._state.non_trainable)
        return self._collect_variables()[1]

    @property
    def variables(self) -> list:
        return self.trainable_variables + self.non_trainable_variables

    @property
    def weights(self) -> list:
        return self.variables

    @property
    def trainable_weights(self) -> list:
        return self.trainable_variables

    @property
    def non_trainable_weights(self) -> list:
        return self.non_trainable_variables

    def get_weights(self) -> list[np.ndarray]:
        return [np.array(v.numpy()) for v in self.variables]

    def set_weights(self, weights: list) -> None:
        variables = self.variables
        if len(weights) != len(variables):
            raise ValueError(
                f"`set_weights` expects {len(variables)} arrays (one per variable); received {len(weights)}."
            )
        for v, w in zip(variables, weights):
            if tuple(v.shape) != tuple(np.shape(w)):
                raise ValueError(
                    f"Weight shape mismatch for variable {v.name}: expected {tuple(v.shape)}, "
                    f"received {np.shape(w)}."
                )
            v.assign(w)

    @property
    def losses(self) -> list:
        """Regularization and `add_loss` losses of the Keras layers, from the last call."""
        layers = self._state.layers if self._state.network_built else self._walk()[0]
        out = []
        for layer in layers:
            out.extend(layer.losses)
        return out

    def _static_mode(self, training: bool) -> str | None:
        """The static-shape mode for a new adapter, or None for dynamic shapes."""
        on = self.static_shapes
        if on is None:
            on = execution._is_tpu_strategy(self.distribute_strategy)
        if not on:
            return None
        return self.static_remainder if training else "pad"

    def _progbar_verbose(self, verbose: int) -> int:
        """Across workers, reading logs is a collective that every worker must join
        together, so the bar cannot refresh on each worker's own clock: one line
        per epoch instead."""
        if verbose == 1 and execution._is_multi_worker(self.distribute_strategy):
            return 2
        return verbose

    def _run_guarded(self, loop: Any, *args, **kwargs) -> Any:
        """Runs a driver loop; a lost cluster peer becomes a clear `PeerUnavailableError`
        wherever it surfaces (a step, a metric read, a checkpoint write)."""
        try:
            return loop(*args, **kwargs)
        except tf.errors.OpError as e:
            clear = (
                peer_unavailable(e)
                if execution._is_multi_worker(self.distribute_strategy)
                else None
            )
            if clear is None:
                raise
            raise clear from e

    def _check_static_batch(self, adapter: Any) -> None:
        replicas = self.distribute_strategy.num_replicas_in_sync
        size = adapter.batch_size
        if size is not None and size % replicas:
            raise ValueError(
                f"Static-shape mode splits each batch evenly across the {replicas} replicas, "
                f"but the batch size is {size}. Use a batch size divisible by {replicas}."
            )

    # -- compile -------------------------------------------------------------

    @property
    def distribute_strategy(self) -> tf.distribute.Strategy:
        return self._strategy or tf.distribute.get_strategy()

    @property
    def compiled(self) -> bool:
        return self._compile_config is not None

    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        loss_weights=None,
        metrics=None,
        weighted_metrics=None,
        run_eagerly=False,
        steps_per_execution=1,
        jit_compile="auto",
        auto_scale_loss=True,
    ) -> None:
        """Configures the model for training (the seed's nine arguments).

        Build and compile under `strategy.scope()` to train under a strategy,
        exactly as with Keras; the strategy in scope here is the one used.
        """
        strategy = tf.distribute.get_strategy()
        with strategy.scope():
            config = compile_lib.check_compile_args(
                optimizer=optimizer,
                loss=loss,
                loss_weights=loss_weights,
                metrics=metrics,
                weighted_metrics=weighted_metrics,
                run_eagerly=run_eagerly,
                steps_per_execution=steps_per_execution,
                jit_compile=jit_compile,
                auto_scale_loss=auto_scale_loss,
            )
            self._jit = execution.resolve_jit_compile(
                config.jit_compile, strategy, config.run_eagerly
            )
            policy = keras.config.dtype_policy()
            if (
                auto_scale_loss
                and getattr(policy, "name", "") == "mixed_float16"
                and not isinstance(config.optimizer, keras.optimizers.LossScaleOptimizer)
            ):
                config.optimizer = keras.optimizers.LossScaleOptimizer(config.optimizer)
        self._strategy = strategy
        self._compile_config = config
        self._execution_lengths = ExecutionLengths(
            config.steps_per_execution,
            can_fold=not (config.run_eagerly or distribute.is_multi_worker(strategy)),
        )
        self.optimizer = config.optimizer
        self._objectives = None
        self._loss_tracker = None
        self._state.built = False
        self._state.network_built = False
        self._state.executor = None

    def _require_compiled(self, method: str) -> None:
        if self._compile_config is None:
            raise RuntimeError(
                f"You must call `compile()` before `{method}()`: the model has no optimizer, "
                "loss or metrics yet."
            )

    @property
    def _executor(self) -> _Executor:
        return self._state.executor

    def _build_network(self, x_spec: Any) -> None:
        """Creates the network's variables and the predict function.

        Runs once, eagerly and under the strategy scope, on zeros shaped like
        one batch, so no variable is ever created inside a step.
        """
        state = self._state
        if state.network_built:
            return
        if self._compile_config is None:
            self._strategy = tf.distribute.get_strategy()
            self._jit = execution.resolve_jit_compile("auto", self._strategy, False)
        with self.distribute_strategy.scope():
            dummy = tf.nest.map_structure(_zeros_for, x_spec)
            try:
                y_pred = self(dummy, training=False)
            except Exception as e:
                detail = checks.strip_ansi(str(e))  # Keras colours its layer names
                raise ValueError(
                    f"Calling the model on `x` (a batch shaped like the data) failed: "
                    f"{type(e).__name__}: {detail}\nInput structure: {x_spec}"
                ) from e
        state.output_structure = tf.nest.map_structure(
            lambda t: tf.TensorSpec([None] + list(t.shape[1:]), t.dtype), y_pred
        )
        state.sample_output = y_pred
        state.input_spec = x_spec
        state.trainable, state.non_trainable = self._collect_variables()
        config = self._compile_config
        state.executor = _Executor(
            self,
            self._jit,
            allow_fallback=config is None or config.jit_compile == "auto",
            run_eagerly=bool(config and config.run_eagerly),
        )
        state.network_built = True

    def _ensure_built(self, element_spec: tuple) -> None:
        """Builds the network, then resolves loss and metrics and builds the optimizer."""
        self._build_network(element_spec[0])
        if self._state.built:
            return
        y_spec = element_spec[1] if len(element_spec) > 1 else None
        config = self._compile_config
        with self.distribute_strategy.scope():
            objectives = compile_lib.build_objectives(
                config, y_spec, self._state.sample_output, self._model_output_names()
            )
            has_loss = any(o.loss is not None for o in objectives.outputs)
            if has_loss and y_spec is None:
                raise ValueError(
                    "The model was compiled with a loss, but the data has no targets `y`. "
                    "Pass `y`, or yield `(x, y)` from the dataset."
                )
            if has_loss and any(spec.dtype == tf.string for spec in tf.nest.flatten(y_spec)):
                raise TypeError(
                    f"The targets `y` are strings ({y_spec}), but the loss needs numbers. "
                    "Encode the labels as integers (e.g. with keras.layers.StringLookup) first."
                )
            custom_step = type(self).train_step is not Model.train_step
            if not has_loss and not self.losses and not custom_step:
                raise ValueError(
                    "The model has no loss to optimize: pass `loss` to compile() (or add "
                    "losses with `add_loss` in a Keras layer)."
                )
            # No compiled loss and a custom train_step (a GAN, say): no `loss` log.
            self._loss_tracker = _LossTracker(name="loss") if has_loss or self.losses else None
            self._output_trackers = [
                _LossTracker(name=o.log_name) if o.log_name else None for o in objectives.outputs
            ]
            if not self.optimizer.built:
                self.optimizer.build(self._state.trainable)
        if len(element_spec) > 2:
            objectives.flatten_weights(element_spec[2])  # unknown output keys: a clear error now
        # Targets the loss cannot take: named now, not from inside the traced step. The
        # output spec is exact only when the inputs' dims are (the model was called on
        # a dummy batch); custom steps may transform `y` before any loss sees it.
        if y_spec is not None and self._standard_steps() and checks.fully_known(element_spec[0]):
            checks.check_targets_fit_losses(objectives, y_spec, self._state.output_structure)
        self._objectives = objectives
        self._state.y_spec = y_spec
        self._state.built = True

    def _standard_steps(self) -> bool:
        """No custom train/test step or compute_loss: targets reach the compiled losses as given."""
        cls = type(self)
        return (
            cls.train_step is Model.train_step
            and cls.test_step is Model.test_step
            and cls.compute_loss is Model.compute_loss
        )

    def _step_autograph(self) -> bool:
        """Whether the compiled steps are traced with autograph.

        Only when a step runs user code that autograph converts: an override
        of a step hook (`train_step`, `compute_loss`, `call`, ...), a network
        that is not a Keras layer (a `tf.Module`, a function), or a loss,
        loss function or metric class defined outside Keras and the engine.
        Keras layers are never converted (autograph skips Keras, as Keras's
        own fit does), and the engine's step code has no Python control flow
        on tensors: converting it built the same graph and cost seconds of a
        fresh process's first step. Asked when a compiled function is first
        built, so the compiled losses and metrics are known.
        """
        cls = type(self)
        if not all(execution.library_code(getattr(cls, name, None)) for name in _STEP_HOOKS):
            return True
        if self.network is not None and not isinstance(self.network, keras.layers.Layer):
            return True
        objectives = self._objectives
        if objectives is None:
            return False
        if any(execution.loss_needs_autograph(o.loss) for o in objectives.outputs if o.loss):
            return True
        return not all(
            execution.library_code(getattr(type(m.metric), "update_state", None))
            for m in objectives.metrics
        )

    def _check_labels(self, adapter: Any, argument: str = "y") -> None:
        """Sparse labels out of range, for in-memory arrays (one min/max per label array).

        Without it TensorFlow raises from inside the step on a CPU, and under XLA
        or on a GPU the loss silently becomes NaN.
        """
        if not isinstance(adapter, adapters_lib.ArrayAdapter) or not self._standard_steps():
            return
        arrays = adapter.arrays
        if len(arrays) > 1 and self._objectives is not None:
            checks.check_sparse_labels(
                self._objectives, arrays[1], self._state.sample_output, argument
            )

    # -- metrics -------------------------------------------------------------

    @property
    def metrics(self) -> list:
        """The loss trackers and compiled metrics (Keras `Metric` objects)."""
        if not self._state.built:
            return []
        trackers = [t for t in [self._loss_tracker] + self._output_trackers if t is not None]
        compiled = [m.metric for m in self._objectives.metrics]
        return trackers + compiled + list(self._state.user_metrics)

    @property
    def metrics_names(self) -> list[str]:
        """The names of `evaluate()`'s list, in its order (Keras gets this wrong)."""
        if not self._state.built:
            return []
        loss = ["loss"] if self._loss_tracker is not None else []
        return loss + self._objectives.metric_names + [m.name for m in self._state.user_metrics]

    def reset_metrics(self) -> None:
        for m in self.metrics:
            m.reset_state()

    def _metric_results(self) -> dict[str, tf.Tensor]:
        results = {}
        if self._loss_tracker is not None:
            results["loss"] = self._loss_tracker.result()
        for output, tracker in zip(self._objectives.outputs, self._output_trackers):
            if tracker is not None:
                results[output.log_name] = tracker.result()
        for compiled in self._objectives.metrics:
            results[compiled.name] = compiled.metric.result()
        for metric in self._state.user_metrics:
            results[metric.name] = metric.result()
        return results

    def _model_output_names(self) -> list[str] | None:
        names = getattr(self.network, "output_names", None) if self.network is not None else None
        return list(names) if names else None

    def _materialized_logs(self) -> dict[str, Any]:
        raw = self._executor.read_logs()
        return {k: _to_python(v) for k, v in raw.items()}

    # -- override points (run per replica) -----------------------------------

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ) -> tf.Tensor:
        """This replica's share of the batch loss.

        Summed over replicas it is the batch loss: each output's loss is
        divided by the global number of elements, and the regularization
        losses by the number of replicas.
        """
        self._state.base_compute_loss_calls += 1
        loss, _ = self._loss_and_global_batch(x, y, y_pred, sample_weight)
        return loss

    def _loss_and_global_batch(
        self, x, y, y_pred, sample_weight, valid=None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """`(this replica's loss share, global batch size)`, padding excluded."""
        total, global_batch, _ = self._loss_terms(x, y, y_pred, sample_weight, valid)
        return total, global_batch

    def _loss_terms(self, x, y, y_pred, sample_weight, valid=None):
        """`(total share, global batch, per-output unweighted shares)` for one replica.

        One all-reduce carries every output's element count and the local
        batch size; each output's loss sum is divided by its global count.
        """
        objectives = self._objectives
        local_batch = _local_batch(x if x is not None else y_pred, valid)
        outputs = objectives.outputs
        flat_true = objectives.flatten(y, "y") if y is not None else [None] * len(outputs)
        flat_pred = objectives.flatten(y_pred, "model outputs")
        flat_weights = objectives.flatten_weights(sample_weight)
        sums, counts, reducible = [], [], []
        for output, yt, yp, sw in zip(outputs, flat_true, flat_pred, flat_weights):
            if output.loss is None:
                sums.append(None)
                continue
            local_sum, count, _ = step_lib.loss_sum_and_count(output.loss, yt, yp, sw, valid)
            sums.append(tf.cast(local_sum, tf.float32))
            if count is not None:
                reducible.append(len(counts))
                counts.append(tf.cast(count, tf.float32))
            else:
                reducible.append(None)
        if step_lib.num_replicas() == 1:
            reduced = counts + [local_batch]  # nothing to sum: no stack, no slices
        else:
            reduced = step_lib.all_reduce_sum(tf.stack(counts + [local_batch]))
        global_batch = reduced[-1]
        terms, shares = [], []
        slots = iter(reducible)
        for output, local_sum in zip(outputs, sums):
            if local_sum is None:
                shares.append(None)
                continue
            slot = next(slots)
            share = local_sum if slot is None else step_lib.divide_no_nan(local_sum, reduced[slot])
            shares.append(share)
            terms.append(share if output.weight == 1 else output.weight * share)
        extra = self.losses
        if extra:
            terms.append(
                tf.add_n([tf.cast(v, tf.float32) for v in extra]) / step_lib.num_replicas()
            )
        # Summed in order, as before; one unweighted output is its own total (no ops).
        total = tf.constant(0.0, tf.float32) if not terms else terms[0]
        for term in terms[1:]:
            total += term
        return total, global_batch, shares

    def compute_metrics(self, x, y, y_pred, sample_weight=None) -> None:
        """Updates the compiled metrics (plain ones unweighted, as Keras does)."""
        self._update_compiled_metrics(y, y_pred, sample_weight, None)

    def _update_metrics(self, y, y_pred, sample_weight, valid) -> None:
        """Calls a `compute_metrics` override, or updates the compiled metrics directly."""
        if type(self).compute_metrics is not Model.compute_metrics:
            weights = sample_weight
            if valid is not None:
                weights = _rows(valid) if weights is None else _times_rows(weights, valid)
            self.compute_metrics(None, y, y_pred, weights)
            return
        self._update_compiled_metrics(y, y_pred, sample_weight, valid)

    def _update_compiled_metrics(self, y, y_pred, sample_weight, valid) -> None:
        objectives = self._objectives
        flat_true = objectives.flatten(y, "y") if y is not None else None
        flat_pred = objectives.flatten(y_pred, "model outputs")
        flat_weights = objectives.flatten_weights(sample_weight)
        for compiled in objectives.metrics:
            i = compiled.output
            weights = flat_weights[i] if compiled.weighted else None
            if valid is not None:
                weights = _rows(valid) if weights is None else _times_rows(weights, valid)
            y_true = flat_true[i] if flat_true is not None else None
            if weights is None:
                compiled.metric.update_state(y_true, flat_pred[i])
            else:
                compiled.metric.update_state(y_true, flat_pred[i], sample_weight=weights)

    def _track_loss(
        self, loss: tf.Tensor, global_batch: tf.Tensor, x: Any, valid=None, shares=None
    ) -> None:
        """Batch-size-weighted means of the total and of each output's unweighted loss."""
        local_batch = _local_batch(x, valid)
        if self._loss_tracker is not None:
            self._loss_tracker.add_shares(loss * global_batch, local_batch)
        for tracker, share in zip(self._output_trackers, shares or []):
            if tracker is not None and share is not None:
                tracker.add_shares(share * global_batch, local_batch)

    def _loss_for_step(
        self, x, y, y_pred, sample_weight, valid=None, training=True
    ) -> tuple[tf.Tensor, tf.Tensor, list | None]:
        if type(self).compute_loss is Model.compute_loss:
            return self._loss_terms(x, y, y_pred, sample_weight, valid)
        if valid is not None:
            sample_weight = (
                _rows(valid) if sample_weight is None else _times_rows(sample_weight, valid)
            )
        calls = self._state.base_compute_loss_calls
        loss = tf.cast(
            self.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
            ),
            tf.float32,
        )
        local_batch = _local_batch(x, valid)
        global_batch = step_lib.all_reduce_sum(local_batch)
        if self._state.base_compute_loss_calls == calls:
            # A plain local mean: weight it by this replica's part of the batch.
            loss = step_lib.divide_no_nan(loss * local_batch, global_batch)
        return loss, global_batch, None

    def train_step(self, data: Any) -> None:
        """One replica's training step: forward, loss, gradients, update, metrics."""
        data, valid = structure.split_padding(data)
        x, y, sample_weight = structure.unpack_x_y_sample_weight(data)
        variables = self._state.trainable
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss, global_batch, shares = self._loss_for_step(x, y, y_pred, sample_weight, valid)
            scaled = (
                self.optimizer.scale_loss(loss) if hasattr(self.optimizer, "scale_loss") else loss
            )
        grads = tape.gradient(scaled, variables)
        self._apply_gradients(grads, variables)
        self._track_loss(loss, global_batch, x, valid, shares)
        self._update_metrics(y, y_pred, sample_weight, valid)

    def _apply_gradients(self, grads: list, variables: list) -> None:
        """`optimizer.apply`, with clipping moved after the cross-replica sum.

        Keras clips each replica's gradients before they are summed, so 2
        replicas and 1 device clip different things. With clipping set and
        several replicas, the gradients are summed here, clipped once (by
        the optimizer's own rule, on the unscaled values), and each replica
        hands the optimizer 1/n of the result; its all-reduce adds the n
        equal shares back up.
        """
        optimizer = self.optimizer
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        replicas = step_lib.num_replicas()
        clips = ("clipnorm", "clipvalue", "global_clipnorm")
        if (
            replicas == 1
            or not any(getattr(inner, a, None) for a in clips)
            or getattr(inner, "gradient_accumulation_steps", None)
            or not hasattr(inner, "_clip_gradients")
        ):
            optimizer.apply(grads, variables)
            return
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        summed = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, [g for g, _ in pairs]
        )
        scale = getattr(optimizer, "dynamic_scale", None) if inner is not optimizer else None
        if scale is not None:
            summed = [g / tf.cast(scale, g.dtype) for g in summed]
        clipped = inner._clip_gradients(summed)
        if scale is not None:
            clipped = [g * tf.cast(scale, g.dtype) for g in clipped]
        # Each share is within the clip bounds, so the optimizer's own clipping
        # (left on: replicas trace concurrently, and shared state must not be
        # mutated) leaves it unchanged.
        optimizer.apply([g / replicas for g in clipped], [v for _, v in pairs])

    def test_step(self, data: Any) -> None:
        """One replica's evaluation step: forward, loss, metrics."""
        data, valid = structure.split_padding(data)
        x, y, sample_weight = structure.unpack_x_y_sample_weight(data)
        y_pred = self(x, training=False)
        loss, global_batch, shares = self._loss_for_step(x, y, y_pred, sample_weight, valid, False)
        self._track_loss(loss, global_batch, x, valid, shares)
        self._update_metrics(y, y_pred, sample_weight, valid)

    def predict_step(self, data: Any) -> Any:
        """One replica's prediction step."""
        x, _, _ = structure.unpack_x_y_sample_weight(data)
        return self(x, training=False)

    def _predict_replica(self, data: Any) -> tuple[Any, tf.Tensor]:
        """`(outputs, valid rows)`: the driver drops padded rows."""
        data, valid = structure.split_padding(data)
        outputs = self.predict_step(data)
        if valid is None:
            first = tf.nest.flatten(outputs)[0]
            valid = tf.ones(tf.shape(first)[:1], tf.bool)
        return outputs, valid

    # -- fit / evaluate / predict --------------------------------------------

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        class_weight=None,
        sample_weight=None,
        initial_epoch=0,
        steps_per_epoch=None,
        validation_steps=None,
        validation_batch_size=None,
        validation_freq=1,
    ) -> History:
        """Trains the model for a fixed number of epochs; returns a `History`."""
        self._require_compiled("fit")
        verbose = resolve_verbose(verbose)
        _check_int(epochs, "epochs", minimum=0)
        _check_int(initial_epoch, "initial_epoch", minimum=0)
        if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)):
            raise TypeError(
                f"`validation_split` must be a float in [0, 1); received {validation_split!r}."
            )
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"`validation_split` must be in [0, 1); received {validation_split}.")
        validation_freq = check_validation_freq(validation_freq)
        if validation_batch_size is not None:
            _check_int(validation_batch_size, "validation_batch_size", minimum=1)

        if validation_split and validation_data is None:
            if not structure.is_array_structure(x):
                raise ValueError(
                    "`validation_split` is only supported for NumPy arrays and tensors; "
                    f"received x of type {type(x).__name__}. Pass `validation_data` instead."
                )
            (x, y, sample_weight), validation_data = adapters_lib.train_validation_split(
                (x, y, sample_weight), validation_split
            )
            if validation_data[2] is None:
                validation_data = validation_data[:2]

        adapter = adapters_lib.get_adapter(
            x,
            y,
            sample_weight,
            batch_size=batch_size,
            shuffle=shuffle,
            class_weight=class_weight,
            static=self._static_mode(training=True),
        )
        if self._static_mode(training=True):
            self._check_static_batch(adapter)
        plan = EpochPlan.create(adapter, steps_per_epoch, "steps_per_epoch")
        if adapter.one_shot and steps_per_epoch is None and epochs - initial_epoch > 1:
            raise ValueError(
                "`x` is a one-shot generator, which provides a single pass of data, but "
                f"fit() was asked for {epochs - initial_epoch} epochs. Pass `steps_per_epoch` "
                "(with an infinite generator), or a callable that returns a fresh generator."
            )
        self._build_network(adapter.element_spec[0])
        if class_weight is not None and tf.nest.is_nested(self._state.output_structure):
            raise ValueError(
                "`class_weight` is only supported for models with a single output; this model "
                f"returns {tf.nest.map_structure(lambda s: tuple(s.shape), self._state.output_structure)}. "
                "Pass per-output `sample_weight` instead."
            )
        self._ensure_built(adapter.element_spec)
        self._check_labels(adapter)

        validation = None
        if validation_data is not None:
            vx, vy, vsw = _unpack_validation_data(validation_data)
            val_adapter = adapters_lib.get_adapter(
                vx,
                vy,
                vsw,
                batch_size=(validation_batch_size or batch_size)
                if structure.is_array_structure(vx)
                else validation_batch_size,
                shuffle=False,
                static=self._static_mode(training=False),
                argument="validation_data",
            )
            self._check_validation_inputs(val_adapter.element_spec, adapter.element_spec)
            self._check_labels(val_adapter, "validation_data")
            val_plan = EpochPlan.create(val_adapter, validation_steps, "validation_steps")
            # Validation restarts from the beginning each time, except a one-shot
            # generator, which can only continue where the last validation stopped.
            val_plan.persistent = val_adapter.one_shot
            if (
                val_adapter.one_shot
                and validation_steps is None
                and _validation_count(initial_epoch, epochs, validation_freq) > 1
            ):
                raise ValueError(
                    "`validation_data` is a one-shot generator, which provides a single pass "
                    "of data, but validation runs more than once. Pass `validation_steps` "
                    "(with an infinite generator), or a callable that returns a fresh generator."
                )
            driver = Driver(self)
            persistent_val = Iterators(self.distribute_strategy, val_plan, 0)

            def validation() -> dict[str, float]:
                iterators = (
                    persistent_val
                    if val_plan.persistent
                    else Iterators(self.distribute_strategy, val_plan, 0)
                )
                return driver.evaluate_loop(val_plan, callback_list, iterators=iterators)

        history = History()
        user_callbacks = _callback_list(callbacks)
        # History (and the progress bar) come after the user's callbacks, as in
        # Keras, so keys a callback adds to the epoch logs (learning_rate) are kept.
        all_callbacks = user_callbacks + [history]
        if verbose and not any(
            isinstance(cb, (ProgbarLogger, keras.callbacks.ProgbarLogger)) for cb in user_callbacks
        ):
            all_callbacks.append(ProgbarLogger(self._progbar_verbose(verbose)))
        callback_list = CallbackList(
            all_callbacks,
            model=self,
            params={
                "verbose": verbose,
                "epochs": epochs,
                "steps": plan.steps,
                "batch_size": adapter.batch_size,
                "steps_per_execution": self._compile_config.steps_per_execution,
            },
        )
        try:
            self._run_guarded(
                Driver(self).fit_loop,
                plan,
                callback_list,
                initial_epoch=initial_epoch,
                epochs=epochs,
                validation=validation,
                validation_freq=validation_freq,
            )
        except BaseException:
            callback_list.on_train_abort()
            raise
        finally:
            adapter.close()
            if validation_data is not None:
                val_adapter.close()
        self.history = history
        return history

    def evaluate(
        self,
        x=None,
        y=None,
        batch_size=None,
        verbose="auto",
        sample_weight=None,
        steps=None,
        callbacks=None,
        return_dict=False,
        **kwargs,
    ):
        """Returns the loss and metrics in test mode (scalar, list, or dict)."""
        if kwargs:
            raise TypeError(
                f"evaluate() got unexpected keyword arguments {sorted(kwargs)}; accepted: x, y, "
                "batch_size, verbose, sample_weight, steps, callbacks, return_dict."
            )
        self._require_compiled("evaluate")
        verbose = resolve_verbose(verbose)
        adapter = adapters_lib.get_adapter(
            x,
            y,
            sample_weight,
            batch_size=batch_size,
            shuffle=False,
            static=self._static_mode(training=False),
        )
        plan = EpochPlan.create(adapter, steps, "steps")
        plan.persistent = False
        self._ensure_built(adapter.element_spec)
        self._check_labels(adapter)
        all_callbacks = _callback_list(callbacks)
        if verbose:
            all_callbacks.append(ProgbarLogger(self._progbar_verbose(verbose)))
        callback_list = CallbackList(
            all_callbacks, model=self, params={"verbose": verbose, "epochs": 1, "steps": plan.steps}
        )
        try:
            logs = self._run_guarded(Driver(self).evaluate_loop, plan, callback_list)
        finally:
            adapter.close()
        return self._format_results(logs, return_dict)

    def _format_results(self, logs: dict[str, Any], return_dict: bool):
        if return_dict:
            return dict(sorted(logs.items()))
        values = [logs[name] for name in self.metrics_names if name in logs]
        values += [logs[k] for k in sorted(logs) if k not in self.metrics_names]
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Generates predictions; nested and dict outputs keep their structure."""
        verbose = resolve_verbose(verbose)
        static = self._static_mode(training=False)
        if execution._is_multi_worker(self.distribute_strategy):
            # Outputs are all-gathered across workers; padded batches give every
            # replica the same shape, which the collective needs.
            static = "pad"
        adapter = adapters_lib.get_adapter(x, batch_size=batch_size, shuffle=False, static=static)
        if static:
            self._check_static_batch(adapter)
        plan = EpochPlan.create(adapter, steps, "steps")
        plan.persistent = False
        self._ensure_predict_ready(adapter.element_spec)
        all_callbacks = _callback_list(callbacks)
        if verbose:
            all_callbacks.append(ProgbarLogger(self._progbar_verbose(verbose)))
        callback_list = CallbackList(
            all_callbacks, model=self, params={"verbose": verbose, "epochs": 1, "steps": plan.steps}
        )
        try:
            return self._run_guarded(Driver(self).predict_loop, plan, callback_list)
        finally:
            adapter.close()

    def _ensure_predict_ready(self, element_spec: tuple) -> None:
        """Predict needs no compile(): only the network and the predict function."""
        self._build_network(element_spec[0])

    def _check_validation_inputs(self, val_spec: tuple, train_spec: tuple) -> None:
        """Raises a ValueError naming `validation_data` when its inputs cannot feed the
        model, before training starts (not from inside the traced validation step).

        Inputs with the training inputs' structure and known non-batch dims pass at
        no cost. Others (a different feature count, other dict keys, or sequences of
        another length) are tried on the model with a dummy batch, eagerly, as the
        model was built: a model that accepts several shapes is not rejected.
        """
        given, expected = val_spec[0], train_spec[0]
        if checks.inputs_compatible(given, expected):
            return
        try:
            with self.distribute_strategy.scope():
                self(tf.nest.map_structure(_zeros_for, given), training=False)
            return
        except Exception as e:  # noqa: BLE001 - reported below, naming the argument
            reason = checks.short_reason(e)
        raise ValueError(
            f"The inputs of `validation_data` do not fit the model: received inputs of shape "
            f"{checks.describe_spec(given)}, but the training data `x` has "
            f"{checks.describe_spec(expected)} (the model was built on it). Calling the "
            f"model on the validation inputs failed: {reason}."
        )

    # -- single batches ------------------------------------------------------

    def _single_batch(self, x, y, sample_weight, class_weight, argument: str) -> tuple:
        if not structure.is_array_structure(x):
            raise TypeError(
                f"`x` for {argument}() must be array-like (an array, a tensor, or a list/dict "
                f"of them); received {type(x).__name__}."
            )
        return adapters_lib.ArrayAdapter(
            x, y, sample_weight, shuffle=False, class_weight=class_weight, whole_batch=True
        )

    def _single_batch_is_exact(self) -> bool:
        """One worker reads the one batch for sure; across workers a shard may be empty."""
        return not execution._is_multi_worker(self.distribute_strategy)

    def _run_single(self, function, adapter) -> Any:
        dataset = adapter.get_dataset()
        self._ensure_built(dataset.element_spec)
        iterator = iter(self.distribute_strategy.experimental_distribute_dataset(dataset))
        exact = self._single_batch_is_exact()
        while True:
            try:
                return getattr(self._executor, function)(iterator, tf.constant(1, tf.int64), exact)
            except execution.XlaFallback:
                iterator = iter(self.distribute_strategy.experimental_distribute_dataset(dataset))

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One gradient update on one batch; returns that batch's loss and metrics."""
        self._require_compiled("train_on_batch")
        if class_weight is not None:
            from tfk_trainer.data import class_weight as class_weight_lib

            class_weight_lib.validate(class_weight)
        adapter = self._single_batch(x, y, sample_weight, class_weight, "train_on_batch")
        self._ensure_built(adapter.element_spec)
        self._check_labels(adapter)
        self.reset_metrics()
        self._run_single("train", adapter)
        return self._format_results(self._materialized_logs(), return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """Evaluates one batch; returns its loss and metrics."""
        self._require_compiled("test_on_batch")
        adapter = self._single_batch(x, y, sample_weight, None, "test_on_batch")
        self._ensure_built(adapter.element_spec)
        self._check_labels(adapter)
        self.reset_metrics()
        self._run_single("test", adapter)
        return self._format_results(self._materialized_logs(), return_dict)

    def predict_on_batch(self, x):
        """Predictions for one batch, as NumPy."""
        adapter = self._single_batch(x, None, None, None, "predict_on_batch")
        dataset = adapter.get_dataset()
        self._ensure_predict_ready(dataset.element_spec)
        iterator = iter(self.distribute_strategy.experimental_distribute_dataset(dataset))
        _, outputs = self._executor.predict(
            iterator, tf.constant(1, tf.int64), self._single_batch_is_exact()
        )
        return drop_padding(outputs)

    # -- saving --------------------------------------------------------------

    def save_checkpoint(self, path: str, *, include_optimizer: bool = True) -> str:
        """Saves the network and (by default) the optimizer to the checkpoint prefix `path`.

        Restorable under any strategy with `load_checkpoint`. Returns the
        written prefix. Only the chief worker writes to `path`.
        """
        from tfk_trainer import checkpoint as checkpoint_lib

        return checkpoint_lib.save(self, path, include_optimizer=include_optimizer)

    def load_checkpoint(self, path: str, *, include_optimizer: bool = True) -> None:
        """Restores a checkpoint (a prefix, or a directory: its latest checkpoint).

        The model's variables must exist (build it first, e.g. with
        `keras.Input`, or by calling it once); a checkpoint of another model
        raises a `ValueError` naming the mismatch.
        """
        from tfk_trainer import checkpoint as checkpoint_lib

        checkpoint_lib.load(self, path, include_optimizer=include_optimizer)

    def export(self, path: str) -> str:
        """Writes a SavedModel with a `serving_default` signature; see `tfk_trainer.export`."""
        from tfk_trainer import export as export_lib

        return export_lib.export(self, path)

    # -- misc ----------------------------------------------------------------

    def summary(self, *args, **kwargs) -> None:
        if isinstance(self.network, keras.Model):
            self.network.summary(*args, **kwargs)
        else:
            n = sum(int(np.prod(v.shape)) for v in self.variables)
            print(f"Model {self.name}: {len(self.variables)} variables, {n} parameters")


class Sequential(Model):
    """`tfk.Sequential([...layers])`: a `keras.Sequential` wrapped in a `Model`."""

    def __init__(self, layers: list | None = None, *, name: str | None = None):
        super().__init__(keras.Sequential(layers or []), name=name)


def _to_python(value: Any) -> Any:
    if hasattr(value, "numpy"):
        value = value.numpy()
    if isinstance(value, np.ndarray) and value.size == 1:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _callback_list(callbacks: Any) -> list:
    """`callbacks` as a list: None, one callback, or a list/tuple of callbacks."""
    if callbacks is None:
        return []
    if hasattr(callbacks, "set_model") and hasattr(callbacks, "on_epoch_end"):
        return [callbacks]
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(
            "`callbacks` must be a list of Callback instances (or one callback); received "
            f"{type(callbacks).__name__}: {callbacks!r}."
        )
    return list(callbacks)


def _local_batch(x: Any, valid: Any) -> tf.Tensor:
    if valid is None:
        return tf.cast(step_lib.batch_size_of(x), tf.float32)
    return tf.reduce_sum(tf.cast(valid, tf.float32))


def _rows(valid: tf.Tensor) -> tf.Tensor:
    return tf.cast(valid, tf.float32)


def _times_rows(weights: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    weights = tf.cast(weights, tf.float32)
    rows = tf.cast(valid, tf.float32)
    while (
        rows.shape.rank is not None
        and weights.shape.rank is not None
        and rows.shape.rank < weights.shape.rank
    ):
        rows = tf.expand_dims(rows, -1)
    return weights * rows


def _validation_count(initial_epoch: int, epochs: int, validation_freq: Any) -> int:
    if isinstance(validation_freq, int):
        return sum(1 for e in range(initial_epoch, epochs) if (e + 1) % validation_freq == 0)
    return sum(1 for e in range(initial_epoch, epochs) if (e + 1) in validation_freq)


def _check_int(value: Any, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int; received {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}; received {value}.")


def _unpack_validation_data(validation_data: Any) -> tuple:
    from tfk_trainer.data import python_sources

    if (
        isinstance(validation_data, tf.data.Dataset)
        or python_sources.is_py_dataset(validation_data)
        or python_sources.is_generator_like(validation_data)
        or (callable(validation_data) and not structure.is_array_like(validation_data))
    ):
        return validation_data, None, None
    structure.check_not_namedtuple(validation_data, "validation_data")
    if isinstance(validation_data, (tuple, list)) and len(validation_data) in (2, 3):
        vx, vy = validation_data[0], validation_data[1]
        vsw = validation_data[2] if len(validation_data) == 3 else None
        return vx, vy, vsw
    raise ValueError(
        "`validation_data` must be a tuple `(x_val, y_val)` or `(x_val, y_val, "
        "val_sample_weight)`, a tf.data.Dataset, a PyDataset or a generator; received "
        f"{type(validation_data).__name__}"
        + (
            f" of length {len(validation_data)}"
            if isinstance(validation_data, (tuple, list))
            else ""
        )
        + "."
    )
