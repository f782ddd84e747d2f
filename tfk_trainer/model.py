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

from tfk_trainer import compat, distribute
from tfk_trainer import compile as compile_lib
from tfk_trainer.callbacks.base import CallbackList, to_python
from tfk_trainer.callbacks.history import History
from tfk_trainer.callbacks.progbar import ProgbarLogger, resolve_verbose
from tfk_trainer.data import adapters as adapters_lib
from tfk_trainer.data import factory as data_factory
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
    validation_count,
)
from tfk_trainer.engine.tuning import ExecutionLengths
from tfk_trainer.model_surface import ModelSurface, SequentialSurface

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


class Model(ModelSurface, tf.Module):
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
        """The forward pass; override it when subclassing without a network.

        Args:
            inputs: The batch's inputs.
            training: Whether the call is for training (dropout and the like).

        Returns:
            The outputs of the wrapped network.
        """
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
        """Keras's name for `variables`."""
        return self.variables

    @property
    def trainable_weights(self) -> list:
        """Keras's name for `trainable_variables`."""
        return self.trainable_variables

    @property
    def non_trainable_weights(self) -> list:
        """Keras's name for `non_trainable_variables`."""
        return self.non_trainable_variables

    def get_weights(self) -> list[np.ndarray]:
        """The values of `variables` as NumPy arrays (trainable ones first)."""
        return [np.array(v.numpy()) for v in self.variables]

    def set_weights(self, weights: list) -> None:
        """Assigns `weights` to `variables`, in the order of `get_weights()`.

        Args:
            weights: A list of arrays, one per variable, each of the
                variable's shape. A wrong count or shape raises a `ValueError`.
        """
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
            on = distribute.is_tpu(self.distribute_strategy)
        if not on:
            return None
        return self.static_remainder if training else "pad"

    def _progbar_verbose(self, verbose: int) -> int:
        """Across workers, reading logs is a collective that every worker must join
        together, so the bar cannot refresh on each worker's own clock: one line
        per epoch instead."""
        if verbose == 1 and distribute.is_multi_worker(self.distribute_strategy):
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
                if distribute.is_multi_worker(self.distribute_strategy)
                else None
            )
            if clear is None:
                raise
            raise clear from e

    def _check_static_batch(self, adapter: Any) -> None:
        replicas = distribute.num_replicas(self.distribute_strategy)
        size = adapter.batch_size
        if size is not None and size % replicas:
            raise ValueError(
                f"Static-shape mode splits each batch evenly across the {replicas} replicas, "
                f"but the batch size is {size}. Use a batch size divisible by {replicas}."
            )

    # -- compile -------------------------------------------------------------

    @property
    def distribute_strategy(self) -> tf.distribute.Strategy:
        """The strategy the model runs under: the one in scope at `compile()` (or at the first call)."""
        return self._strategy or tf.distribute.get_strategy()

    @property
    def compiled(self) -> bool:
        """Whether `compile()` has been called."""
        return self._compile_config is not None

    def compile(
        self,
        optimizer: str | keras.optimizers.Optimizer = "rmsprop",
        loss: Any = None,
        loss_weights: Any = None,
        metrics: Any = None,
        weighted_metrics: Any = None,
        run_eagerly: bool = False,
        steps_per_execution: int | str = 1,
        jit_compile: bool | str = "auto",
        auto_scale_loss: bool = True,
    ) -> None:
        """Configures the model for training.

        The arguments are those of `keras.Model.compile` in the Keras 3 API
        docs. Build and compile under `strategy.scope()` to train under a
        strategy, exactly as with Keras; the strategy in scope here is the one
        `fit`, `evaluate` and `predict` use. Bad values raise a `ValueError` or
        `TypeError` naming the argument (see docs/errors.md).

        Example:

        ```python
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=1e-3),
            loss=keras.losses.BinaryCrossentropy(),
            metrics=[keras.metrics.BinaryAccuracy(), keras.metrics.FalseNegatives()],
        )
        ```

        Args:
            optimizer: String (name of optimizer) or optimizer instance. See
                `keras.optimizers`.
            loss: Loss function. May be a string (name of loss function), a
                `keras.losses.Loss` instance, or any callable
                `loss = fn(y_true, y_pred)` returning a float tensor; or a
                list/dict of those, one per model output. `y_true` should have
                shape `(batch_size, d0, .. dN)` (sparse losses such as sparse
                categorical crossentropy take integers of shape
                `(batch_size, d0, .. dN-1)`); `y_pred` has shape
                `(batch_size, d0, .. dN)`. Per-output losses are divided by the
                global batch, so they add up to the total on a partial last
                batch and under any number of replicas.
            loss_weights: Optional list or dict of scalar coefficients (Python
                floats) weighting each output's loss; the minimized loss is the
                weighted sum. A list maps 1:1 to the outputs, a dict maps output
                names to coefficients.
            metrics: List of metrics evaluated during training and testing:
                strings (names of built-in metrics), functions
                `result = fn(y_true, y_pred)` or `keras.metrics.Metric`
                instances; for several outputs a dict such as
                `{'a': 'accuracy', 'b': ['accuracy', 'mse']}` or a list of
                lists. `'accuracy'`/`'acc'` become binary, categorical or sparse
                categorical accuracy from the shapes of the targets and
                outputs, as do `"crossentropy"` and `"ce"` (which Keras 3
                does not resolve). These metrics ignore sample weights.
            weighted_metrics: List of metrics evaluated and weighted by
                `sample_weight` or `class_weight` during training and testing.
            run_eagerly: Bool. If `True`, the steps run eagerly (no
                `tf.function`): slow, for debugging.
            steps_per_execution: Int, or `"auto"` (tfk_trainer only: tuned
                from the measured step time). The number of batches run in
                one compiled call (a `tf.while_loop`); at most one epoch per
                call. Batch callbacks are called once per call, with true step
                indices (see docs/differences.md). When no callback needs every
                batch boundary, calls may run more steps than this (the same
                steps in the same order; `model.fold_executions = False`
                turns it off).
            jit_compile: Bool or `"auto"`. Whether the steps are XLA-compiled.
                `"auto"`: always under TPUStrategy; off for multi-replica
                GPU/CPU strategies and on CPU-only hosts; on for a single GPU,
                falling back with one warning if the model does not compile.
            auto_scale_loss: Bool. If `True` and the dtype policy is
                `"mixed_float16"`, the optimizer is wrapped in a
                `keras.optimizers.LossScaleOptimizer`, which scales the loss
                dynamically to prevent underflow.
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
            self._jit = execution.resolve_jit_compile("auto", self._strategy, self.run_eagerly)
        with self.distribute_strategy.scope():
            dummy = tf.nest.map_structure(_zeros_for, x_spec)
            try:
                y_pred = self(dummy, training=False)
            except Exception as e:
                # One line: the shapes, not Keras's dump of the tensor (kept as __cause__).
                raise ValueError(checks.model_call_failure(e, x_spec)) from e
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
            run_eagerly=self.run_eagerly,
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
        """Resets the state of every metric (the loss trackers included)."""
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
        return {k: to_python(v) for k, v in raw.items()}

    # -- override points (run per replica) -----------------------------------

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> tf.Tensor:
        """This replica's share of the batch loss (compiled losses plus layer losses).

        Summed over replicas it is the batch loss: each output's loss is
        divided by the global number of elements, and the regularization
        losses by the number of replicas. An override that returns a plain
        per-replica mean is scaled for distribution (Keras multiplies the
        gradients by the number of replicas instead).

        Args:
            x: The batch's inputs.
            y: The batch's targets (structure matching the outputs).
            y_pred: The model's outputs for `x`.
            sample_weight: Optional per-sample weights for the loss.
            training: Whether the step is a training step.

        Returns:
            A scalar float tensor.
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

    def compute_metrics(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Updates the compiled metrics for one batch.

        `metrics` are updated unweighted and `weighted_metrics` with
        `sample_weight`, as Keras does. Unlike Keras it returns nothing: the
        engine reads the results after the execution.

        Args:
            x: The batch's inputs.
            y: The batch's targets.
            y_pred: The model's outputs for `x`.
            sample_weight: Optional per-sample weights, for `weighted_metrics`.
        """
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
        """One replica's training step: forward, loss, gradients, update, metrics.

        Override it, as in Keras, to customise training; `fit` and
        `train_on_batch` call it inside their compiled loop. The logs are
        read from the model's metrics after the execution: the compiled ones
        and any `keras.metrics.Metric` held as an attribute (a custom step's
        trackers). An override may return a dict of those results, as in
        Keras; the value it returns is not used.

        Args:
            data: One batch as the data yields it: `x`, `(x,)`, `(x, y)` or
                `(x, y, sample_weight)` (unpack it with
                `keras.utils.unpack_x_y_sample_weight`).
        """
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
        clipped = compat.clip_gradients(inner, summed)
        if scale is not None:
            clipped = [g * tf.cast(scale, g.dtype) for g in clipped]
        # Each share is within the clip bounds, so the optimizer's own clipping
        # (left on: replicas trace concurrently, and shared state must not be
        # mutated) leaves it unchanged.
        optimizer.apply([g / replicas for g in clipped], [v for _, v in pairs])

    def test_step(self, data: Any) -> None:
        """One replica's evaluation step: forward, loss, metrics.

        Override it, as in Keras, to customise evaluation (`evaluate`,
        validation in `fit`, `test_on_batch`). Returns nothing, like
        `train_step`.

        Args:
            data: One batch: `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`.
        """
        data, valid = structure.split_padding(data)
        x, y, sample_weight = structure.unpack_x_y_sample_weight(data)
        y_pred = self(x, training=False)
        loss, global_batch, shares = self._loss_for_step(x, y, y_pred, sample_weight, valid, False)
        self._track_loss(loss, global_batch, x, valid, shares)
        self._update_metrics(y, y_pred, sample_weight, valid)

    def predict_step(self, data: Any) -> Any:
        """One replica's prediction step.

        Override it, as in Keras, to customise `predict` and
        `predict_on_batch`.

        Args:
            data: One batch: `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`;
                only `x` is used by default.

        Returns:
            The model's outputs for the batch (`self(x, training=False)`).
        """
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
        x: Any = None,
        y: Any = None,
        batch_size: int | None = None,
        epochs: int = 1,
        verbose: int | str = "auto",
        callbacks: list | None = None,
        validation_split: float = 0.0,
        validation_data: Any = None,
        shuffle: bool | str = True,
        class_weight: dict | None = None,
        sample_weight: Any = None,
        initial_epoch: int = 0,
        steps_per_epoch: int | None = None,
        validation_steps: int | None = None,
        validation_batch_size: int | None = None,
        validation_freq: int = 1,
    ) -> History:
        """Trains the model for a fixed number of epochs (dataset iterations).

        As `keras.Model.fit` in the Keras 3 API docs, on tfk_trainer's own
        engine; where it differs on purpose, see docs/differences.md.

        Args:
            x: Input data. It could be:
                - A NumPy array (or array-like: pandas, SciPy sparse), or a list
                  of arrays (in case the model has multiple inputs).
                - A tensor, or a list of tensors (in case the model has
                  multiple inputs).
                - A dict mapping input names to the corresponding
                  arrays/tensors, if the model has named inputs.
                - A `tf.data.Dataset` of batches. Should return a tuple of
                  either `(inputs, targets)` or `(inputs, targets, sample_weights)`.
                - A `keras.utils.PyDataset` or `tfk.data.PyDataset`, a Python
                  generator, or a callable returning a fresh generator per epoch,
                  yielding `(inputs, targets)` or `(inputs, targets, sample_weights)`.
            y: Target data: NumPy array(s) or tensor(s), like `x`. Not given
                when `x` is a dataset, generator or PyDataset (the targets come
                from `x`).
            batch_size: Integer or `None`. Number of samples per gradient
                update; 32 if unspecified. Not given for datasets, generators
                or PyDatasets (they make their own batches).
            epochs: Integer. The index of the final epoch: training runs from
                `initial_epoch` until the epoch of index `epochs` is reached.
                An epoch is one pass over the data, or `steps_per_epoch` steps.
            verbose: `"auto"`, 0, 1, or 2. 0 = silent, 1 = progress bar,
                2 = one line per epoch. `"auto"` is 1 when stdout is a terminal
                and 2 otherwise (Keras: 1).
            callbacks: List of callbacks (`tfk.callbacks` or
                `keras.callbacks.Callback` instances) called during training.
                `History` and `ProgbarLogger` are added automatically.
            validation_split: Float between 0 and 1. The fraction of the
                training arrays set apart (the last samples, before shuffling)
                and evaluated at the end of each epoch. Array inputs only.
                `validation_data` overrides it.
            validation_data: Data evaluated at the end of each epoch (not
                trained on): a tuple `(x_val, y_val)` or
                `(x_val, y_val, val_sample_weights)` of arrays or tensors, a
                `tf.data.Dataset`, a Python generator or a PyDataset. Its
                inputs are checked against the model before training starts.
            shuffle: `True`, `False` or `"batch"`. Whether to shuffle array
                training data before each epoch (`"batch"`: shuffle the order
                of batches only). Ignored for datasets and generators.
            class_weight: Optional dict mapping class indices (integers) to a
                weight (float), applied to the loss during training. For
                targets of rank 2 or more, `y` must be one-hot or have an
                explicit final dimension of 1 for sparse labels.
            sample_weight: Optional array of weights for the training samples
                (flat, one per sample, or `(samples, sequence_length)` for
                temporal data), applied to the loss and to `weighted_metrics`.
                For datasets and generators, yield it as the third element.
            initial_epoch: Integer. The epoch at which to start training (to
                resume an earlier run).
            steps_per_epoch: Integer, -1 or `None`. The number of steps
                (batches) in an epoch. `None`: the size of the data, or until a
                dataset is exhausted. Required for an infinitely repeating
                dataset; -1 runs indefinitely. tfk_trainer runs exactly this
                many optimizer steps per epoch (Keras rounds up to a multiple
                of `steps_per_execution`).
            validation_steps: Integer or `None`. The number of validation
                batches per validation run; `None`: until `validation_data` is
                exhausted. With a partly consumed dataset, each validation run
                starts from the beginning, so the same samples are used.
            validation_batch_size: Integer or `None`. Samples per validation
                batch; defaults to `batch_size`. Not given for datasets or
                PyDatasets.
            validation_freq: Integer. Validate every `validation_freq` epochs.

        Returns:
            A `History` object whose `history` attribute maps each loss and
            metric name (and `val_` ones) to its value at each epoch.
        """
        self._require_compiled("fit")
        verbose = resolve_verbose(verbose)
        checks.check_int(epochs, "epochs", minimum=0)
        checks.check_int(initial_epoch, "initial_epoch", minimum=0)
        if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)):
            raise TypeError(
                f"`validation_split` must be a float in [0, 1); received {validation_split!r}."
            )
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"`validation_split` must be in [0, 1); received {validation_split}.")
        validation_freq = check_validation_freq(validation_freq)
        if validation_batch_size is not None:
            checks.check_int(validation_batch_size, "validation_batch_size", minimum=1)

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

        adapter = data_factory.get_adapter(
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
            val_adapter = data_factory.get_adapter(
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
                and validation_count(initial_epoch, epochs, validation_freq) > 1
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
        x: Any = None,
        y: Any = None,
        batch_size: int | None = None,
        verbose: int | str = "auto",
        sample_weight: Any = None,
        steps: int | None = None,
        callbacks: list | None = None,
        return_dict: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Returns the loss value and metric values of the model in test mode.

        Computed in batches, as `keras.Model.evaluate` in the Keras 3 API
        docs. Under `static_shapes`, the last batch is padded and the padding
        ignored, so the results are exact.

        Args:
            x: Input data. It could be:
                - A NumPy array (or array-like: pandas, SciPy sparse), or a list
                  of arrays (in case the model has multiple inputs).
                - A tensor, or a list of tensors (in case the model has
                  multiple inputs).
                - A dict mapping input names to the corresponding
                  arrays/tensors, if the model has named inputs.
                - A `tf.data.Dataset` of batches. Should return a tuple of
                  either `(inputs, targets)` or `(inputs, targets, sample_weights)`.
                - A `keras.utils.PyDataset` or `tfk.data.PyDataset`, a Python
                  generator, or a callable returning a fresh generator per epoch,
                  yielding `(inputs, targets)` or `(inputs, targets, sample_weights)`.
            y: Target data: NumPy array(s) or tensor(s), like `x`. Not given
                when `x` is a dataset, generator or PyDataset.
            batch_size: Integer or `None`. Samples per batch; 32 if
                unspecified. Not given for datasets, generators or PyDatasets.
            verbose: `"auto"`, 0, 1, or 2. 0 = silent, 1 = progress bar,
                2 = single line. `"auto"` is 1 when stdout is a terminal and 2
                otherwise.
            sample_weight: Optional array of weights for the test samples
                (flat, or `(samples, sequence_length)` for temporal data).
                For datasets, yield it as the third element of `x`.
            steps: Integer or `None`. The number of batches to evaluate;
                `None`: until the data is exhausted.
            callbacks: List of callbacks called during evaluation.
            return_dict: If `True`, the loss and metric results are returned
                as a dict keyed by name; if `False`, as a list (a scalar when
                there is only the loss) in the order of `metrics_names`.
            **kwargs: Accepted only to match Keras's signature: any keyword
                argument here raises a `TypeError` naming it.

        Returns:
            The scalar test loss (single output, no metrics), a list of
            scalars, or a dict (`return_dict=True`).
        """
        if kwargs:
            raise TypeError(
                f"evaluate() got unexpected keyword arguments {sorted(kwargs)}; accepted: x, y, "
                "batch_size, verbose, sample_weight, steps, callbacks, return_dict."
            )
        self._require_compiled("evaluate")
        verbose = resolve_verbose(verbose)
        adapter = data_factory.get_adapter(
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

    def predict(
        self,
        x: Any,
        batch_size: int | None = None,
        verbose: int | str = "auto",
        steps: int | None = None,
        callbacks: list | None = None,
    ) -> Any:
        """Generates output predictions for the input samples.

        Computed in batches, for large inputs, as `keras.Model.predict` in
        the Keras 3 API docs; for a few inputs that fit in one batch, calling
        the model (`model(x)`) is faster. Outputs are gathered in input order
        (also across replicas and workers), and nested and dict outputs keep
        their structure. `compile()` is not needed.

        Args:
            x: Input samples: a NumPy array (or array-like) or a list of them,
                a tensor or a list of tensors, a dict of them for named inputs,
                a `tf.data.Dataset`, a PyDataset, a Python generator, or a
                callable returning a generator.
            batch_size: Integer or `None`. Samples per batch; 32 if
                unspecified. Not given for datasets, generators or PyDatasets.
            verbose: `"auto"`, 0, 1, or 2. 0 = silent, 1 = progress bar,
                2 = single line. `"auto"` is 1 when stdout is a terminal and 2
                otherwise.
            steps: Integer or `None`. The number of batches to predict;
                `None`: until the data is exhausted.
            callbacks: List of callbacks called during prediction.

        Returns:
            NumPy array(s) of predictions, in the structure of the model's
            outputs.
        """
        verbose = resolve_verbose(verbose)
        static = self._static_mode(training=False)
        if distribute.is_multi_worker(self.distribute_strategy):
            # Outputs are all-gathered across workers; padded batches give every
            # replica the same shape, which the collective needs.
            static = "pad"
        adapter = data_factory.get_adapter(x, batch_size=batch_size, shuffle=False, static=static)
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
        except Exception as e:  # noqa: BLE001 - reported naming the argument, cause kept
            raise ValueError(
                f"The inputs of `validation_data` do not fit the model: received inputs of "
                f"shape {checks.describe_spec(given)}, but the training data `x` has "
                f"{checks.describe_spec(expected)} (the model was built on it). Calling the "
                f"model on the validation inputs failed: {checks.short_reason(e)}."
            ) from e

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
        return not distribute.is_multi_worker(self.distribute_strategy)

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

    def train_on_batch(
        self,
        x: Any,
        y: Any = None,
        sample_weight: Any = None,
        class_weight: dict | None = None,
        return_dict: bool = False,
    ) -> Any:
        """Runs a single gradient update on a single batch of data.

        The metrics are reset first, so the results are this batch's.

        Args:
            x: Input data. Must be array-like (an array, a tensor, or a
                list/dict of them).
            y: Target data. Must be array-like.
            sample_weight: Optional array of the same length as `x` weighting
                each sample's loss (or `(samples, sequence_length)` for
                temporal data).
            class_weight: Optional dict mapping class indices (integers) to a
                weight (float) for the samples of that class. For targets of
                rank 2 or more, `y` must be one-hot or have an explicit final
                dimension of 1 for sparse labels.
            return_dict: If `True`, the results are a dict keyed by name; if
                `False`, a list.

        Returns:
            A scalar loss value (no metrics and `return_dict=False`), a list
            of loss and metric values (`return_dict=False`), or a dict of
            them (`return_dict=True`).
        """
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

    def test_on_batch(
        self, x: Any, y: Any = None, sample_weight: Any = None, return_dict: bool = False
    ) -> Any:
        """Tests the model on a single batch of samples.

        The metrics are reset first, so the results are this batch's.

        Args:
            x: Input data. Must be array-like (an array, a tensor, or a
                list/dict of them).
            y: Target data. Must be array-like.
            sample_weight: Optional array of the same length as `x` weighting
                each sample's loss (or `(samples, sequence_length)` for
                temporal data).
            return_dict: If `True`, the results are a dict keyed by name; if
                `False`, a list.

        Returns:
            A scalar loss value (no metrics and `return_dict=False`), a list
            of loss and metric values (`return_dict=False`), or a dict of
            them (`return_dict=True`).
        """
        self._require_compiled("test_on_batch")
        adapter = self._single_batch(x, y, sample_weight, None, "test_on_batch")
        self._ensure_built(adapter.element_spec)
        self._check_labels(adapter)
        self.reset_metrics()
        self._run_single("test", adapter)
        return self._format_results(self._materialized_logs(), return_dict)

    def predict_on_batch(self, x: Any) -> Any:
        """Returns predictions for a single batch of samples.

        Args:
            x: Input data. It must be array-like (an array, a tensor, or a
                list/dict of them).

        Returns:
            NumPy array(s) of predictions, in the structure of the outputs.
        """
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

        tfk_trainer's own (Keras saves with `save_weights`): a TensorFlow
        object checkpoint, written atomically, restorable under any strategy
        with `load_checkpoint`. Only the chief worker writes.

        Args:
            path: The checkpoint prefix (files `path.index`, `path.data-*`);
                local or any `tf.io.gfile` path such as `gs://`.
            include_optimizer: Whether to save the optimizer's state too.

        Returns:
            The written prefix.
        """
        from tfk_trainer import checkpoint as checkpoint_lib

        return checkpoint_lib.save(self, path, include_optimizer=include_optimizer)

    def load_checkpoint(self, path: str, *, include_optimizer: bool = True) -> None:
        """Restores a checkpoint written by `save_checkpoint` (or by tfk-train).

        The model's variables must exist (build it first, e.g. with
        `keras.Input`, or by calling it once); a checkpoint of another model
        raises a `ValueError` naming the mismatch.

        Args:
            path: A checkpoint prefix, or a directory (its latest checkpoint).
            include_optimizer: Whether to restore the optimizer's state too.
        """
        from tfk_trainer import checkpoint as checkpoint_lib

        checkpoint_lib.load(self, path, include_optimizer=include_optimizer)


class Sequential(SequentialSurface, Model):
    """`tfk.Sequential([...layers])`: a `keras.Sequential` wrapped in a `Model`."""

    def __init__(self, layers: list | None = None, *, name: str | None = None):
        super().__init__(keras.Sequential(layers or []), name=name)


def _callback_list(callbacks: Any) -> list:
    """`callbacks` as a list: None, one callback, or a list/tuple of callbacks."""
    from tfk_trainer.callbacks import keras_compat

    if callbacks is None:
        return []
    if hasattr(callbacks, "set_model") and hasattr(callbacks, "on_epoch_end"):
        return keras_compat.flatten([callbacks])  # one callback, or a Keras CallbackList
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(
            "`callbacks` must be a list of Callback instances (or one callback); received "
            f"{type(callbacks).__name__}: {callbacks!r}."
        )
    return keras_compat.flatten(callbacks)


def _local_batch(x: Any, valid: Any) -> tf.Tensor:
    if valid is None:
        return tf.cast(step_lib.batch_size_of(x), tf.float32)
    return tf.reduce_sum(tf.cast(valid, tf.float32))


def _rows(valid: tf.Tensor) -> tf.Tensor:
    return tf.cast(valid, tf.float32)


def _times_rows(weights: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    weights = tf.cast(weights, tf.float32)
    return weights * step_lib.expand_to_rank(_rows(valid), weights.shape.rank)


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
