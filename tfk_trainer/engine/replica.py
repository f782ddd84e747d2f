"""Per-replica maths of the standard steps: loss terms, loss tracking, metric
updates, gradient application with clipping, and the predict replica.

Everything here runs inside a replica of a compiled step and takes an
explicit `StepContext` (objectives, trackers, optimizer, the layer losses),
never the model: `Model`'s override points (`train_step`, `test_step`,
`compute_loss`, `compute_metrics`) call these functions and keep the
decisions about which override runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from tfk_trainer import compat
from tfk_trainer.data import structure
from tfk_trainer.engine import step as step_lib


class LossTracker(keras.metrics.Mean):
    """The `loss` log: a batch-size-weighted mean across steps and replicas.

    The engine calls `add_shares`: each replica adds `share * global_batch`
    to the total and its own batch size to the count, so the result is the
    mean of the per-batch losses weighted by their real sizes, however a
    batch was split. It is still a `keras.metrics.Mean`, so a custom
    `train_step` may call `update_state(loss)` on it as with Keras.
    """

    def add_shares(self, weighted_total: Any, count: Any) -> None:
        self.total.assign_add(tf.cast(weighted_total, self.total.dtype))
        self.count.assign_add(tf.cast(count, self.count.dtype))


@dataclass
class StepContext:
    """What the standard step maths need, made explicit (not read off the model).

    Args:
        objectives: the compiled losses and metrics (`compile.CompiledObjectives`).
        loss_tracker: the `loss` log's tracker, or None (no loss logged).
        output_trackers: one tracker (or None) per output, for per-output losses.
        optimizer: the optimizer that applies the gradients.
        layer_losses: returns the layers' regularization and `add_loss` losses
            from the last call (read at trace time, after the forward pass).
    """

    objectives: Any
    loss_tracker: LossTracker | None
    output_trackers: list
    optimizer: Any
    layer_losses: Callable[[], list]


def local_batch(x: Any, valid: Any) -> tf.Tensor:
    """This replica's real batch size (padding rows excluded)."""
    if valid is None:
        return tf.cast(step_lib.batch_size_of(x), tf.float32)
    return tf.reduce_sum(tf.cast(valid, tf.float32))


def rows(valid: tf.Tensor) -> tf.Tensor:
    return tf.cast(valid, tf.float32)


