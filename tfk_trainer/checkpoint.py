"""Checkpoints: what is saved, where, and how a write can never corrupt the last one.

A checkpoint holds the network, the optimizer (slots, iteration count) and,
for backups, the metric states and the training position. It is a TF
object-based checkpoint (`tf.train.Checkpoint`), so it restores across
strategies: saved on 4 replicas, restored on 1, and back. Only tensors and
TensorFlow's own index are written: no Python objects are serialised.

Writes are atomic: TensorFlow writes the data and index files under
temporary names and renames them when complete, and `CheckpointManager`
updates its `checkpoint` pointer file (atomically) only after that. A crash
mid-write leaves the previous checkpoint in place and the pointer on it.

Only the chief worker writes to the real directory; the other workers of a
multi-worker cluster must join every save (variables are read
collectively), and write to a private temporary directory instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import tensorflow as tf

from tfk_trainer import distribute, paths


def checkpoint_items(model: Any, *, include_optimizer: bool = True) -> dict[str, Any]:
    """The trackable objects of a model's checkpoint."""
    items: dict[str, Any] = {"model": model.network if model.network is not None else model}
    # Random-number state (Keras SeedGenerators behind Dropout and friends) is a
    # layer variable that Keras's object graph does not save; list it explicitly
    # so a resumed run draws the same dropout masks as an uninterrupted one.
    rng = [
        v for v in model.non_trainable_variables if "seed_generator" in getattr(v, "path", v.name)
    ]
    if rng:
        items["rng_state"] = rng
    if include_optimizer and model.optimizer is not None:
        items["optimizer"] = model.optimizer
    return items


def write_directory(directory: str, strategy: tf.distribute.Strategy | None = None) -> str:
    """`directory` on the chief; a private temporary directory on other workers."""
    if distribute.is_chief(strategy):
        return directory
    return tempfile.mkdtemp(prefix="tfk_worker_ckpt_")


def cleanup_worker_directory(written: str, directory: str) -> None:
    if written != directory:
        shutil.rmtree(written, ignore_errors=True)


def prepare_for_restore(model: Any) -> None:
    """Builds the optimizer's slots so a restore fills them (Keras variables are not
    created lazily from a checkpoint)."""
    if model.optimizer is not None and not model.optimizer.built:
        variables = model.trainable_variables
        if variables:
            with model.distribute_strategy.scope():
                model.optimizer.build(variables)


def save(model: Any, path: str, *, include_optimizer: bool = True) -> str:
    """Saves a checkpoint to the prefix `path` (chief only writes there); returns the path."""
    target_dir = os.path.dirname(os.path.abspath(path)) or "."
    written_dir = write_directory(target_dir, model.distribute_strategy)
    prefix = os.path.join(written_dir, os.path.basename(path))
    paths.make_dirs(
        written_dir, "path", path=path, owner="save_checkpoint"
    )  # named, before anything is written
    checkpoint = tf.train.Checkpoint(**checkpoint_items(model, include_optimizer=include_optimizer))
    saved = checkpoint.write(prefix)
    cleanup_worker_directory(written_dir, target_dir)
    return saved


def _newest_prefix(directory: str) -> str | None:
    """The most recently written checkpoint prefix in `directory` (`save` and
    ModelCheckpoint write no `checkpoint` pointer file)."""
    prefixes = [
        os.path.join(directory, name[: -len(".index")])
        for name in os.listdir(directory)
        if name.endswith(".index")
    ]
    if not prefixes:
        return None
    return max(prefixes, key=lambda p: os.path.getmtime(p + ".index"))


def load(model: Any, path: str, *, include_optimizer: bool = True) -> None:
    """Restores a checkpoint written by `save` (or a directory holding one).

    Raises a `ValueError` naming what did not match when the checkpoint was
    written by a different model (shapes or missing variables).
    """
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path) or _newest_prefix(path)
        if latest is None:
            raise FileNotFoundError(f"No checkpoint found in the directory {path!r}.")
        path = latest
    if not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(
            f"No checkpoint at {path!r} (expected {path}.index). Pass the prefix returned by "
            "save_checkpoint() or the directory holding the checkpoint."
        )
    prepare_for_restore(model)
    checkpoint = tf.train.Checkpoint(**checkpoint_items(model, include_optimizer=include_optimizer))
    read(checkpoint, path, subject=f"The checkpoint {path!r}")


def read(
    checkpoint: tf.train.Checkpoint,
    path: str,
    *,
    subject: str,
    mismatch: str = "does not match this model",
    advice: str = "",
) -> None:
    """Restores `path` into `checkpoint`, every object it saved matched, or fails
    with a `ValueError` and restores nothing that could be half-read silently.

    One rule for every restore (`load_checkpoint`, `BackupAndRestore`): a
    checkpoint of another model (other shapes, missing variables) and one that
    cannot be read (corrupt, truncated) are `ValueError`s that begin with
    `subject` and end with `advice`; the files on disk are left as they are.

    Args:
        checkpoint: The `tf.train.Checkpoint` of the objects to restore.
        path: The checkpoint prefix.
        subject: What the message calls the checkpoint, e.g. "The checkpoint 'x'".
        mismatch: What the message says of a checkpoint of another model.
        advice: A sentence (with its leading ". ") telling what to do.
    """
    try:
        status = checkpoint.read(path)
        status.assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.InvalidArgumentError) as e:
        raise ValueError(f"{subject} {mismatch}: {str(e).splitlines()[0][:500]}{advice}") from e
    except tf.errors.OpError as e:
        raise ValueError(
            f"{subject} cannot be read (corrupt or truncated): "
            f"{str(e).splitlines()[0][:300]}{advice}"
        ) from e
    status.expect_partial()
