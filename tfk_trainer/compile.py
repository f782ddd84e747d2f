"""Turns `compile()` arguments into loss and metric objects.

Keras 3 supplies the building blocks (`keras.losses`, `keras.metrics`,
`keras.optimizers`); this module resolves the user's strings, functions and
instances into them, checks every argument up front with errors that name
it, and fixes the names under which results are logged. Metrics are built
lazily, once the shapes of targets and outputs are known, because
`"accuracy"`/`"acc"`/`"crossentropy"`/`"ce"` depend on them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

import keras
import tensorflow as tf

_ACCURACY = ("accuracy", "acc")
_CROSSENTROPY = ("crossentropy", "ce")


def _same_rank(x1: tf.Tensor, x2: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Keras's rule: squeeze or expand a trailing 1 when ranks differ by one."""
    r1, r2 = x1.shape.rank, x2.shape.rank
    if r1 is None or r2 is None or r1 == r2:
        return x1, x2
    if r1 == r2 + 1 and x1.shape[-1] == 1:
        if r2 == 1:
            x2 = tf.expand_dims(x2, -1)
        else:
            x1 = tf.squeeze(x1, -1)
    elif r2 == r1 + 1 and x2.shape[-1] == 1:
        if r1 == 1:
            x1 = tf.expand_dims(x1, -1)
        else:
            x2 = tf.squeeze(x2, -1)
    return x1, x2


