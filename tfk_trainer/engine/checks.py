"""Up-front checks of the data against the built model, once per build or fit.

Without them, data that cannot fit the model fails inside the traced step,
with a message that starts with an autograph trace and names neither `y`
nor `validation_data`, or (labels out of range under XLA or on a GPU) does
not fail at all and trains to a NaN loss. Each check runs once, before the
first step, and costs nothing per step:

* `inputs_compatible`: do the validation inputs have the training inputs'
  structure and known non-batch dims? (Model.fit then calls the model on a
  dummy batch only when they differ, so a model that accepts several
  shapes is never rejected.)
* `check_targets_fit_losses`: traces each output's loss on the specs of `y`
  and of the output (no data, no execution), so a `y` the loss cannot take
  is reported naming `y`, the output and the loss.
* `check_sparse_labels`: for in-memory arrays and a sparse cross-entropy,
  one min and max per label array: a label outside `[0, classes)` is
  reported naming `y`, the value and the valid range.
"""

from __future__ import annotations

import re
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfk_trainer import compat
from tfk_trainer.engine import execution


def describe_spec(spec: Any) -> str:
    """`(None, 5)` for one tensor; the structure of shapes for nested inputs;
    ragged and sparse leaves say so (`ragged (None, None)`)."""

    def shape(s: Any) -> Any:
        dims = tuple(s.shape) if s.shape.rank is not None else "unknown rank"
        if isinstance(s, tf.RaggedTensorSpec):
            return f"ragged {dims}"
        if isinstance(s, tf.SparseTensorSpec):
            return f"sparse {dims}"
        return dims

    return str(tf.nest.map_structure(shape, spec))


def inputs_compatible(given: Any, expected: Any) -> bool:
    """Same structure (and types, dict keys), same ranks, and equal non-batch dims
    wherever both are known. False only means "call the model to find out"."""
    try:
        tf.nest.assert_same_structure(given, expected)  # dict keys too
    except (ValueError, TypeError):
        return False
    for a, b in zip(tf.nest.flatten(given), tf.nest.flatten(expected)):
        if a.shape.rank is None or b.shape.rank is None:
            continue
        if a.shape.rank != b.shape.rank:
            return False
        for da, db in zip(a.shape[1:], b.shape[1:]):
            if da is not None and db is not None and da != db:
                return False
    return True


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_BOILERPLATE = ("Exception encountered when calling", "Arguments received by", "\u2022")


def strip_ansi(text: str) -> str:
    """Text without terminal colour codes (Keras puts them in its layer errors)."""
    return _ANSI.sub("", text)


# A printed array of numbers ("[[0. 0. ...]]"), possibly over many lines: Keras puts
# the whole input tensor into its shape errors, hundreds of lines for one image batch.
_ARRAY_LITERAL = re.compile(r"\[[\[\]\s\d.,eE+\-]{40,}\]")  # 40+: never a shape list
# Keras's "Invalid input shape for input ... Expected shape (None, 28, 28), but input
# has incompatible shape (1, 784)".
_EXPECTED_SHAPE = re.compile(r"Expected shape (\([^)]*\)), but input has incompatible shape")


def scrub_values(text: str) -> str:
    """The text with colour codes removed and printed arrays of numbers replaced by
    `[...]`, so an error about a shape never prints the data itself."""
    return _ARRAY_LITERAL.sub("[...]", strip_ansi(text))


def short_reason(error: BaseException, limit: int = 400) -> str:
    """`Type: the line that says what failed`: Keras wraps a layer's error in
    "Exception encountered when calling ..." and a list of the arguments."""
    lines = [line.strip() for line in scrub_values(str(error)).splitlines()]
    lines = [line for line in lines if line]
    useful = [line for line in lines if not line.startswith(_BOILERPLATE)]
    text = (useful or lines or [""])[0].rstrip(".")
    if len(text) > limit:
        text = text[:limit] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def check_int(value: Any, name: str, minimum: int = 0, owner: str | None = None) -> int:
    """`value` as an int, or a TypeError/ValueError naming the argument, what was
    given and what is accepted: the one rule for integer arguments of `fit` and
    of the callbacks (bools are refused, NumPy integers accepted).

    Args:
        value: The argument's value.
        name: The argument's name, e.g. "epochs".
        minimum: The smallest accepted value.
        owner: What takes the argument (e.g. "EarlyStopping"), named first.
    """
    where = f"{owner}: " if owner else ""
    message = f"{where}`{name}` must be an int >= {minimum}; received {name}={value!r}."
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(message)
    if value < minimum:
        raise ValueError(message)
    return int(value)


def fully_known(spec: Any) -> bool:
    """Every leaf has a known rank and known non-batch dims."""
    return all(
        s.shape.rank is not None and all(d is not None for d in s.shape[1:])
        for s in tf.nest.flatten(spec)
    )


def _loss_name(loss: Any) -> str:
    return str(getattr(loss, "name", None) or type(loss).__name__)


