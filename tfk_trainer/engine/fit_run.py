"""The setup of one `fit` run, in one place, and the run itself.

`run_fit` checks the arguments, makes the training (and validation)
adapters, builds the model, makes the `RunState`, the callbacks and the
driver, and runs the epochs. Every adapter it made is closed on every path
out, an error during the setup included (a PyDataset's workers or a
generator's thread never outlive the call).

The model's own module: it reads the model's engine state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from tfk_trainer.callbacks.base import CallbackList
from tfk_trainer.callbacks.history import History
from tfk_trainer.callbacks.progbar import ProgbarLogger, resolve_verbose
from tfk_trainer.data import adapters as adapters_lib
from tfk_trainer.data import factory as data_factory
from tfk_trainer.data import structure
from tfk_trainer.engine import build, checks, runs
from tfk_trainer.engine.loop import (
    Driver,
    EpochPlan,
    Iterators,
    check_validation_freq,
    validation_count,
)


@dataclass(frozen=True)
class _Request:
    """`fit`'s arguments that the setup steps read, once checked."""

    batch_size: int | None
    epochs: int
    verbose: int
    callbacks: Any
    validation_data: Any
    class_weight: dict | None
    initial_epoch: int
    steps_per_epoch: int | None
    validation_steps: int | None
    validation_batch_size: int | None
    validation_freq: Any


def run_fit(
    model: Any,
    *,
    x: Any,
    y: Any,
    batch_size: int | None,
    epochs: int,
    verbose: int | str,
    callbacks: Any,
    validation_split: float,
    validation_data: Any,
    shuffle: bool | str,
    class_weight: dict | None,
    sample_weight: Any,
    initial_epoch: int,
    steps_per_epoch: int | None,
    validation_steps: int | None,
    validation_batch_size: int | None,
    validation_freq: Any,
) -> History:
    """`Model.fit`'s body (see its docstring); returns the run's `History`."""
    verbose = resolve_verbose(verbose)
    validation_freq = _check_arguments(
        epochs, initial_epoch, validation_split, validation_freq, validation_batch_size
    )
    (x, y, sample_weight), validation_data = _split_validation(
        (x, y, sample_weight), validation_data, validation_split
    )
    request = _Request(
        batch_size=batch_size,
        epochs=epochs,
        verbose=verbose,
        callbacks=callbacks,
        validation_data=validation_data,
        class_weight=class_weight,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch,
        validation_steps=validation_steps,
        validation_batch_size=validation_batch_size,
        validation_freq=validation_freq,
    )
    opened: list = []  # every adapter made here, closed on every path out
    try:
        adapter = data_factory.get_adapter(
            x,
            y,
            sample_weight,
            batch_size=batch_size,
            shuffle=shuffle,
            class_weight=class_weight,
            static=runs.static_mode(model, training=True),
        )
        opened.append(adapter)
        callback_list, run, history = _setup(model, adapter, opened, request)
        try:
            run()
        except BaseException:
            callback_list.on_train_abort()
            raise
    finally:
        for opened_adapter in opened:
            opened_adapter.close()
    return history


def _check_arguments(
    epochs: int,
    initial_epoch: int,
    validation_split: Any,
    validation_freq: Any,
    validation_batch_size: int | None,
) -> Any:
    """Checks the scalar arguments before any data is touched; returns the
    normalised `validation_freq` (an int, or a set of 1-indexed epochs)."""
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
    return validation_freq


def _split_validation(
    arrays: tuple, validation_data: Any, validation_split: float
) -> tuple[tuple, Any]:
    """`((x, y, sample_weight), validation_data)`: with `validation_split` (and no
    `validation_data`), the last part of the arrays becomes the validation data."""
    if not validation_split or validation_data is not None:
        return arrays, validation_data
    if not structure.is_array_structure(arrays[0]):
        raise ValueError(
            "`validation_split` is only supported for NumPy arrays and tensors; "
            f"received x of type {type(arrays[0]).__name__}. Pass `validation_data` instead."
        )
    arrays, validation_data = adapters_lib.train_validation_split(arrays, validation_split)
    if validation_data[2] is None:
        validation_data = validation_data[:2]
    return arrays, validation_data


def _setup(
    model: Any, adapter: Any, opened: list, request: _Request
) -> tuple[CallbackList, Callable[[], None], History]:
    """Everything between the training adapter and the first epoch:
    `(callbacks, run, the History that run fills)`. Adapters it makes are added
    to `opened` as soon as they exist."""
    plan = _training_plan(model, adapter, request)
    _build(model, adapter, request.class_weight)
    run_state = runs.new_run_state(model, "fit")
    driver = Driver(model, run_state)
    validate = None
    if request.validation_data is not None:
        validate = _validation(model, driver, adapter, opened, request)
    history = History()
    callback_list = _callback_list(model, request, plan, run_state, history)
    validation = None if validate is None else functools.partial(validate, callback_list)

    def run() -> None:
        runs.run_guarded(
            model.distribute_strategy,
            driver.fit_loop,
            plan,
            callback_list,
            initial_epoch=request.initial_epoch,
            epochs=request.epochs,
            validation=validation,
            validation_freq=request.validation_freq,
        )
        model.history = history

    return callback_list, run, history


