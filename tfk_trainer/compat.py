"""Every private TensorFlow, Keras and ml_collections access of tfk_trainer, in one place.

Each private thing the package relies on is reached through one small function
here and nowhere else, so that a TensorFlow or Keras upgrade that moves or
removes it breaks loudly, in one module, with a message naming the versions
and the missing piece, instead of silently changing behaviour (clipping turned
per-replica, a label check skipped, `mode="auto"` guessing from a name).

Two kinds of "missing" are kept apart:

- a legitimate state (a tensor without a Keras mask, a loss that does not wrap
  a function, a metric without a direction): the function returns None;
- the private API itself gone (the module, class, method or attribute that the
  installed TensorFlow/Keras is known to define): the function raises
  `PrivateApiError`. Each API is checked once, on first use, against the
  module or class that defines it.

`tests/test_compat.py` holds a canary per function (it still exists and still
behaves as assumed) and scans the package so no private access lives
elsewhere. The Keras range in `pyproject.toml` is the one these canaries pass.
"""

from __future__ import annotations

import functools
import importlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf


class PrivateApiError(RuntimeError):
    """A private TensorFlow/Keras/ml_collections API tfk_trainer relies on is gone."""


def _versions() -> str:
    return f"TensorFlow {tf.__version__}, Keras {keras.__version__}"


def _gone(what: str, used_for: str) -> PrivateApiError:
    return PrivateApiError(
        f"{what} is missing in this installation ({_versions()}); tfk_trainer uses it "
        f"for {used_for}. This TensorFlow/Keras is outside the range tfk_trainer supports "
        "(see pyproject.toml): install a supported version, or update "
        "tfk_trainer/compat.py and its canaries in tests/test_compat.py."
    )