def check_targets_fit_losses(objectives: Any, y_spec: Any, output_structure: Any) -> None:
    """Raises a ValueError naming `y` when an output's loss cannot take its targets.

    The loss is traced (never run) on the target spec and the output spec, as
    the train step would trace it, so only an error the step would also hit
    is reported, and value checks inside a loss (asserts) are not run. Errors
    other than ValueError/InvalidArgumentError are left to the step.
    """
    flat_true = objectives.flatten(y_spec, "y")
    flat_pred = objectives.flatten(output_structure, "model outputs")
    for output, y_true, y_pred in zip(objectives.outputs, flat_true, flat_pred):
        if output.loss is None or y_true is None or tf.nest.is_nested(y_true):
            continue
        loss = output.loss
        dtype = getattr(loss, "dtype", None) or "float32"

        def call(yt, yp, loss=loss, dtype=dtype):
            return loss.call(tf.cast(yt, dtype), tf.cast(yp, dtype))

        # Traced as the step traces it: with autograph only for a loss the step
        # converts (a loss with Python control flow on tensors needs it).
        autograph = execution.loss_needs_autograph(loss)
        try:
            tf.function(call, autograph=autograph).get_concrete_function(y_true, y_pred)
        except (ValueError, tf.errors.InvalidArgumentError) as e:
            where = f" for the output {output.name!r}" if objectives.num_outputs > 1 else ""
            raise ValueError(
                f"`y`{where} has shape {describe_spec(y_true)}, but the model's output "
                f"{output.name!r} has shape {describe_spec(y_pred)}, and its loss "
                f"{_loss_name(loss)!r} cannot take them: {short_reason(e)}.{_shape_hint(loss)}"
            ) from e


def _shape_hint(loss: Any) -> str:
    if _sparse_kwargs(loss) is not None:
        return (
            " A sparse cross-entropy takes integer class indices, of shape (batch,) or "
            "(batch, 1); for one-hot targets use categorical_crossentropy."
        )
    fn = getattr(loss, "fn", None)
    if fn is keras.losses.categorical_crossentropy:
        return (
            " A categorical cross-entropy takes one-hot targets shaped like the output; for "
            "integer class indices use sparse_categorical_crossentropy."
        )
    return ""


def _sparse_kwargs(obj: Any) -> dict | None:
    """The keyword arguments of a sparse categorical cross-entropy loss or metric, or
    None when `obj` is not one (a Keras wrapper, or tfk's `FunctionLoss`, whose public
    `fn` takes no keyword arguments)."""
    wrapped = compat.wrapped_fn_and_kwargs(obj)
    fn, kwargs = wrapped if wrapped is not None else (getattr(obj, "fn", None), {})
    return kwargs if fn is keras.losses.sparse_categorical_crossentropy else None


def _min_max(labels: Any, ignore: Any) -> tuple[float, float] | None:
    if isinstance(labels, tf.Tensor):
        labels = labels.numpy()
    labels = np.asarray(labels)
    if labels.size == 0 or labels.dtype.kind not in "iuf":
        return None
    if ignore is not None:
        labels = labels[labels != ignore]
        if labels.size == 0:
            return None
    return labels.min(), labels.max()


def check_sparse_labels(objectives: Any, y: Any, sample_output: Any, argument: str = "y") -> None:
    """Raises a ValueError when an in-memory label array holds a class index outside
    `[0, classes)` for a sparse cross-entropy loss or metric of its output.

    Vectorised: one min and one max per label array (the offending index is
    searched only on failure). `ignore_class` labels are allowed.
    """
    if y is None:
        return
    flat_true = objectives.flatten(y, argument)
    flat_pred = objectives.flatten(sample_output, "model outputs")
    for index, (output, labels, pred) in enumerate(zip(objectives.outputs, flat_true, flat_pred)):
        users = [output.loss] + [m.metric for m in objectives.metrics if m.output == index]
        kwargs = next((k for k in map(_sparse_kwargs, users) if k is not None), None)
        if kwargs is None or labels is None or tf.nest.is_nested(labels):
            continue
        axis = kwargs.get("axis", -1)
        shape = getattr(pred, "shape", None)
        if shape is None or shape.rank is None or not shape.rank:
            continue
        classes = shape[axis]
        if classes is None or classes < 2:
            continue
        ignore = kwargs.get("ignore_class")
        extremes = _min_max(labels, ignore)
        if extremes is None:
            continue
        low, high = extremes
        if low >= 0 and high < classes:
            continue
        bad = low if low < 0 else high
        array = np.asarray(labels.numpy() if isinstance(labels, tf.Tensor) else labels)
        position = int(np.flatnonzero(array.reshape(-1) == bad)[0])
        sample = position // max(1, int(np.prod(array.shape[1:])))
        value = bad.item() if hasattr(bad, "item") else bad
        several = objectives.num_outputs > 1
        target = f"`{argument}`" + (f" for the output {output.name!r}" if several else "")
        raise ValueError(
            f"{target} holds the label {value!r} (sample {sample}), outside the valid range "
            f"[0, {classes}) for the {classes} classes of the model's output {output.name!r}: "
            "a sparse categorical cross-entropy takes class indices in [0, classes)"
            + (f" (or the ignore_class {ignore})" if ignore is not None else "")
            + "."
        )


def model_call_failure(error: BaseException, x_spec: Any, argument: str = "x") -> str:
    """One short line for "calling the model on a batch shaped like `x` failed".

    Keras's own message holds the whole input tensor and the list of the call's
    arguments (a hundred lines for a batch of images); the user needs the
    argument, the shape the model expects and the shape it was given. The full
    Keras error stays available as the `__cause__` of the error raised with
    this message.
    """
    given = describe_spec(x_spec)
    match = _EXPECTED_SHAPE.search(strip_ansi(str(error)))
    if match:
        return (
            f"`{argument}` does not fit the model: the model expects inputs of shape "
            f"{match.group(1)}, but `{argument}` has shape {given}."
        )
    return (
        f"Calling the model on `{argument}` (a batch shaped like the data: {given}) "
        f"failed: {short_reason(error, limit=300)}."
    )
