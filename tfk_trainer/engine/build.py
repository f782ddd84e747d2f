"""Building a model for a run: its variables, compiled functions, loss and metrics.

The model's own module (it reads and writes the model's `EngineState`):
`build_network` creates the variables eagerly on a dummy batch and makes
the compiled functions; `ensure_built` then resolves the compiled losses
and metrics against the data's targets and builds the optimizer. The
checks that name a bad argument before anything is traced (labels out of
range, validation inputs the model cannot take, a static batch that does
not split across replicas) live here too.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

from tfk_trainer import compile as compile_lib
from tfk_trainer import distribute
from tfk_trainer.data import adapters as adapters_lib
from tfk_trainer.engine import checks, execution
from tfk_trainer.engine import variables as variables_lib
from tfk_trainer.engine.replica import LossTracker
from tfk_trainer.engine.tuning import ExecutionLengths


class Executor:
    """A model's compiled functions for one compile() and strategy."""

    def __init__(
        self,
        strategy: tf.distribute.Strategy,
        *,
        train_step: Any,
        test_step: Any,
        predict_replica: Any,
        output_structure: Any,
        read_logs: Any,
        jit: bool,
        allow_fallback: bool,
        run_eagerly: bool,
        autograph: Any,
    ):
        """`autograph`: a callable asked when each compiled function is first
        built (see `step_autograph`)."""

        def compiled(make_loop: Any, fn: Any, kind: str, *extra: Any) -> Any:
            return execution.CompiledFunction(
                lambda j, exact: make_loop(
                    strategy,
                    fn,
                    *extra,
                    jit=j,
                    run_eagerly=run_eagerly,
                    exact=exact,
                    autograph=autograph(),
                ),
                jit_compile=jit,
                allow_fallback=allow_fallback,
                kind=kind,
            )

        self.last_mode: str | None = None  # whose step logs `read_logs` reads
        self.train = _ModeCall(
            self, "train", compiled(execution.make_step_loop, train_step, "train")
        )
        self.test = _ModeCall(self, "test", compiled(execution.make_step_loop, test_step, "test"))
        self.predict = compiled(
            execution.make_predict_loop,
            predict_replica,
            "predict",
            (output_structure, tf.TensorSpec([None], tf.bool)),
        )
        # Read eagerly: it runs once per epoch or progress-bar refresh, where a
        # few eager reads cost less than a traced function per model (and TF's
        # retracing detector would warn once a process has built five models).
        self.read_logs = read_logs


class _ModeCall:
    """A compiled train or test function that notes, when called, that its step's
    logs are the current ones (a custom step may return logs of its own)."""

    def __init__(self, executor: Executor, mode: str, fn: Any):
        self._executor = executor
        self._mode = mode
        self._fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._executor.last_mode = self._mode
        return self._fn(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fn, name)


def metric_log_names(state: Any) -> list[str]:
    """The names `metric_values` returns (no value read)."""
    names = ["loss"] if state.loss_tracker is not None else []
    names += [o.log_name for o, t in zip(state.objectives.outputs, state.output_trackers) if t]
    names += [m.name for m in state.objectives.metrics]
    return names + [m.name for m in state.user_metrics]


def _flat_logs(logs: Mapping) -> dict[str, Any]:
    """A step's returned logs, nested dicts flattened (as Keras's `pythonify_logs`)."""
    flat: dict[str, Any] = {}
    for key, value in logs.items():
        if isinstance(value, Mapping):
            flat.update(_flat_logs(value))
        else:
            flat[str(key)] = value
    return flat


