"""Turns `compile()` arguments into loss and metric objects.

Keras 3 supplies the building blocks (`keras.losses`, `keras.metrics`,
`keras.optimizers`); this module resolves the user's strings, functions and
instances into them, checks every argument up front with errors that name
it, and fixes the names under which results are logged. Metrics are built
lazily, once the shapes of targets and outputs are known, because
`"accuracy"`/`"acc"`/`"crossentropy"`/`"ce"` depend on them.

The work is split by job: `compile_args.py` (argument checks,
`CompileConfig`), `compile_resolve.py` (optimizer and metric names),
`compile_layout.py` (outputs, per-output spreading, the compiled records);
this module resolves losses (with `FunctionLoss`, which must stay here: the
engine tells its own step code by module name) and builds the objectives,
and re-exports the names the rest of the package uses.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfk_trainer.compile_args import CompileConfig, check_compile_args
from tfk_trainer.compile_layout import (
    CompiledMetric,
    CompiledObjectives,
    OutputObjective,
    _metrics_per_output,
    _per_output,
    output_layout,
)
from tfk_trainer.compile_resolve import (
    _CROSSENTROPY,
    OPTIMIZERS,
    _kind_from_shapes,
    _resolve_named,
    resolve_metric,
    resolve_optimizer,
)
from tfk_trainer.engine import step as step_lib

__all__ = [
    "OPTIMIZERS",
    "CompileConfig",
    "CompiledMetric",
    "CompiledObjectives",
    "FunctionLoss",
    "OutputObjective",
    "build_objectives",
    "check_compile_args",
    "output_layout",
    "resolve_loss",
    "resolve_metric",
    "resolve_optimizer",
]


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


def build_objectives(
    config: CompileConfig,
    y_true_spec: Any,
    y_pred: Any,
    model_output_names: list[str] | None = None,
) -> CompiledObjectives:
    """Resolves losses and metrics against the shapes of the outputs."""
    names, is_dict = output_layout(y_pred, model_output_names)
    objectives = CompiledObjectives(output_names=names, outputs=[], is_dict=is_dict)
    losses = _per_output(config.loss, names, "loss", None)
    if len(names) > 1:
        objectives.loss_outputs = [i for i, loss in enumerate(losses) if loss is not None]
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
