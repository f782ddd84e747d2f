"""How compiled losses and metrics map onto a model's outputs.

The flat output order (`output_layout`), the per-output spreading of
`loss`, `loss_weights` and `metrics` (lists by position, dicts by name), and
the records `build_objectives` fills: `CompiledObjectives`,
`OutputObjective`, `CompiledMetric`.
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import keras
import tensorflow as tf


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
    # Indexes of the outputs that have a loss: targets may be given for those
    # only (one array, a shorter list, or a dict without the others), as in Keras.
    loss_outputs: list[int] | None = None

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
            if missing and self.loss_outputs is not None:
                with_loss = {self.output_names[i] for i in self.loss_outputs}
                if not with_loss & set(missing):
                    return [value.get(n) for n in self.output_names]
            if missing:
                raise ValueError(
                    f"`{argument}` is a dict without keys {missing}; the model's outputs are "
                    f"{self.output_names} (received keys {sorted(value)})."
                )
            return [value[n] for n in self.output_names]
        flat = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(flat) != self.num_outputs and not self.is_dict:
            flat = tf.nest.flatten(value)
        if (
            len(flat) != self.num_outputs
            and self.loss_outputs is not None
            and len(flat) == len(self.loss_outputs)
        ):
            placed: list = [None] * self.num_outputs
            for index, item in zip(self.loss_outputs, flat):
                placed[index] = item
            return placed
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