def record_step_logs(state: Any, mode: str, logs: Any) -> None:
    """Keeps what a custom `train_step`/`test_step` returned as the logs (at trace time).

    Keras logs the dict a step returns. When its keys are the model's metric
    names, the metrics are read after the execution as usual (the same numbers);
    otherwise (plain values, other names) each value is assigned, every step, to
    a variable made once outside the graph, and `read_logs` returns those:
    the last step's values, as in Keras.
    """
    if not isinstance(logs, Mapping) or set(logs) == set(metric_log_names(state)):
        state.step_logs[mode] = None
        return
    keys = []
    for key, value in _flat_logs(logs).items():
        try:
            value = tf.convert_to_tensor(value)
        except (TypeError, ValueError):
            continue  # not a number: Keras's progress bar skips it too
        var = state.step_log_vars.get(key)
        if var is None or var.dtype != value.dtype:
            with tf.init_scope():
                var = tf.Variable(
                    tf.zeros([d or 0 for d in value.shape.as_list()], value.dtype)
                    if value.shape.rank is not None
                    else tf.zeros([], value.dtype),
                    trainable=False,
                    shape=tf.TensorShape(None),
                    synchronization=tf.VariableSynchronization.ON_WRITE,
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                )
            state.step_log_vars[key] = var
        var.assign(value)
        keys.append(key)
    state.step_logs[mode] = keys


def engine_step(model: Any, mode: str) -> Any:
    """The replica function the compiled `mode` loop runs: the model's default step
    (which returns nothing), or an override whose returned logs are recorded."""
    step, custom = model._engine_step(mode)
    if not custom:
        return step
    state = model._state

    def recorded(data: Any) -> None:
        record_step_logs(state, mode, step(data))

    return recorded


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


def step_autograph(model: Any) -> bool:
    """Whether the model's compiled steps are traced with autograph.

    Only when a step runs user code that autograph converts: an override of a
    step hook (`train_step`, `compute_loss`, `call`, ...), a network that is not
    a Keras layer (a `tf.Module`, a function), or a loss, loss function or
    metric class defined outside Keras and the engine. Keras layers are never
    converted (autograph skips Keras, as Keras's own fit does), and the
    engine's step code has no Python control flow on tensors: converting it
    built the same graph and cost seconds of a fresh process's first step.
    Asked when a compiled function is first built, so the compiled losses and
    metrics are known.
    """
    cls = type(model)
    if not all(execution.library_code(getattr(cls, name, None)) for name in _STEP_HOOKS):
        return True
    if model.network is not None and not isinstance(model.network, keras.layers.Layer):
        return True
    objectives = model._state.objectives
    if objectives is None:
        return False
    if any(execution.loss_needs_autograph(o.loss) for o in objectives.outputs if o.loss):
        return True
    return not all(
        execution.library_code(getattr(type(m.metric), "update_state", None))
        for m in objectives.metrics
    )