def times_rows(weights: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Sample weights with padding rows zeroed."""
    weights = tf.cast(weights, tf.float32)
    return weights * step_lib.expand_to_rank(rows(valid), weights.shape.rank)


def with_padding_weights(sample_weight: Any, valid: Any) -> Any:
    """`sample_weight` that gives padded rows no weight (unchanged without padding)."""
    if valid is None:
        return sample_weight
    return rows(valid) if sample_weight is None else times_rows(sample_weight, valid)


def loss_terms(ctx: StepContext, x, y, y_pred, sample_weight, valid=None):
    """`(total share, global batch, per-output unweighted shares)` for one replica.

    One all-reduce carries every output's element count and the local
    batch size; each output's loss sum is divided by its global count.
    """
    objectives = ctx.objectives
    batch = local_batch(x if x is not None else y_pred, valid)
    outputs = objectives.outputs
    flat_true = objectives.flatten(y, "y") if y is not None else [None] * len(outputs)
    flat_pred = objectives.flatten(y_pred, "model outputs")
    flat_weights = objectives.flatten_weights(sample_weight)
    sums, counts, reducible = [], [], []
    for output, yt, yp, sw in zip(outputs, flat_true, flat_pred, flat_weights):
        if output.loss is None:
            sums.append(None)
            continue
        local_sum, count, _ = step_lib.loss_sum_and_count(output.loss, yt, yp, sw, valid)
        sums.append(tf.cast(local_sum, tf.float32))
        if count is not None:
            reducible.append(len(counts))
            counts.append(tf.cast(count, tf.float32))
        else:
            reducible.append(None)
    if step_lib.num_replicas() == 1:
        reduced = counts + [batch]  # nothing to sum: no stack, no slices
    else:
        reduced = step_lib.all_reduce_sum(tf.stack(counts + [batch]))
    global_batch = reduced[-1]
    terms, shares = [], []
    slots = iter(reducible)
    for output, local_sum in zip(outputs, sums):
        if local_sum is None:
            shares.append(None)
            continue
        slot = next(slots)
        share = local_sum if slot is None else step_lib.divide_no_nan(local_sum, reduced[slot])
        shares.append(share)
        terms.append(share if output.weight == 1 else output.weight * share)
    extra = ctx.layer_losses()
    if extra:
        terms.append(tf.add_n([tf.cast(v, tf.float32) for v in extra]) / step_lib.num_replicas())
    # Summed in order, as before; one unweighted output is its own total (no ops).
    total = tf.constant(0.0, tf.float32) if not terms else terms[0]
    for term in terms[1:]:
        total += term
    return total, global_batch, shares


def custom_loss_share(loss: Any, x: Any, valid: Any, plain_mean: bool):
    """`(this replica's share, global batch)` of a `compute_loss` override's result.

    `plain_mean`: the override did not call the base `compute_loss`, so its
    value is a local mean, weighted here by this replica's part of the batch.
    """
    loss = tf.cast(loss, tf.float32)
    batch = local_batch(x, valid)
    global_batch = step_lib.all_reduce_sum(batch)
    if plain_mean:
        loss = step_lib.divide_no_nan(loss * batch, global_batch)
    return loss, global_batch


def update_compiled_metrics(ctx: StepContext, y, y_pred, sample_weight, valid) -> None:
    """Updates the compiled metrics: `metrics` unweighted, `weighted_metrics` weighted."""
    objectives = ctx.objectives
    flat_true = objectives.flatten(y, "y") if y is not None else None
    flat_pred = objectives.flatten(y_pred, "model outputs")
    flat_weights = objectives.flatten_weights(sample_weight)
    for compiled in objectives.metrics:
        i = compiled.output
        weights = flat_weights[i] if compiled.weighted else None
        if valid is not None:
            weights = rows(valid) if weights is None else times_rows(weights, valid)
        y_true = flat_true[i] if flat_true is not None else None
        if weights is None:
            compiled.metric.update_state(y_true, flat_pred[i])
        else:
            compiled.metric.update_state(y_true, flat_pred[i], sample_weight=weights)


def track_loss(ctx: StepContext, loss, global_batch, x, valid=None, shares=None) -> None:
    """Batch-size-weighted means of the total and of each output's unweighted loss."""
    batch = local_batch(x, valid)
    if ctx.loss_tracker is not None:
        ctx.loss_tracker.add_shares(loss * global_batch, batch)
    for tracker, share in zip(ctx.output_trackers, shares or []):
        if tracker is not None and share is not None:
            tracker.add_shares(share * global_batch, batch)


def scale_loss(optimizer: Any, loss: tf.Tensor) -> tf.Tensor:
    """The loss a LossScaleOptimizer differentiates (the loss itself otherwise)."""
    return optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss


def apply_gradients(optimizer: Any, grads: list, variables: list) -> None:
    """`optimizer.apply`, with the one cross-replica sum before it.

    Keras's TensorFlow optimizer sums the replicas' gradients inside
    `apply`, after the two decisions that must see the global gradients:
    `LossScaleOptimizer`'s finite check (each replica checked its own
    gradients, so a replica whose rows overflowed float16 skipped the step
    while the others applied inf) and clipping (2 replicas clipped what 1
    device does not). With several replicas the gradients are summed here,
    once, and handed to `apply` with Keras's own sum skipped
    (`compat.apply_reduced_gradients`): every replica then sees the same
    gradients, takes the same finite decision, clips the sum as one device
    clips the whole batch, and no second all-reduce runs.
    """
    if step_lib.num_replicas() == 1 or not isinstance(optimizer, keras.optimizers.Optimizer):
        optimizer.apply(grads, variables)
        return
    present = [g for g in grads if g is not None]
    if not present:
        optimizer.apply(grads, variables)  # Keras's own error ("No gradients provided")
        return
    summed = iter(
        tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, present)
    )
    reduced = [None if g is None else next(summed) for g in grads]
    compat.apply_reduced_gradients(optimizer, reduced, variables)


def predict_replica(predict_step: Callable[[Any], Any], data: Any) -> tuple[Any, tf.Tensor]:
    """`(outputs, valid rows)` of one replica's batch: the driver drops padded rows."""
    data, valid = structure.split_padding(data)
    outputs = predict_step(data)
    if valid is None:
        first = tf.nest.flatten(outputs)[0]
        valid = tf.ones(tf.shape(first)[:1], tf.bool)
    return outputs, valid
