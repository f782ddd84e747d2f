"""Variable discovery: the Keras layers, variables and metrics a model holds.

A plain `tf.Module` does not see Keras variables, and a Keras layer does
not see `tf.Module`s; the walk here finds both, in a stable order, so
`Model.variables` is the same list on every call and every worker.
"""

from __future__ import annotations

import collections.abc
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfk_trainer.engine.run_state import EngineState

# Held by a model but never part of its network: the engine's state (loss
# trackers, compiled metrics and functions) and the optimizer (its slots are
# not the model's variables).
_SKIPPED_TYPES = (EngineState, keras.optimizers.Optimizer)


def walk(root: Any) -> tuple[list, list, list]:
    """`(Keras layers, bare variables, Keras metrics)` reachable from `root`.

    Metrics held as attributes (a custom `train_step`'s trackers) are
    returned too: they join `model.metrics`, are reset each epoch and are
    logged by name.
    """
    layers: list = []
    variables: list = []
    metrics: list = []
    seen: set[int] = set()

    def visit(obj: Any) -> None:
        if obj is None or isinstance(obj, (str, bytes, int, float, bool, np.ndarray)):
            return
        if id(obj) in seen or isinstance(obj, _SKIPPED_TYPES):
            return
        seen.add(id(obj))
        if isinstance(obj, keras.metrics.Metric):
            metrics.append(obj)
        elif isinstance(obj, keras.layers.Layer):
            layers.append(obj)
        elif isinstance(obj, (keras.Variable, tf.Variable)):
            variables.append(obj)
        elif isinstance(obj, tf.Module):
            for key in sorted(vars(obj)):
                visit(vars(obj)[key])
        elif isinstance(obj, collections.abc.Mapping):
            for key in sorted(obj, key=str):
                visit(obj[key])
        elif isinstance(obj, (list, tuple)) or (
            isinstance(obj, collections.abc.Sequence) and not isinstance(obj, (str, bytes))
        ):
            for item in obj:
                visit(item)

    visit(root)
    return layers, variables, metrics


def collect(root: Any) -> tuple[list, list, list, list]:
    """`(trainable, non-trainable, layers, metrics)` of `root`, each variable once."""
    layers, bare, metrics = walk(root)
    trainable: list = []
    non_trainable: list = []
    seen: set[int] = set()

    def add(v: Any, is_trainable: bool) -> None:
        if id(v) in seen:
            return
        seen.add(id(v))
        (trainable if is_trainable else non_trainable).append(v)

    for layer in layers:
        for v in layer.trainable_variables:
            add(v, True)
        for v in layer.non_trainable_variables:
            add(v, False)
    for v in bare:
        add(v, bool(getattr(v, "trainable", True)))
    return trainable, non_trainable, layers, metrics
