"""Writing the binary's SavedModel to `model_dir/export`, replacing an older one atomically."""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf

import tfk_trainer as tfk
from tfk_trainer import paths as paths_lib
from tfk_trainer.export import move_tree
from tfk_trainer.train.paths import Paths


def export_model(model: tfk.Model, paths: Paths, strategy: Any) -> str:
    """Writes the SavedModel to model_dir/export, replacing an older one.

    Staged next to it and swapped in with `tf.io.gfile` renames (any file system), so
    a reader sees the old export or the new one, and the directories get the
    permissions the umask gives (a serving process may run as another user).
    """
    final = paths.export
    staging = paths_lib.join(paths.model_dir, f".export-staging-{os.getpid()}")
    model.export(staging, verbose=False)  # the binary logs the final path itself
    if not tfk.distribute.is_chief(strategy):
        return final
    old = None
    if tf.io.gfile.exists(final):
        old = paths_lib.join(paths.model_dir, f".export-old-{os.getpid()}")
        move_tree(final, old)
    move_tree(staging, final)
    if old:
        tf.io.gfile.rmtree(old)
    return final
