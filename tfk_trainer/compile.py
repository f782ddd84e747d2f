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
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfk_trainer.engine import step as step_lib

_ACCURACY = ("accuracy", "acc")
_CROSSENTROPY = ("crossentropy", "ce")

# The optimizers known by name (what `keras.optimizers.get` resolves, lower-case),
# with their classes: `compile()` names them in its error for an unknown name,
# and the training binary builds its optimizer from them.
OPTIMIZERS: dict[str, type[keras.optimizers.Optimizer]] = {
    "adadelta": keras.optimizers.Adadelta,
    "adafactor": keras.optimizers.Adafactor,
    "adagrad": keras.optimizers.Adagrad,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "adamax": keras.optimizers.Adamax,
    "ftrl": keras.optimizers.Ftrl,
    "lamb": keras.optimizers.Lamb,
    "lion": keras.optimizers.Lion,
    "nadam": keras.optimizers.Nadam,
    "rmsprop": keras.optimizers.RMSprop,
    "sgd": keras.optimizers.SGD,
}


class FunctionLoss(keras.losses.Loss):
    """A `fn(y_true, y_pred)` loss as a `keras.losses.Loss` (as Keras wraps them)."""

    def __init__(self, fn, name: str | None = None, reduction: str = "sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        self.fn = fn

    def call(self, y_true, y_pred):
        y_true, y_pred = step_lib.same_rank(
            tf.convert_to_tensor(y_true), tf.convert_to_tensor(y_pred)
        )
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
        if optimizer.lower() in OPTIMIZERS:  # "lamb" too, which keras.optimizers.get misses
            return OPTIMIZERS[optimizer.lower()]()
        try:
            return keras.optimizers.get(optimizer)
        except ValueError as e:
            names = sorted(OPTIMIZERS)
            close = difflib.get_close_matches(optimizer.lower(), names, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(
                f"Unknown optimizer {optimizer!r} for `optimizer`. Accepted: an instance of "
                f"keras.optimizers.Optimizer or one of {names}.{hint}"
            ) from e
    raise TypeError(
        "`optimizer` must be a string (e.g. 'adam') or a keras.optimizers.Optimizer "
        f"instance; received {type(optimizer).__name__}: {optimizer!r}."
    )


def _all_names(module) -> list[str]:
    return sorted(n for n in dir(module) if not n.startswith("_"))


def _resolve_named(identifier: str, kind: str, getter, module, argument: str | None = None) -> Any:
    try:
        return getter(identifier)
    except (ValueError, TypeError) as e:
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
        ) from e


def resolve_loss(identifier: Any, y_true_shape, y_pred_shape) -> keras.losses.Loss:
    """A `keras.losses.Loss` for one output (functions are wrapped, like Keras)."""
    if isinstance(identifier, type) and issubclass(identifier, keras.losses.Loss):
        identifier = identifier()  # a class, as Keras accepts
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


# 'accuracy'/'acc' and 'crossentropy'/'ce' by the kind `_kind_from_shapes` reads.
_SHAPE_RESOLVED_METRICS = {
    "accuracy": {
        "binary": keras.metrics.BinaryAccuracy,
        "sparse": keras.metrics.SparseCategoricalAccuracy,
        "categorical": keras.metrics.CategoricalAccuracy,
    },
    "crossentropy": {
        "binary": keras.metrics.BinaryCrossentropy,
        "sparse": keras.metrics.SparseCategoricalCrossentropy,
        "categorical": keras.metrics.CategoricalCrossentropy,
    },
}


def resolve_metric(
    identifier: Any, y_true_shape, y_pred_shape, argument: str
) -> keras.metrics.Metric:
    """A `keras.metrics.Metric` named as the user wrote it."""
    if isinstance(identifier, type) and issubclass(identifier, keras.metrics.Metric):
        identifier = identifier()  # a class, as Keras accepts
    if isinstance(identifier, keras.metrics.Metric):
        return identifier
    if isinstance(identifier, str):
        lowered = identifier.lower()
        family = "accuracy" if lowered in _ACCURACY else "crossentropy"
        if lowered in _ACCURACY + _CROSSENTROPY:
            kind = _kind_from_shapes(y_true_shape, y_pred_shape)
            return _SHAPE_RESOLVED_METRICS[family][kind](name=identifier)
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


def _is_metric_leaf(entry: Any) -> bool:
    return isinstance(entry, (str, keras.metrics.Metric)) or (
        callable(entry) and not isinstance(entry, (list, tuple, dict))
    )


def _check_metric_entries(value: Any, argument: str) -> Any:
    """Checks every leaf of `metrics`/`weighted_metrics`; keeps the structure.

    Accepted (the forms of the Keras 3 API docs): a list of metrics; a dict mapping output
    names to a metric or a list of metrics; a list with one entry per output,
    each a metric or a list of metrics.
    """
    if value is None:
        return []
    if _is_metric_leaf(value):
        raise TypeError(
            f"`{argument}` must be a list (e.g. ['accuracy']) or a dict of per-output metrics; "
            f"received a single {type(value).__name__}: {value!r}. Wrap it in a list."
        )
    if not isinstance(value, (list, tuple, dict)):
        raise TypeError(
            f"`{argument}` must be a list or a dict of metrics; received "
            f"{type(value).__name__}: {value!r}."
        )
    entries = value.values() if isinstance(value, dict) else value
    for entry in entries:
        for leaf in entry if isinstance(entry, (list, tuple)) else [entry]:
            if leaf is None and isinstance(value, dict):
                continue
            if not _is_metric_leaf(leaf):
                raise TypeError(
                    f"Each metric in `{argument}` must be a string, a callable or a "
                    f"keras.metrics.Metric instance; received {type(leaf).__name__}: {leaf!r}."
                )
            if isinstance(leaf, str) and leaf.lower() not in _ACCURACY + _CROSSENTROPY:
                _resolve_named(leaf, "metrics", keras.metrics.get, keras.metrics, argument)
    return value


def _check_loss_leaf(loss: Any) -> None:
    if loss is None:
        return
    if not (isinstance(loss, (str, keras.losses.Loss)) or callable(loss)):
        raise TypeError(
            "`loss` must be a string, a callable `fn(y_true, y_pred)` or a keras.losses.Loss "
            f"instance (or a list/dict of those, one per output); received "
            f"{type(loss).__name__}: {loss!r}."
        )
    if isinstance(loss, str) and loss.lower() not in _CROSSENTROPY:
        _resolve_named(loss, "loss", keras.losses.get, keras.losses)  # fail fast on typos


def _check_weight(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"`loss_weights{where}` must be a number; received {value!r}.")
    if not np.isfinite(value):
        raise ValueError(f"`loss_weights{where}` must be finite; received {value!r}.")
    return float(value)


@dataclass
class CompileConfig:
    """The checked `compile()` arguments, before shapes are known."""

    optimizer: keras.optimizers.Optimizer
    loss: Any
    loss_weights: Any
    metrics: list
    weighted_metrics: list
    run_eagerly: bool
    steps_per_execution: int | str
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
    if isinstance(loss, dict):
        for leaf in loss.values():
            _check_loss_leaf(leaf)
    elif isinstance(loss, (list, tuple)):
        for leaf in loss:
            _check_loss_leaf(leaf)
    else:
        _check_loss_leaf(loss)
    if loss_weights is not None:
        if isinstance(loss_weights, dict):
            loss_weights = {k: _check_weight(v, f"[{k!r}]") for k, v in loss_weights.items()}
        elif isinstance(loss_weights, (list, tuple)):
            loss_weights = [_check_weight(v, f"[{i}]") for i, v in enumerate(loss_weights)]
        else:
            loss_weights = _check_weight(loss_weights, "")
    metric_list = _check_metric_entries(metrics, "metrics")
    weighted_list = _check_metric_entries(weighted_metrics, "weighted_metrics")
    if not isinstance(run_eagerly, bool):
        raise TypeError(f"`run_eagerly` must be a bool; received {run_eagerly!r}.")
    if steps_per_execution == "auto":
        pass  # tuned from measured step time: engine/tuning.py
    elif isinstance(steps_per_execution, bool) or not isinstance(steps_per_execution, int):
        raise TypeError(
            f'`steps_per_execution` must be a positive int or "auto"; received '
            f"{steps_per_execution!r}."
        )
    elif steps_per_execution < 1:
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
    """One resolved metric, the output it watches and its log key."""

    name: str
    metric: keras.metrics.Metric
    weighted: bool
    output: int


@dataclass
class OutputObjective:
    """One output: its name, loss (None: not trained) and loss weight."""

    name: str
    loss: keras.losses.Loss | None
    weight: float
    log_name: str | None = None  # "{name}_loss" when the model has more than one loss


@dataclass
class CompiledObjectives:
    """Losses and metrics resolved for a model's outputs, created under the strategy scope.

    Outputs are handled flat, in a fixed order: the model's output names for
    functional models, dict keys (model order, OrderedDict order, else
    sorted) for dict outputs, and `output_1`, `output_2`, ... otherwise.
    Targets and sample weights given as dicts are matched by name, lists by
    position; one sample-weight array serves every output.
    """

    output_names: list[str]
    outputs: list[OutputObjective]
    metrics: list[CompiledMetric] = field(default_factory=list)
    is_dict: bool = False

    @property
    def num_outputs(self) -> int:
        return len(self.output_names)

    @property
    def loss(self) -> keras.losses.Loss | None:
        """The single output's loss (single-output models)."""
        return self.outputs[0].loss

    @property
    def metric_names(self) -> list[str]:
        """Log keys after `loss`, in `evaluate()`'s list order (Keras's order)."""
        losses = [o.log_name for o in self.outputs if o.log_name]
        names = [m.name for m in self.metrics]
        if self.num_outputs > 1:
            names = sorted(names)
        return losses + names

    def flatten(self, value: Any, argument: str) -> list:
        """Targets or predictions as a flat list in output order."""
        if self.num_outputs == 1:
            if isinstance(value, dict) and len(value) == 1:
                return list(value.values())
            if isinstance(value, (list, tuple)) and len(value) == 1:
                return [value[0]]
            return [value]
        if isinstance(value, dict):
            missing = [n for n in self.output_names if n not in value]
            if missing:
                raise ValueError(
                    f"`{argument}` is a dict without keys {missing}; the model's outputs are "
                    f"{self.output_names} (received keys {sorted(value)})."
                )
            return [value[n] for n in self.output_names]
        flat = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(flat) != self.num_outputs and not self.is_dict:
            flat = tf.nest.flatten(value)
        if len(flat) != self.num_outputs:
            raise ValueError(
                f"`{argument}` has {len(flat)} entries, but the model has {self.num_outputs} "
                f"outputs {self.output_names}: pass one per output (a list in that order, or a "
                "dict keyed by output name)."
            )
        return flat

    def flatten_weights(self, sample_weight: Any) -> list:
        if sample_weight is None:
            return [None] * self.num_outputs
        if not tf.nest.is_nested(sample_weight):
            return [sample_weight] * self.num_outputs
        if isinstance(sample_weight, dict):
            unknown = sorted(set(sample_weight) - set(self.output_names))
            if unknown:
                raise ValueError(
                    f"`sample_weight` has keys {unknown} that are not outputs of the model "
                    f"{self.output_names}."
                )
            return [sample_weight.get(n) for n in self.output_names]
        return self.flatten(sample_weight, "sample_weight")


def output_layout(y_pred: Any, model_output_names: list[str] | None) -> tuple[list[str], bool]:
    """`(names in flat output order, outputs are a dict)`."""
    if not tf.nest.is_nested(y_pred):
        names = list(model_output_names or [])[:1]
        return names or ["output"], False
    if isinstance(y_pred, dict) and not any(tf.nest.is_nested(v) for v in y_pred.values()):
        keys = list(y_pred)
        if model_output_names and set(model_output_names) == set(keys):
            return list(model_output_names), True
        if isinstance(y_pred, OrderedDict):
            return keys, True
        return sorted(keys), True
    flat = tf.nest.flatten(y_pred)
    if isinstance(y_pred, (list, tuple)) and len(y_pred) == len(flat):
        if model_output_names and len(model_output_names) == len(flat):
            return list(model_output_names), False
    return [f"output_{i + 1}" for i in range(len(flat))], False


def _unknown_keys(value: dict, names: list[str], argument: str) -> None:
    unknown = [k for k in value if k not in names]
    if unknown:
        close = {k: difflib.get_close_matches(str(k), names, n=1) for k in unknown}
        hints = "".join(f" ({k!r}: did you mean {c[0]!r}?)" for k, c in close.items() if c)
        raise ValueError(
            f"`{argument}` has keys {unknown} that are not output names of the model; its "
            f"outputs are {names}.{hints}"
        )


def _per_output(value: Any, names: list[str], argument: str, default: Any) -> list:
    """Spreads a loss/loss_weights argument over the outputs."""
    n = len(names)
    if isinstance(value, dict):
        _unknown_keys(value, names, argument)
        return [value.get(name, default if argument != "loss" else None) for name in names]
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(
                f"`{argument}` has {len(value)} entries, but the model has {n} output(s) "
                f"{names}: a list must map 1:1 to the outputs (or pass a dict keyed by "
                "output name)."
            )
        return list(value)
    return [default if value is None else value] * n


def _metrics_per_output(value: Any, names: list[str], argument: str) -> list[list]:
    n = len(names)
    if not value:
        return [[] for _ in names]

    def as_list(entry):
        if entry is None:
            return []
        return list(entry) if isinstance(entry, (list, tuple)) else [entry]

    if n == 1:
        if isinstance(value, dict):
            _unknown_keys(value, names, argument)
            return [[m for entry in value.values() for m in as_list(entry)]]
        return [[m for entry in value for m in as_list(entry)]]
    if isinstance(value, dict):
        _unknown_keys(value, names, argument)
        return [as_list(value.get(name)) for name in names]
    if len(value) == n:
        return [as_list(entry) for entry in value]
    raise ValueError(
        f"`{argument}` for a model with {n} outputs {names} must be a dict keyed by output "
        f"name, or a list with one entry (a metric or a list of metrics) per output; "
        f"received a list of {len(value)}: {value!r}."
    )


def build_objectives(
    config: CompileConfig,
    y_true_spec: Any,
    y_pred: Any,
    model_output_names: list[str] | None = None,
) -> CompiledObjectives:
    """Resolves losses and metrics against the shapes of the outputs."""
    names, is_dict = output_layout(y_pred, model_output_names)
    objectives = CompiledObjectives(output_names=names, outputs=[], is_dict=is_dict)
    flat_pred = objectives.flatten(y_pred, "model outputs") if len(names) > 1 else [y_pred]
    if y_true_spec is None:
        flat_true = [None] * len(names)
    else:
        flat_true = objectives.flatten(y_true_spec, "y")
        for spec in flat_true:
            if tf.nest.is_nested(spec):
                raise ValueError(
                    f"The targets `y` do not match the model's outputs {names}: received "
                    f"{tf.nest.map_structure(lambda s: s.shape, y_true_spec)}."
                )
    shapes = [
        (tf.TensorShape(None) if t is None else t.shape, p.shape)
        for t, p in zip(flat_true, flat_pred)
    ]

    losses = _per_output(config.loss, names, "loss", None)
    weights = _per_output(config.loss_weights, names, "loss_weights", 1.0)
    resolved = [
        None if loss is None else resolve_loss(loss, *shape) for loss, shape in zip(losses, shapes)
    ]
    several = sum(loss is not None for loss in resolved) > 1
    for name, loss, weight in zip(names, resolved, weights):
        objectives.outputs.append(
            OutputObjective(
                name=name,
                loss=loss,
                weight=float(weight),
                log_name=f"{name}_loss" if several and loss is not None else None,
            )
        )

    multi = len(names) > 1
    taken: dict[str, int] = {"loss": 1}
    taken.update({o.log_name: 1 for o in objectives.outputs if o.log_name})
    for weighted, argument, value in (
        (False, "metrics", config.metrics),
        (True, "weighted_metrics", config.weighted_metrics),
    ):
        for index, entries in enumerate(_metrics_per_output(value, names, argument)):
            prefix = f"{names[index]}_" if multi else ""
            for entry in entries:
                metric = resolve_metric(entry, *shapes[index], argument)
                name = prefix + metric.name
                if name in taken:
                    if weighted:
                        name = f"{prefix}weighted_{metric.name}"
                    if name in taken:
                        count = taken[name]
                        taken[name] += 1
                        name = f"{name}_{count}"
                taken.setdefault(name, 1)
                objectives.metrics.append(CompiledMetric(name, metric, weighted, index))
    return objectives