class FunctionLoss(keras.losses.Loss):
    """A `fn(y_true, y_pred)` loss as a `keras.losses.Loss` (as Keras wraps them)."""

    def __init__(self, fn, name: str | None = None, reduction: str = "sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        self.fn = fn

    def call(self, y_true, y_pred):
        y_true, y_pred = _same_rank(tf.convert_to_tensor(y_true), tf.convert_to_tensor(y_pred))
        return self.fn(y_true, y_pred)


def _kind_from_shapes(y_true_shape: tf.TensorShape, y_pred_shape: tf.TensorShape) -> str:
    """Keras's rule: binary, sparse or categorical, from static shapes."""
    y_true_shape = tf.TensorShape(y_true_shape)
    y_pred_shape = tf.TensorShape(y_pred_shape)
    if y_pred_shape.rank and y_pred_shape[-1] == 1:
        return "binary"
    t_rank, p_rank = y_true_shape.rank, y_pred_shape.rank
    if t_rank is not None and p_rank is not None and t_rank < p_rank:
        return "sparse"
    if t_rank and p_rank and y_true_shape[-1] == 1 and (y_pred_shape[-1] or 0) > 1:
        return "sparse"
    return "categorical"


def resolve_optimizer(optimizer: Any) -> keras.optimizers.Optimizer:
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        try:
            return keras.optimizers.get(optimizer)
        except ValueError:
            names = [
                "adadelta",
                "adafactor",
                "adagrad",
                "adam",
                "adamw",
                "adamax",
                "ftrl",
                "lamb",
                "lion",
                "nadam",
                "rmsprop",
                "sgd",
            ]
            close = difflib.get_close_matches(optimizer.lower(), names, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(
                f"Unknown optimizer {optimizer!r} for `optimizer`. Accepted: an instance of "
                f"keras.optimizers.Optimizer or one of {names}.{hint}"
            ) from None
    raise TypeError(
        "`optimizer` must be a string (e.g. 'adam') or a keras.optimizers.Optimizer "
        f"instance; received {type(optimizer).__name__}: {optimizer!r}."
    )


def _all_names(module) -> list[str]:
    return sorted(n for n in dir(module) if not n.startswith("_"))


def _resolve_named(identifier: str, kind: str, getter, module, argument: str | None = None) -> Any:
    try:
        return getter(identifier)
    except (ValueError, TypeError):
        candidates = [n for n in _all_names(module) if n[:1].islower()]
        candidates += ["mse", "mae", "mape", "msle", "kld", "accuracy", "acc", "crossentropy", "ce"]
        close = difflib.get_close_matches(identifier, candidates, n=3, cutoff=0.6)
        hint = f" Close matches: {', '.join(repr(c) for c in close)}." if close else ""
        raise ValueError(
            f"Unknown {'loss' if kind == 'loss' else 'metric'} {identifier!r} in "
            f"`{argument or kind}`.{hint} "
            "Accepted: a name from "
            f"{module.__name__} (e.g. {candidates[:4]}), a callable `fn(y_true, y_pred)`, "
            f"or a keras {'Loss' if kind == 'loss' else 'Metric'} instance."
        ) from None


def resolve_loss(identifier: Any, y_true_shape, y_pred_shape) -> keras.losses.Loss:
    """A `keras.losses.Loss` for one output (functions are wrapped, like Keras)."""
    if isinstance(identifier, keras.losses.Loss):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _CROSSENTROPY:
        kind = _kind_from_shapes(y_true_shape, y_pred_shape)
        fn = {
            "binary": keras.losses.binary_crossentropy,
            "sparse": keras.losses.sparse_categorical_crossentropy,
            "categorical": keras.losses.categorical_crossentropy,
        }[kind]
        return FunctionLoss(fn, name=identifier)
    if isinstance(identifier, str):
        obj = _resolve_named(identifier, "loss", keras.losses.get, keras.losses)
        if isinstance(obj, keras.losses.Loss):
            return obj
        return FunctionLoss(obj, name=identifier)
    if callable(identifier):
        name = getattr(identifier, "__name__", type(identifier).__name__)
        return FunctionLoss(identifier, name=name)
    raise TypeError(
        "`loss` must be a string, a callable `fn(y_true, y_pred)` or a keras.losses.Loss "
        f"instance; received {type(identifier).__name__}: {identifier!r}."
    )


def resolve_metric(
    identifier: Any, y_true_shape, y_pred_shape, argument: str
) -> keras.metrics.Metric:
    """A `keras.metrics.Metric` named as the user wrote it."""
    if isinstance(identifier, keras.metrics.Metric):
        return identifier
    if isinstance(identifier, str):
        lowered = identifier.lower()
        if lowered in _ACCURACY:
            kind = _kind_from_shapes(y_true_shape, y_pred_shape)
            cls = {
                "binary": keras.metrics.BinaryAccuracy,
                "sparse": keras.metrics.SparseCategoricalAccuracy,
                "categorical": keras.metrics.CategoricalAccuracy,
            }[kind]
            return cls(name=identifier)
        if lowered in _CROSSENTROPY:
            kind = _kind_from_shapes(y_true_shape, y_pred_shape)
            cls = {
                "binary": keras.metrics.BinaryCrossentropy,
                "sparse": keras.metrics.SparseCategoricalCrossentropy,
                "categorical": keras.metrics.CategoricalCrossentropy,
            }[kind]
            return cls(name=identifier)
        obj = _resolve_named(identifier, "metrics", keras.metrics.get, keras.metrics, argument)
        if isinstance(obj, keras.metrics.Metric):
            obj.name = identifier
            return obj
        return keras.metrics.MeanMetricWrapper(obj, name=identifier)
    if callable(identifier):
        name = getattr(identifier, "__name__", type(identifier).__name__)
        return keras.metrics.MeanMetricWrapper(identifier, name=name)
    raise TypeError(
        f"Each entry of `{argument}` must be a string, a callable `fn(y_true, y_pred)` or a "
        f"keras.metrics.Metric instance; received {type(identifier).__name__}: {identifier!r}."
    )


def _check_metric_entries(value: Any, argument: str) -> list:
    if value is None:
        return []
    if isinstance(value, dict):
        raise NotImplementedError(
            f"`{argument}` as a dict (per-output metrics) needs a multi-output model; "
            "multi-output compile is not supported yet by tfk_trainer. Pass a list."
        )
    if isinstance(value, (str, keras.metrics.Metric)) or callable(value):
        raise TypeError(
            f"`{argument}` must be a list (e.g. ['accuracy']); received a single "
            f"{type(value).__name__}: {value!r}. Wrap it in a list."
        )
    if not isinstance(value, (list, tuple)):
        raise TypeError(
            f"`{argument}` must be a list of metrics; received {type(value).__name__}: {value!r}."
        )
    flat = []
    for entry in value:
        if isinstance(entry, (list, tuple)):
            raise NotImplementedError(
                f"`{argument}` as a list of lists (per-output metrics) needs a multi-output "
                "model, which is not supported yet by tfk_trainer."
            )
        if not (isinstance(entry, (str, keras.metrics.Metric)) or callable(entry)):
            raise TypeError(
                f"Each entry of `{argument}` must be a string, a callable or a "
                f"keras.metrics.Metric instance; received {type(entry).__name__}: {entry!r}."
            )
        flat.append(entry)
    return flat


@dataclass
class CompileConfig:
    """The checked `compile()` arguments, before shapes are known."""

    optimizer: keras.optimizers.Optimizer
    loss: Any
    loss_weights: Any
    metrics: list
    weighted_metrics: list
    run_eagerly: bool
    steps_per_execution: int
    jit_compile: bool | str
    auto_scale_loss: bool


def check_compile_args(
    *,
    optimizer,
    loss,
    loss_weights,
    metrics,
    weighted_metrics,
    run_eagerly,
    steps_per_execution,
    jit_compile,
    auto_scale_loss,
) -> CompileConfig:
    optimizer = resolve_optimizer(optimizer)
    if isinstance(loss, (list, tuple, dict)):
        if isinstance(loss, (list, tuple)) and len(loss) == 1:
            loss = loss[0]
        else:
            raise NotImplementedError(
                f"`loss` as a {type(loss).__name__} (one loss per output) needs multi-output "
                "support, which tfk_trainer does not have yet. Pass a single loss."
            )
    if loss is not None and not (isinstance(loss, (str, keras.losses.Loss)) or callable(loss)):
        raise TypeError(
            "`loss` must be a string, a callable `fn(y_true, y_pred)` or a keras.losses.Loss "
            f"instance; received {type(loss).__name__}: {loss!r}."
        )
    if isinstance(loss, str) and loss.lower() not in _CROSSENTROPY:
        _resolve_named(loss, "loss", keras.losses.get, keras.losses)  # fail fast on typos
    if loss_weights is not None:
        if isinstance(loss_weights, (list, tuple)) and len(loss_weights) == 1:
            loss_weights = loss_weights[0]
        if isinstance(loss_weights, (list, tuple, dict)):
            raise NotImplementedError(
                "`loss_weights` as a list or dict needs multi-output support, which "
                "tfk_trainer does not have yet; pass a float for a single output."
            )
        if isinstance(loss_weights, bool) or not isinstance(loss_weights, (int, float)):
            raise TypeError(
                f"`loss_weights` must be a float (single output); received {loss_weights!r}."
            )
    metric_list = _check_metric_entries(metrics, "metrics")
    weighted_list = _check_metric_entries(weighted_metrics, "weighted_metrics")
    for argument, entries in (("metrics", metric_list), ("weighted_metrics", weighted_list)):
        for entry in entries:
            if isinstance(entry, str) and entry.lower() not in _ACCURACY + _CROSSENTROPY:
                _resolve_named(entry, "metrics", keras.metrics.get, keras.metrics, argument)
    if not isinstance(run_eagerly, bool):
        raise TypeError(f"`run_eagerly` must be a bool; received {run_eagerly!r}.")
    if isinstance(steps_per_execution, bool) or not isinstance(steps_per_execution, int):
        raise TypeError(
            f"`steps_per_execution` must be a positive int; received {steps_per_execution!r}."
        )
    if steps_per_execution < 1:
        raise ValueError(
            f"`steps_per_execution` must be a positive int; received {steps_per_execution}."
        )
    if jit_compile not in ("auto", True, False) or (not isinstance(jit_compile, (bool, str))):
        raise ValueError(
            f'`jit_compile` must be "auto", True or False; received jit_compile={jit_compile!r}.'
        )
    if not isinstance(auto_scale_loss, bool):
        raise TypeError(f"`auto_scale_loss` must be a bool; received {auto_scale_loss!r}.")
    return CompileConfig(
        optimizer=optimizer,
        loss=loss,
        loss_weights=loss_weights,
        metrics=metric_list,
        weighted_metrics=weighted_list,
        run_eagerly=run_eagerly,
        steps_per_execution=steps_per_execution,
        jit_compile=jit_compile,
        auto_scale_loss=auto_scale_loss,
    )


@dataclass
class CompiledMetric:
    """One resolved metric and the key under which its result is logged."""

    name: str
    metric: keras.metrics.Metric
    weighted: bool


@dataclass
class CompiledObjectives:
    """Loss and metrics resolved for a model's output, created under the strategy scope."""

    loss: keras.losses.Loss | None
    loss_weight: float
    metrics: list[CompiledMetric] = field(default_factory=list)

    @property
    def metric_names(self) -> list[str]:
        return [m.name for m in self.metrics]


def build_objectives(config: CompileConfig, y_true_spec, y_pred) -> CompiledObjectives:
    """Resolves loss and metrics against the shapes of one output."""
    if tf.nest.is_nested(y_pred):
        raise NotImplementedError(
            "The model returns a structure of several outputs "
            f"({tf.nest.map_structure(lambda t: tuple(t.shape), y_pred)}); multi-output "
            "models are not supported yet by tfk_trainer."
        )
    if y_true_spec is not None and tf.nest.is_nested(y_true_spec):
        raise ValueError(
            "The targets `y` are a structure of several arrays but the model has a single "
            f"output; received y with structure {tf.nest.map_structure(lambda s: s.shape, y_true_spec)}."
        )
    true_shape = y_true_spec.shape if y_true_spec is not None else tf.TensorShape(None)
    pred_shape = y_pred.shape
    loss = None
    if config.loss is not None:
        loss = resolve_loss(config.loss, true_shape, pred_shape)
    weight = 1.0 if config.loss_weights is None else float(config.loss_weights)
    compiled: list[CompiledMetric] = []
    taken: dict[str, int] = {"loss": 1}
    for entry in config.metrics:
        metric = resolve_metric(entry, true_shape, pred_shape, "metrics")
        name = metric.name
        if name in taken:
            index = taken[name]
            taken[name] += 1
            name = f"{name}_{index}"
        taken.setdefault(name, 1)
        compiled.append(CompiledMetric(name, metric, weighted=False))
    for entry in config.weighted_metrics:
        metric = resolve_metric(entry, true_shape, pred_shape, "weighted_metrics")
        name = metric.name
        if name in taken:
            name = f"weighted_{metric.name}"
            if name in taken:
                index = taken[name]
                taken[name] += 1
                name = f"{name}_{index}"
        taken.setdefault(name, 1)
        compiled.append(CompiledMetric(name, metric, weighted=True))
    return CompiledObjectives(loss=loss, loss_weight=weight, metrics=compiled)