def _import(module: str, used_for: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise _gone(f"The module `{module}`", used_for) from e


def _assigns(init: Callable, attribute: str) -> bool:
    """True when the function `init` assigns `self.<attribute>` (read from its bytecode
    names, so nothing is instantiated and no variable is created)."""
    code = getattr(init, "__code__", None)
    return code is not None and attribute in code.co_names


# -- TensorFlow ----------------------------------------------------------------


@functools.cache
def _summary_state() -> Any:
    used_for = "the `record_if` condition a TensorBoard callback restores after fit"
    module = _import("tensorflow.python.ops.summary_ops_v2", used_for)
    state = getattr(module, "_summary_state", None)
    if state is None or not hasattr(state, "is_recording"):
        raise _gone("`summary_ops_v2._summary_state.is_recording`", used_for)
    return state


def summary_recording_condition() -> Any:
    """The condition of the innermost `tf.summary.record_if` in force (a bool, a bool
    tensor or a callable), or None outside any `record_if`.

    TensorFlow has no public getter; the TensorBoard callback needs it to defer to
    a user's own `record_if` while its in-model summary switch is pushed.
    """
    return _summary_state().is_recording


@functools.cache
def _check_multi_worker_api() -> None:
    if not callable(getattr(tf.distribute.StrategyExtended, "_in_multi_worker_mode", None)):
        raise _gone(
            "`tf.distribute.StrategyExtended._in_multi_worker_mode`",
            "telling multi-worker strategies from single-host ones",
        )


def in_multi_worker_mode(strategy: tf.distribute.Strategy) -> bool:
    """True when `strategy` spans several workers (TensorFlow's own answer).

    Every TensorFlow strategy defines it; a multi-worker run taken for a single
    host would save from every worker and skip the cross-worker checks.
    """
    _check_multi_worker_api()
    return bool(strategy.extended._in_multi_worker_mode())


@functools.cache
def _from_function_dataset_class() -> type:
    module = _import(
        "tensorflow.python.distribute.input_lib", "telling per-host input from split input"
    )
    cls = getattr(module, "DistributedDatasetsFromFunction", None)
    if not isinstance(cls, type):
        raise _gone(
            "`tensorflow.python.distribute.input_lib.DistributedDatasetsFromFunction`",
            "telling per-host input from split input (the order of predictions)",
        )
    return cls


def is_dataset_from_function(distributed: Any) -> bool:
    """True for a dataset made by `strategy.distribute_datasets_from_function`.

    Its replicas hold their input pipeline's batches in turn, where
    `experimental_distribute_dataset` splits each global batch across input
    workers replica-major; predict reorders the two differently
    (engine/predict_order.py). TensorFlow has no public class for it.
    """
    return isinstance(distributed, _from_function_dataset_class())


# -- Keras ---------------------------------------------------------------------


@functools.cache
def _check_all_reduce_sum_gradients() -> None:
    if not callable(getattr(keras.optimizers.Optimizer, "_all_reduce_sum_gradients", None)):
        raise _gone(
            "`keras.optimizers.Optimizer._all_reduce_sum_gradients` (the TensorFlow backend's "
            "cross-replica gradient sum)",
            "summing gradients once, before loss scaling's finite check and clipping",
        )


_SKIP_LOCK = threading.Lock()
_SKIP_DEPTH = "_tfk_reduced_gradients_depth"


def _replica_key() -> int | None:
    """This replica's id where it is a Python value (MirroredStrategy's replica
    threads; also the threads a merge call starts for the same replica), None
    where it is a traced tensor (TPU and XLA trace every replica at once)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        return None
    value = tf.get_static_value(ctx.replica_id_in_sync_group)
    return None if value is None else int(value)


def _install_reduction_skip(optimizer: Any) -> None:
    """Wraps this optimizer instance's cross-replica sum so it passes gradients
    through on a replica that is inside `apply_reduced_gradients` (once per instance)."""
    if _SKIP_DEPTH in vars(optimizer):
        return
    original = optimizer._all_reduce_sum_gradients

    def all_reduce_sum_gradients(grads_and_vars: Any) -> Any:
        if vars(optimizer)[_SKIP_DEPTH].get(_replica_key(), 0) > 0:
            return list(grads_and_vars)
        return original(grads_and_vars)

    object.__setattr__(optimizer, "_all_reduce_sum_gradients", all_reduce_sum_gradients)
    object.__setattr__(optimizer, _SKIP_DEPTH, {})


def _optimizer_chain(optimizer: Any) -> list:
    chain = [optimizer]
    while hasattr(chain[-1], "inner_optimizer"):  # LossScaleOptimizer
        chain.append(chain[-1].inner_optimizer)
    return chain


def _count_skip(chain: list, key: int | None, delta: int) -> None:
    with _SKIP_LOCK:
        for o in chain:
            depth = vars(o)[_SKIP_DEPTH]
            depth[key] = depth.get(key, 0) + delta


def apply_reduced_gradients(optimizer: Any, grads: Sequence[Any], variables: Sequence[Any]) -> None:
    """`optimizer.apply(grads, variables)` for gradients already summed over replicas.

    Keras's TensorFlow optimizer sums gradients across replicas inside
    `apply`, after `LossScaleOptimizer` has checked them for inf/nan (on each
    replica's local gradients, so replicas could disagree and apply inf) and
    after `_clip_gradients` (so clipping saw local gradients). The engine sums
    once before `apply`; here Keras's own sum is skipped for this call, so
    every decision inside `apply` (finite check, unscaling, clipping, weight
    decay, accumulation) sees the global gradients and no second all-reduce
    runs. Other callers of `optimizer.apply` (a custom `train_step`) keep
    Keras's sum: the skip is counted per replica, so one replica leaving
    here does not change what another replica's `apply` does.
    """
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            "apply_reduced_gradients needs a keras.optimizers.Optimizer; received "
            f"{type(optimizer).__name__}."
        )
    _check_all_reduce_sum_gradients()
    chain = [o for o in _optimizer_chain(optimizer) if isinstance(o, keras.optimizers.Optimizer)]
    with _SKIP_LOCK:
        for o in chain:
            _install_reduction_skip(o)
    key = _replica_key()
    _count_skip(chain, key, 1)
    try:
        optimizer.apply(list(grads), list(variables))
    finally:
        _count_skip(chain, key, -1)


@functools.cache
def _check_learning_rate() -> None:
    inits = [k.__init__ for k in keras.optimizers.Optimizer.__mro__ if "__init__" in vars(k)]
    if not any(_assigns(init, "_learning_rate") for init in inits):
        raise _gone(
            "The `_learning_rate` attribute of Keras optimizers",
            "telling a settable learning rate from a schedule",
        )


def optimizer_learning_rate(optimizer: Any) -> Any:
    """What a Keras optimizer was created with as `learning_rate`: its variable, a
    `LearningRateSchedule` or a callable; None for an optimizer that is not Keras's.

    The public `learning_rate` evaluates a schedule, so it cannot say whether the
    rate is settable (callbacks that set it refuse a schedule before training).
    """
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        return None
    _check_learning_rate()
    try:
        return optimizer._learning_rate
    except AttributeError as e:
        raise _gone(
            f"The `_learning_rate` attribute of the {type(optimizer).__name__} optimizer",
            "telling a settable learning rate from a schedule",
        ) from e


@functools.cache
def _masking() -> Any:
    used_for = "the masks that Keras layers attach to their outputs (masked losses)"
    module = _import("keras.src.backend.common.masking", used_for)
    if not callable(getattr(module, "get_keras_mask", None)):
        raise _gone("`keras.src.backend.common.masking.get_keras_mask`", used_for)
    return module


def keras_mask(tensor: Any) -> Any:
    """The mask a Keras layer attached to `tensor` (e.g. `Masking`, `Embedding(mask_zero=
    True)`), or None when it has none; read with Keras's own accessor."""
    return _masking().get_keras_mask(tensor)


@functools.cache
def _wrapper_classes() -> tuple[type, type]:
    used_for = "finding the sparse cross-entropy a loss or metric wraps (label checks)"
    losses = _import("keras.src.losses.losses", used_for)
    loss_wrapper = getattr(losses, "LossFunctionWrapper", None)
    init = getattr(loss_wrapper, "__init__", None)
    if loss_wrapper is None or not (_assigns(init, "fn") and _assigns(init, "_fn_kwargs")):
        raise _gone("`LossFunctionWrapper.fn` / `._fn_kwargs` (keras.src.losses.losses)", used_for)
    metric_wrapper = keras.metrics.MeanMetricWrapper
    init = metric_wrapper.__init__
    if not (_assigns(init, "_fn") and _assigns(init, "_fn_kwargs")):
        raise _gone("`keras.metrics.MeanMetricWrapper._fn` / `._fn_kwargs`", used_for)
    return loss_wrapper, metric_wrapper


def wrapped_fn_and_kwargs(obj: Any) -> tuple[Callable, dict] | None:
    """`(fn, kwargs)` of a Keras loss or metric that wraps a function (a
    `LossFunctionWrapper`, e.g. `SparseCategoricalCrossentropy`, or a
    `MeanMetricWrapper`, e.g. `SparseCategoricalAccuracy`); None for others."""
    loss_wrapper, metric_wrapper = _wrapper_classes()
    if isinstance(obj, loss_wrapper):
        return obj.fn, dict(obj._fn_kwargs or {})
    if isinstance(obj, metric_wrapper):
        return obj._fn, dict(obj._fn_kwargs or {})
    return None


@functools.cache
def _check_direction() -> None:
    for cls in (keras.metrics.Accuracy, keras.metrics.MeanAbsoluteError):
        if not _assigns(cls.__init__, "_direction"):
            raise _gone(
                f"The `_direction` attribute of keras.metrics.{cls.__name__}",
                'choosing the direction of a monitored metric for mode="auto"',
            )


def metric_direction(metric: Any) -> str | None:
    """ "up" or "down": the direction Keras gives a metric (accuracy up, errors down);
    None for a metric Keras gives none (e.g. `Mean`, a user's own)."""
    _check_direction()
    direction = getattr(metric, "_direction", None)
    return direction if direction in ("up", "down") else None


# -- ml_collections ------------------------------------------------------------


@functools.cache
def _error_config_class() -> type:
    used_for = "reporting a config file that could not be read"
    module = _import("ml_collections.config_flags.config_flags", used_for)
    cls = getattr(module, "_ErrorConfig", None)
    if cls is None or not _assigns(cls._ReportError, "_error"):
        raise PrivateApiError(
            "`ml_collections.config_flags.config_flags._ErrorConfig._error` is missing in "
            f"this ml_collections; tfk_trainer uses it for {used_for}. Install a supported "
            "ml_collections, or update tfk_trainer/compat.py and tests/test_compat.py."
        )
    return cls


def config_load_error(config: Any) -> BaseException | None:
    """The error ml_collections deferred when it could not load a config file (it hands
    back a placeholder that raises on first use); None for any other value."""
    if not isinstance(config, _error_config_class()):
        return None
    return object.__getattribute__(config, "_error")
