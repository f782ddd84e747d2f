"""What `train` hands to `model.fit`: the data arguments and the callbacks.

Backup first (it restores before the others look at the step), then the
checkpoint saver, a resume notice, TensorBoard and optional early stopping.
"""

from __future__ import annotations

from typing import Any

from absl import logging

import tfk_trainer as tfk
from tfk_trainer.train import data as data_lib
from tfk_trainer.train.building import _batched, _verbose
from tfk_trainer.train.paths import Paths


def _fit_arguments(config: Any, splits: data_lib.Splits) -> tuple[dict[str, Any], bool]:
    """`model.fit` keyword arguments for the data (no callbacks), and whether there is
    validation data."""
    kwargs: dict[str, Any] = {
        "epochs": config.train.epochs,
        "verbose": _verbose(config),
        "steps_per_epoch": config.train.steps_per_epoch or None,
    }
    if data_lib.is_arrays(splits.train):
        kwargs.update(
            x=splits.train[0],
            y=splits.train[1],
            batch_size=config.train.batch_size,
            shuffle=config.train.shuffle,
            validation_batch_size=config.eval.batch_size,
        )
        if splits.validation is None:
            kwargs["validation_split"] = config.data.validation_split
    else:
        seed = config.runtime.seed if config.train.shuffle else None
        kwargs["x"] = _batched(splits.train, config.train.batch_size, seed)
        if splits.validation is None and config.data.validation_split:
            logging.warning(
                "data.validation_split applies to array datasets only; dataset %r returned "
                "a tf.data.Dataset without validation data, so nothing is held out.",
                config.data.name,
            )
    if splits.validation is not None:
        validation = splits.validation
        if not data_lib.is_arrays(validation):
            validation = _batched(validation, config.eval.batch_size)
        kwargs["validation_data"] = validation
    has_validation = "validation_data" in kwargs or bool(kwargs.get("validation_split"))
    return kwargs, has_validation


def _train_callbacks(
    config: Any, paths: Paths, model: tfk.Model, saver: Any, has_validation: bool
) -> list[Any]:
    """Backup (first: it restores before the others look at the step), checkpoints,
    a resume notice, TensorBoard and optional early stopping."""
    callbacks: list[Any] = [
        # Kept when fit ends (the binary deletes it once TRAINING_DONE is written): a
        # kill between the end of fit and the FIT_DONE marker resumes from it.
        tfk.callbacks.BackupAndRestore(
            paths.backup,
            save_freq=config.train.backup_every_steps or "epoch",
            delete_checkpoint=False,
        ),
        saver,
        tfk.callbacks.LambdaCallback(on_train_begin=lambda logs: _announce_resume(model)),
        tfk.callbacks.TensorBoard(
            paths.logs,
            update_freq=config.train.tensorboard_every_steps or "epoch",
            epoch_axis="step",  # one x axis with batch scalars and the eval/ run
        ),
    ]
    if config.train.early_stopping_patience:
        callbacks.append(
            tfk.callbacks.EarlyStopping(
                monitor="val_loss" if has_validation else "loss",
                patience=config.train.early_stopping_patience,
            )
        )
    return callbacks


def _announce_resume(model: tfk.Model) -> None:
    step = int(model.optimizer.iterations.numpy())
    if step:
        print(f"Resumed from the backup at step {step}.", flush=True)