def accepts_training(fn: Any) -> bool:
    """Whether `fn` takes a `training` argument (or **kwargs)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "training" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


@functools.cache
def call_takes_training(cls: type) -> bool:
    """Whether `cls.call` takes `training` (or **kwargs): Keras passes it only then."""
    return accepts_training(getattr(cls, "call", None))


@functools.cache
def compute_loss_takes_training(cls: type) -> bool:
    """Whether `cls.compute_loss` takes `training` (Keras's older signature does not)."""
    return accepts_training(getattr(cls, "compute_loss", None))


def zeros_for(spec: tf.TensorSpec) -> Any:
    """A one-batch dummy for `spec` (unknown dims as 1): a tensor, or a ragged or
    sparse tensor (all zeros, ragged dims of length 1) for a composite spec."""
    shape = (
        [1 if d is None else d for d in spec.shape.as_list()]
        if spec.shape.rank is not None
        else [1]
    )
    dense = tf.fill(shape, "") if spec.dtype == tf.string else tf.zeros(shape, spec.dtype)
    if isinstance(spec, tf.RaggedTensorSpec):
        return tf.RaggedTensor.from_tensor(
            dense, ragged_rank=spec.ragged_rank, row_splits_dtype=spec.row_splits_dtype
        )
    if isinstance(spec, tf.SparseTensorSpec):
        return tf.sparse.from_dense(dense)
    return dense


def build_network(model: Any, x_spec: Any) -> None:
    """Creates the network's variables and the compiled functions.

    Runs once, eagerly and under the strategy scope, on zeros shaped like
    one batch, so no variable is ever created inside a step.
    """
    state = model._state
    if state.network_built:
        refresh_trainable(model)
        return
    if state.compile_config is None:
        state.strategy = tf.distribute.get_strategy()
        state.jit = execution.resolve_jit_compile("auto", state.strategy, model.run_eagerly)
    if state.jit and execution.composite_inputs_disable_xla(state.compile_config, x_spec):
        state.jit = False
    if model._calls_nothing():
        # A subclass with its own train_step and no forward pass (Keras's GAN
        # guide): nothing to call; its sub-models were built by the user.
        y_pred = None
    else:
        with model.distribute_strategy.scope():
            dummy = tf.nest.map_structure(zeros_for, x_spec)
            try:
                y_pred = model(dummy, training=False)
            except Exception as e:
                # One line: the shapes, not Keras's dump of the tensor (kept as __cause__).
                raise ValueError(checks.model_call_failure(e, x_spec)) from e
    state.output_structure = (
        None
        if y_pred is None
        else tf.nest.map_structure(
            lambda t: tf.TensorSpec([None] + list(t.shape[1:]), t.dtype), y_pred
        )
    )
    state.sample_output = y_pred
    state.input_spec = x_spec
    state.trainable, state.non_trainable, state.layers, state.user_metrics = collect_variables(
        model
    )
    state.executor = make_executor(model)
    state.network_built = True


def collect_variables(model: Any) -> tuple[list, list, list, list]:
    """`(trainable, non-trainable, layers, metrics)`; none trainable when
    `model.trainable` is False (as Keras's `Model.trainable`)."""
    trainable, non_trainable, layers, metrics = variables_lib.collect(model)
    if not getattr(model, "trainable", True):
        trainable, non_trainable = [], trainable + non_trainable
    return trainable, non_trainable, layers, metrics


def refresh_trainable(model: Any) -> None:
    """Takes up `trainable` flags changed since the model was built (a frozen
    layer, `model.trainable = False`): the next train step traces again with the
    new variable list. Keras needs a `compile()` for it; here the next run sees it.
    """
    state = model._state
    trainable, non_trainable, _, _ = collect_variables(model)
    if [id(v) for v in trainable] == [id(v) for v in state.trainable] and [
        id(v) for v in non_trainable
    ] == [id(v) for v in state.non_trainable]:
        return
    state.trainable, state.non_trainable = trainable, non_trainable
    state.executor = make_executor(model)


def make_executor(model: Any) -> Executor:
    """The compiled functions of a model whose variables exist (traced on first use)."""
    state = model._state
    config = state.compile_config
    return Executor(
        model.distribute_strategy,
        train_step=engine_step(model, "train"),
        test_step=engine_step(model, "test"),
        predict_replica=model._predict_replica,
        output_structure=state.output_structure,
        read_logs=lambda: metric_results(state),
        jit=state.jit,
        allow_fallback=config is None or config.jit_compile == "auto",
        run_eagerly=model.run_eagerly,
        autograph=lambda: step_autograph(model),
    )


def ensure_built(model: Any, element_spec: tuple) -> None:
    """Builds the network, then resolves loss and metrics and builds the optimizer."""
    build_network(model, element_spec[0])
    state = model._state
    if state.built:
        return
    y_spec = element_spec[1] if len(element_spec) > 1 else None
    config = state.compile_config
    with model.distribute_strategy.scope():
        objectives = _objectives(model, config, y_spec)
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
        if (
            not has_loss
            and not model.losses
            and not model._custom_train_step()
            and not model._custom_compute_loss()
        ):
            raise ValueError(
                "The model has no loss to optimize: pass `loss` to compile() (or add "
                "losses with `add_loss` in a Keras layer)."
            )
        # Always, as Keras (a custom step or `compute_loss` may update it; a GAN's
        # train_step returns its own logs, which replace the metrics').
        state.loss_tracker = LossTracker(name="loss")
        state.output_trackers = [
            LossTracker(name=o.log_name) if o.log_name else None for o in objectives.outputs
        ]
        if not model.optimizer.built:
            model.optimizer.build(state.trainable)
    if len(element_spec) > 2:
        objectives.flatten_weights(element_spec[2])  # unknown output keys: a clear error now
    # Targets the loss cannot take: named now, not from inside the traced step. The
    # output spec is exact only when the inputs' dims are (the model was called on
    # a dummy batch); custom steps may transform `y` before any loss sees it.
    if y_spec is not None and model._standard_steps() and checks.fully_known(element_spec[0]):
        checks.check_targets_fit_losses(objectives, y_spec, state.output_structure)
    state.objectives = objectives
    state.y_spec = y_spec
    state.built = True


def _objectives(model: Any, config: Any, y_spec: Any) -> Any:
    """The compiled losses and metrics; none for a model without a forward pass."""
    state = model._state
    if state.sample_output is None and model._calls_nothing():
        if config.loss is not None or config.metrics or config.weighted_metrics:
            raise ValueError(
                f"{type(model).__name__} has no `call` (it overrides only `train_step`), so "
                "compile() cannot take `loss`, `metrics` or `weighted_metrics`: compute "
                "them in `train_step` and return them as its logs."
            )
        return compile_lib.CompiledObjectives(output_names=[], outputs=[], is_dict=False)
    return compile_lib.build_objectives(
        config, y_spec, state.sample_output, model._model_output_names()
    )


def uses_mixed_float16(model: Any) -> bool:
    """Whether the model computes in float16 under a "mixed_float16" policy: the
    global policy (Keras's default), or one set on the wrapped network or any
    of its layers (Keras checks the model's own policy; a float16 layer's
    gradients underflow just the same)."""
    if getattr(keras.config.dtype_policy(), "name", "") == "mixed_float16":
        return True
    pending = variables_lib.walk(model)[0]
    seen: set[int] = set()
    while pending:
        layer = pending.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if getattr(getattr(layer, "dtype_policy", None), "name", "") == "mixed_float16":
            return True
        pending.extend(getattr(layer, "layers", None) or [])
    return False


def capped_epochs(epochs: Any) -> Any:
    """`epochs` limited by `keras.config.set_max_epochs` (for debugging runs), as
    Keras's fit does, with its warning."""
    limit = keras.config.max_epochs()
    if limit and isinstance(epochs, int) and limit < epochs:
        warnings.warn(f"Limiting epochs to {limit}", stacklevel=3)
        return limit
    return epochs


def capped_steps(steps: Any) -> Any:
    """A run's steps limited by `keras.config.set_max_steps_per_epoch`: a cap on
    the steps (also when none were given), as Keras's epoch iterator applies it
    to every run (fit, validation, evaluate, predict)."""
    limit = keras.config.max_steps_per_epoch()
    if limit and (not steps or steps == -1 or (isinstance(steps, int) and limit < steps)):
        warnings.warn(f"Limiting steps_per_epoch to {limit}", stacklevel=3)
        return limit
    return steps


def configure(state: Any, mixed_float16: bool = False, **compile_args: Any) -> Any:
    """`compile()`: checks the arguments and resets the engine state; returns the
    optimizer (a LossScaleOptimizer under "mixed_float16" with `auto_scale_loss`).

    The strategy in scope now is the one every later run uses.
    """
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        config = compile_lib.check_compile_args(**compile_args)
        jit = execution.resolve_jit_compile(config.jit_compile, strategy, config.run_eagerly)
        if (
            compile_args.get("auto_scale_loss", True)
            and mixed_float16
            and not isinstance(config.optimizer, keras.optimizers.LossScaleOptimizer)
        ):
            config.optimizer = keras.optimizers.LossScaleOptimizer(config.optimizer)
    state.strategy = strategy
    state.jit = jit
    state.compile_config = config
    state.execution_lengths = ExecutionLengths(
        config.steps_per_execution,
        can_fold=not (config.run_eagerly or distribute.is_multi_worker(strategy)),
        agree=distribute.chief_decides(strategy),
    )
    state.objectives = None
    state.step_logs = {}  # mode -> keys of a custom step's own logs (None: the metrics)
    state.step_log_vars = {}
    state.loss_tracker = None
    state.built = False
    state.network_built = False
    state.executor = None
    return config.optimizer


def metric_objects(state: Any) -> list:
    """`model.metrics`: loss trackers, compiled metrics, metrics held as attributes."""
    if not state.built:
        return []
    trackers = [t for t in [state.loss_tracker] + state.output_trackers if t is not None]
    return trackers + [m.metric for m in state.objectives.metrics] + list(state.user_metrics)


def metrics_by_name(state: Any) -> dict[str, Any]:
    """Every metric of a built model under its log name: loss trackers, compiled
    metrics, then metrics held as attributes (the order of `model.metrics`)."""
    named: dict[str, Any] = {}
    if not state.built:
        return named
    for tracker in [state.loss_tracker] + state.output_trackers:
        if tracker is not None:
            named.setdefault(tracker.name, tracker)
    for compiled in state.objectives.metrics:
        named.setdefault(compiled.name, compiled.metric)
    for metric in state.user_metrics:
        named.setdefault(metric.name, metric)
    return named


def _own_step_log_keys(state: Any) -> list[str] | None:
    """The keys of the logs the last custom step returned, when not the metrics'."""
    mode = getattr(state.executor, "last_mode", None)
    return getattr(state, "step_logs", {}).get(mode)


def metrics_names(state: Any) -> list[str]:
    """The names of `evaluate()`'s list, in its order (the keys of the logs a
    custom step returned, when it returned logs of its own)."""
    if not state.built:
        return []
    own = _own_step_log_keys(state)
    if own is not None:
        return list(own)
    loss = ["loss"] if state.loss_tracker is not None else []
    return loss + state.objectives.metric_names + [m.name for m in state.user_metrics]


def metric_results(state: Any) -> dict[str, tf.Tensor]:
    """The logs as device tensors (read eagerly by the driver and the callbacks):
    what the last custom step returned when it returned logs of its own (Keras
    logs those), else the metrics' results."""
    keys = _own_step_log_keys(state)
    if keys is not None:
        return {k: state.step_log_vars[k].value() for k in keys}
    return metric_values(state)


def metric_values(state: Any) -> dict[str, tf.Tensor]:
    """Every metric's result under its log name (`Model.get_metrics_result`)."""
    results = {}
    if state.loss_tracker is not None:
        results["loss"] = state.loss_tracker.result()
    for output, tracker in zip(state.objectives.outputs, state.output_trackers):
        if tracker is not None:
            results[output.log_name] = tracker.result()
    for compiled in state.objectives.metrics:
        results[compiled.name] = compiled.metric.result()
    for metric in state.user_metrics:
        results[metric.name] = metric.result()
    return results


def check_labels(model: Any, adapter: Any, argument: str = "y") -> None:
    """Sparse labels out of range, for in-memory arrays (one min/max per label array).

    Without it TensorFlow raises from inside the step on a CPU, and under XLA
    or on a GPU the loss silently becomes NaN.
    """
    if not isinstance(adapter, adapters_lib.ArrayAdapter) or not model._standard_steps():
        return
    arrays = adapter.arrays
    state = model._state
    if len(arrays) > 1 and state.objectives is not None:
        checks.check_sparse_labels(state.objectives, arrays[1], state.sample_output, argument)


def check_validation_inputs(model: Any, val_spec: tuple, train_spec: tuple) -> None:
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
        with model.distribute_strategy.scope():
            model(tf.nest.map_structure(zeros_for, given), training=False)
    except Exception as e:  # noqa: BLE001 - reported naming the argument, cause kept
        raise ValueError(
            f"The inputs of `validation_data` do not fit the model: received inputs of "
            f"shape {checks.describe_spec(given)}, but the training data `x` has "
            f"{checks.describe_spec(expected)} (the model was built on it). Calling the "
            f"model on the validation inputs failed: {checks.short_reason(e)}."
        ) from e


def check_static_batch(strategy: tf.distribute.Strategy, adapter: Any) -> None:
    """Static shapes split every batch evenly across replicas: say so before training."""
    replicas = distribute.num_replicas(strategy)
    size = adapter.batch_size
    if size is not None and size % replicas:
        raise ValueError(
            f"Static-shape mode splits each batch evenly across the {replicas} replicas, "
            f"but the batch size is {size}. Use a batch size divisible by {replicas}."
        )


def network_takes_training(network: Any) -> bool:
    """Whether calling `network` passes `training=` (always for Keras layers)."""
    if network is None:
        return False
    if isinstance(network, keras.layers.Layer):
        return True
    return accepts_training(network)
