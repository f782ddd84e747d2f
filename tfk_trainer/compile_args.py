"""`compile()`'s argument checks: every argument refused up front, by name.

`check_compile_args` returns a `CompileConfig` before any shape is known;
unknown loss and metric names fail here, not at the first step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from tfk_trainer.compile_resolve import _ACCURACY, _CROSSENTROPY, _resolve_named, resolve_optimizer


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