def _training_plan(model: Any, adapter: Any, request: _Request) -> EpochPlan:
    """The training epochs' plan, after the checks that need only the adapter."""
    if runs.static_mode(model, training=True):
        build.check_static_batch(model.distribute_strategy, adapter)
    plan = EpochPlan.create(adapter, request.steps_per_epoch, "steps_per_epoch")
    epochs = request.epochs - request.initial_epoch
    if adapter.one_shot and request.steps_per_epoch is None and epochs > 1:
        raise ValueError(
            "`x` is a one-shot generator, which provides a single pass of data, but "
            f"fit() was asked for {epochs} epochs. Pass `steps_per_epoch` "
            "(with an infinite generator), or a callable that returns a fresh generator."
        )
    return plan


def _build(model: Any, adapter: Any, class_weight: dict | None) -> None:
    """Builds the network and the step for the training data, and checks the labels."""
    state = model._state
    build.build_network(model, adapter.element_spec[0])
    if class_weight is not None and tf.nest.is_nested(state.output_structure):
        raise ValueError(
            "`class_weight` is only supported for models with a single output; this model "
            f"returns {tf.nest.map_structure(lambda s: tuple(s.shape), state.output_structure)}. "
            "Pass per-output `sample_weight` instead."
        )
    build.ensure_built(model, adapter.element_spec)
    build.check_labels(model, adapter)


def _validation(
    model: Any, driver: Driver, adapter: Any, opened: list, request: _Request
) -> Callable[[CallbackList], dict[str, float]]:
    """Makes the validation adapter (added to `opened`) and checks it against the
    training data; returns `validate(callbacks) -> logs`, one validation run."""
    vx, vy, vsw = unpack_validation_data(request.validation_data)
    val_adapter = data_factory.get_adapter(
        vx,
        vy,
        vsw,
        batch_size=(request.validation_batch_size or request.batch_size)
        if structure.is_array_structure(vx)
        else request.validation_batch_size,
        shuffle=False,
        static=runs.static_mode(model, training=False),
        argument="validation_data",
    )
    opened.append(val_adapter)
    build.check_validation_inputs(model, val_adapter.element_spec, adapter.element_spec)
    build.check_labels(model, val_adapter, "validation_data")
    val_plan = EpochPlan.create(val_adapter, request.validation_steps, "validation_steps")
    # Validation restarts from the beginning each time, except a one-shot
    # generator, which can only continue where the last validation stopped.
    val_plan.persistent = val_adapter.one_shot
    if (
        val_adapter.one_shot
        and request.validation_steps is None
        and validation_count(request.initial_epoch, request.epochs, request.validation_freq) > 1
    ):
        raise ValueError(
            "`validation_data` is a one-shot generator, which provides a single pass "
            "of data, but validation runs more than once. Pass `validation_steps` "
            "(with an infinite generator), or a callable that returns a fresh generator."
        )
    strategy = model.distribute_strategy
    persistent_val = Iterators(strategy, val_plan, 0)

    def validate(callback_list: CallbackList) -> dict[str, float]:
        iterators = persistent_val if val_plan.persistent else Iterators(strategy, val_plan, 0)
        return driver.evaluate_loop(val_plan, callback_list, iterators=iterators)

    return validate


def _callback_list(
    model: Any, request: _Request, plan: EpochPlan, run_state: Any, history: History
) -> CallbackList:
    """The run's callbacks: the user's, then `history` and (with `verbose`, unless the
    user passed one) a progress bar, as in Keras, so keys a callback adds to the epoch
    logs (learning_rate) reach the History."""
    user_callbacks = runs.callback_objects(request.callbacks)
    all_callbacks = user_callbacks + [history]
    verbose = request.verbose
    if verbose and not any(
        isinstance(cb, (ProgbarLogger, keras.callbacks.ProgbarLogger)) for cb in user_callbacks
    ):
        all_callbacks.append(
            ProgbarLogger(runs.progbar_verbose(model.distribute_strategy, verbose))
        )
    return CallbackList(
        all_callbacks,
        model=model,
        params={
            "verbose": verbose,
            "epochs": request.epochs,
            "steps": plan.steps,
            "batch_size": plan.adapter.batch_size,
            "steps_per_execution": model._state.compile_config.steps_per_execution,
        },
        run_state=run_state,
    )


def unpack_validation_data(validation_data: Any) -> tuple:
    """`(x, y, sample_weight)` of `validation_data`, or `(source, None, None)`."""
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
