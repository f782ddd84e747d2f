"""`evaluate`, `predict` and the single-batch calls, and what every run shares.

The model's own module (it reads the model's `EngineState`): `Model`'s
public methods check their arguments and delegate here; `fit` has its own
builder (engine/fit_run.py), which uses the shared helpers below. Every
adapter made here is closed on every path out.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfk_trainer import distribute
from tfk_trainer.callbacks.base import CallbackList
from tfk_trainer.callbacks.progbar import ProgbarLogger, resolve_verbose
from tfk_trainer.data import adapters as adapters_lib
from tfk_trainer.data import factory as data_factory
from tfk_trainer.data import structure
from tfk_trainer.engine import build, execution
from tfk_trainer.engine.loop import Driver, EpochPlan, drop_padding, peer_unavailable
from tfk_trainer.engine.run_state import RunState

# -- shared by every run -----------------------------------------------------


def static_mode(model: Any, training: bool) -> str | None:
    """The static-shape mode for a new adapter, or None for dynamic shapes."""
    on = model.static_shapes
    if on is None:
        on = distribute.is_tpu(model.distribute_strategy)
    if not on:
        return None
    return model.static_remainder if training else "pad"


def progbar_verbose(strategy: tf.distribute.Strategy, verbose: int) -> int:
    """Across workers, reading logs is a collective that every worker must join
    together, so the bar cannot refresh on each worker's own clock: one line
    per epoch instead."""
    if verbose == 1 and distribute.is_multi_worker(strategy):
        return 2
    return verbose


def run_guarded(strategy: tf.distribute.Strategy, loop: Any, *args: Any, **kwargs: Any) -> Any:
    """Runs a driver loop; a lost cluster peer becomes a clear `PeerUnavailableError`
    wherever it surfaces (a step, a metric read, a checkpoint write)."""
    try:
        return loop(*args, **kwargs)
    except tf.errors.OpError as e:
        clear = peer_unavailable(e) if distribute.is_multi_worker(strategy) else None
        if clear is None:
            raise
        raise clear from e


def new_run_state(model: Any, mode: str) -> RunState:
    """The `RunState` of one fit/evaluate/predict run (engine/run_state.py)."""
    state = model._state
    config = state.compile_config
    return RunState(
        mode=mode,
        executor=state.executor,
        execution_lengths=state.execution_lengths,
        fold_executions=model.fold_executions,
        steps_per_execution=config.steps_per_execution if config is not None else 1,
    )


def callback_objects(callbacks: Any) -> list:
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


def format_results(model: Any, logs: dict[str, Any], return_dict: bool) -> Any:
    """`evaluate`'s and `*_on_batch`'s results: a dict, a list in `metrics_names`
    order, or the one value."""
    if return_dict:
        return dict(sorted(logs.items()))
    names = model.metrics_names
    values = [logs[name] for name in names if name in logs]
    values += [logs[k] for k in sorted(logs) if k not in names]
    return values[0] if len(values) == 1 else values


def _callbacks(model: Any, callbacks: Any, verbose: int, steps: int | None, mode: str):
    """`(CallbackList, RunState)` of an evaluate or predict run."""
    all_callbacks = callback_objects(callbacks)
    if verbose:
        all_callbacks.append(ProgbarLogger(progbar_verbose(model.distribute_strategy, verbose)))
    run_state = new_run_state(model, mode)
    callback_list = CallbackList(
        all_callbacks,
        model=model,
        params={"verbose": verbose, "epochs": 1, "steps": steps},
        run_state=run_state,
    )
    return callback_list, run_state


# -- evaluate and predict ----------------------------------------------------


def run_evaluate(
    model: Any, *, x, y, batch_size, verbose, sample_weight, steps, callbacks
) -> dict[str, Any]:
    """`Model.evaluate`'s run (see its docstring): the logs as Python numbers."""
    verbose = resolve_verbose(verbose)
    adapter = data_factory.get_adapter(
        x,
        y,
        sample_weight,
        batch_size=batch_size,
        shuffle=False,
        static=static_mode(model, training=False),
    )
    try:
        plan = EpochPlan.create(adapter, steps, "steps")
        plan.persistent = False
        build.ensure_built(model, adapter.element_spec)
        build.check_labels(model, adapter)
        callback_list, run_state = _callbacks(model, callbacks, verbose, plan.steps, "evaluate")
        driver = Driver(model, run_state)
        return run_guarded(model.distribute_strategy, driver.evaluate_loop, plan, callback_list)
    finally:
        adapter.close()


def run_predict(model: Any, *, x, batch_size, verbose, steps, callbacks) -> Any:
    """`Model.predict`'s run (see its docstring): NumPy outputs in input order."""
    verbose = resolve_verbose(verbose)
    strategy = model.distribute_strategy
    static = static_mode(model, training=False)
    if distribute.is_multi_worker(strategy):
        # Outputs are all-gathered across workers; padded batches give every
        # replica the same shape, which the collective needs.
        static = "pad"
    adapter = data_factory.get_adapter(x, batch_size=batch_size, shuffle=False, static=static)
    try:
        if static:
            build.check_static_batch(strategy, adapter)
        plan = EpochPlan.create(adapter, steps, "steps")
        plan.persistent = False
        build.build_network(model, adapter.element_spec[0])
        callback_list, run_state = _callbacks(model, callbacks, verbose, plan.steps, "predict")
        driver = Driver(model, run_state)
        return run_guarded(strategy, driver.predict_loop, plan, callback_list)
    finally:
        adapter.close()


# -- single batches ----------------------------------------------------------


def single_batch_adapter(x, y, sample_weight, class_weight, argument: str) -> Any:
    """The one whole batch of a `*_on_batch` call (array-like inputs only)."""
    if not structure.is_array_structure(x):
        raise TypeError(
            f"`x` for {argument}() must be array-like (an array, a tensor, or a list/dict "
            f"of them); received {type(x).__name__}."
        )
    return adapters_lib.ArrayAdapter(
        x, y, sample_weight, shuffle=False, class_weight=class_weight, whole_batch=True
    )


def _single_batch_is_exact(strategy: tf.distribute.Strategy) -> bool:
    """One worker reads the one batch for sure; across workers a shard may be empty."""
    return not distribute.is_multi_worker(strategy)


def run_single(model: Any, function: str, adapter: Any, return_dict: bool) -> Any:
    """One `train` or `test` step on the adapter's batch, metrics reset first."""
    build.ensure_built(model, adapter.element_spec)
    build.check_labels(model, adapter)
    model.reset_metrics()
    dataset = adapter.get_dataset()
    strategy = model.distribute_strategy
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    exact = _single_batch_is_exact(strategy)
    while True:
        try:
            getattr(model._state.executor, function)(iterator, tf.constant(1, tf.int64), exact)
            break
        except execution.XlaFallback:
            iterator = iter(strategy.experimental_distribute_dataset(dataset))
    logs = new_run_state(model, function).materialized_logs()
    return format_results(model, logs, return_dict)


def predict_single(model: Any, x: Any) -> Any:
    """`predict_on_batch`: the outputs of one whole batch, padding dropped."""
    adapter = single_batch_adapter(x, None, None, None, "predict_on_batch")
    dataset = adapter.get_dataset()
    build.build_network(model, dataset.element_spec[0])
    strategy = model.distribute_strategy
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    _, outputs = model._state.executor.predict(
        iterator, tf.constant(1, tf.int64), _single_batch_is_exact(strategy)
    )
    return drop_padding(outputs)
