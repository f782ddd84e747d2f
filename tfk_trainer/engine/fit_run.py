"""The setup of one `fit` run, in one place, and the run itself.

`run_fit` checks the arguments, makes the training (and validation)
adapters, builds the model, makes the `RunState`, the callbacks and the
driver, and runs the epochs. Every adapter it made is closed on every path
out, an error during the setup included (a PyDataset's workers or a
generator's thread never outlive the call).

The model's own module: it reads the model's engine state.
"""

from __future__ import annotations

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
        callback_list, run, history = _setup(
            model,
            adapter,
            opened,
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
        try:
            run()
        except BaseException:
            callback_list.on_train_abort()
            raise
    finally:
        for opened_adapter in opened:
            opened_adapter.close()
    return history


def _setup(
    model: Any,
    adapter: Any,
    opened: list,
    *,
    batch_size: int | None,
    epochs: int,
    verbose: int,
    callbacks: Any,
    validation_data: Any,
    class_weight: dict | None,
    initial_epoch: int,
    steps_per_epoch: int | None,
    validation_steps: int | None,
    validation_batch_size: int | None,
    validation_freq: Any,
) -> tuple[CallbackList, Any, History]:
    """Everything between the training adapter and the first epoch:
    `(callbacks, run, the History that run fills)`."""
    state = model._state
    if runs.static_mode(model, training=True):
        build.check_static_batch(model.distribute_strategy, adapter)
    plan = EpochPlan.create(adapter, steps_per_epoch, "steps_per_epoch")
    if adapter.one_shot and steps_per_epoch is None and epochs - initial_epoch > 1:
        raise ValueError(
            "`x` is a one-shot generator, which provides a single pass of data, but "
            f"fit() was asked for {epochs - initial_epoch} epochs. Pass `steps_per_epoch` "
            "(with an infinite generator), or a callable that returns a fresh generator."
        )
    build.build_network(model, adapter.element_spec[0])
    if class_weight is not None and tf.nest.is_nested(state.output_structure):
        raise ValueError(
            "`class_weight` is only supported for models with a single output; this model "
            f"returns {tf.nest.map_structure(lambda s: tuple(s.shape), state.output_structure)}. "
            "Pass per-output `sample_weight` instead."
        )
    build.ensure_built(model, adapter.element_spec)
    build.check_labels(model, adapter)

    run_state = runs.new_run_state(model, "fit")
    driver = Driver(model, run_state)
    validation = None
    if validation_data is not None:
        vx, vy, vsw = unpack_validation_data(validation_data)
        val_adapter = data_factory.get_adapter(
            vx,
            vy,
            vsw,
            batch_size=(validation_batch_size or batch_size)
            if structure.is_array_structure(vx)
            else validation_batch_size,
            shuffle=False,
            static=runs.static_mode(model, training=False),
            argument="validation_data",
        )
        opened.append(val_adapter)
        build.check_validation_inputs(model, val_adapter.element_spec, adapter.element_spec)
        build.check_labels(model, val_adapter, "validation_data")
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
        persistent_val = Iterators(model.distribute_strategy, val_plan, 0)

        def validation() -> dict[str, float]:
            iterators = (
                persistent_val
                if val_plan.persistent
                else Iterators(model.distribute_strategy, val_plan, 0)
            )
            return driver.evaluate_loop(val_plan, callback_list, iterators=iterators)

    history = History()
    user_callbacks = runs.callback_objects(callbacks)
    # History (and the progress bar) come after the user's callbacks, as in
    # Keras, so keys a callback adds to the epoch logs (learning_rate) are kept.
    all_callbacks = user_callbacks + [history]
    if verbose and not any(
        isinstance(cb, (ProgbarLogger, keras.callbacks.ProgbarLogger)) for cb in user_callbacks
    ):
        all_callbacks.append(
            ProgbarLogger(runs.progbar_verbose(model.distribute_strategy, verbose))
        )
    callback_list = CallbackList(
        all_callbacks,
        model=model,
        params={
            "verbose": verbose,
            "epochs": epochs,
            "steps": plan.steps,
            "batch_size": adapter.batch_size,
            "steps_per_execution": state.compile_config.steps_per_execution,
        },
        run_state=run_state,
    )

    def run() -> None:
        runs.run_guarded(
            model.distribute_strategy,
            driver.fit_loop,
            plan,
            callback_list,
            initial_epoch=initial_epoch,
            epochs=epochs,
            validation=validation,
            validation_freq=validation_freq,
        )
        model.history = history

    return callback_list, run, history


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
