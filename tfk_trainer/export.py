"""`model.export(path)`: a SavedModel that serves without tfk_trainer installed.

The SavedModel holds the network's variables and one traced function, the
inference call (`training=False`), under the `serving_default` signature
with the input shapes and dtypes the model was built with (batch dimension
free). `tf.saved_model.load(path).signatures["serving_default"](...)` gives
the same predictions as `model.predict`. Written to a staging directory
beside `path` and moved into place, by the chief only, through `tf.io.gfile`
(so `path` may be `gs://...`; other workers write a scratch copy beside it
and delete it); the directories and files get the permissions the umask
gives, as any file TensorFlow writes.
"""

from __future__ import annotations

import uuid
from typing import Any

import tensorflow as tf

from tfk_trainer import distribute, paths


def _input_signature(spec: Any) -> list:
    def relax(s: tf.TensorSpec, name: str) -> tf.TensorSpec:
        return tf.TensorSpec([None] + s.shape.as_list()[1:], s.dtype, name=name)

    if isinstance(spec, dict):
        return [{k: relax(v, k) for k, v in spec.items()}]
    if isinstance(spec, (list, tuple)):
        return [type(spec)(relax(s, f"input_{i}") for i, s in enumerate(spec))]
    return [relax(spec, "inputs")]


def _named_outputs(outputs: Any) -> dict:
    """Serving signatures return a flat dict of named tensors."""
    if isinstance(outputs, dict) and not any(tf.nest.is_nested(v) for v in outputs.values()):
        return dict(outputs)
    flat = tf.nest.flatten(outputs)
    if len(flat) == 1:
        return {"outputs": flat[0]}
    return {f"output_{i}": t for i, t in enumerate(flat)}


def move_tree(src: str, dst: str) -> None:
    """Moves directory `src` to `dst` (which must not exist) through tf.io.gfile.

    Local paths: one atomic rename. Other file systems (gs://, ram://) have no
    directory rename that moves the contents on every backend, so the files are
    copied one by one and `src` is removed afterwards (GCS's own rename is a copy
    too).
    """
    if "://" not in src and "://" not in dst:
        tf.io.gfile.rename(src, dst)
        return
    for directory, _, files in tf.io.gfile.walk(src):
        relative = directory[len(src) :].lstrip("/")
        target = f"{dst.rstrip('/')}/{relative}" if relative else dst
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(f"{directory.rstrip('/')}/{name}", f"{target.rstrip('/')}/{name}")
    tf.io.gfile.rmtree(src)


def export(model: Any, path: str, spec: Any) -> str:
    """Writes a SavedModel of `model`'s inference function to `path`.

    `spec`: the model's input spec (the model knows it once built; None
    before, which raises a ValueError saying how to build it).
    """
    if spec is None:
        raise ValueError(
            "export() needs to know the model's inputs: call fit, evaluate or predict (or "
            "predict_on_batch on a sample) first."
        )
    if tf.io.gfile.exists(path) and (not tf.io.gfile.isdir(path) or tf.io.gfile.listdir(path)):
        raise FileExistsError(f"export(): {path!r} exists and is not empty; choose a new path.")
    root = tf.Module()
    root.variables_to_save = list(
        v.value if hasattr(v, "value") and isinstance(v.value, tf.Variable) else v
        for v in model.variables
    )
    network = model

    @tf.function(input_signature=_input_signature(spec))
    def serve(inputs):
        return _named_outputs(network(inputs, training=False))

    root.serve = serve
    # Scratch and staging directories are siblings of `path`, made by SavedModel
    # itself through tf.io.gfile (any file system, gs:// included), so they and
    # their files get the permissions the umask gives (a tempfile.mkdtemp
    # directory would be 0700 and unreadable to a serving process running as
    # another user).
    parent = paths.parent(path)
    strategy = model.distribute_strategy
    tf.io.gfile.makedirs(parent)
    if not distribute.is_chief(model.distribute_strategy):
        # Other workers join the save (variables may be read collectively) and
        # throw their copy away.
        scratch = paths.join(parent, f".tfk_export_worker_{uuid.uuid4().hex[:12]}")
        try:
            with model.distribute_strategy.scope():
                tf.saved_model.save(
                    root,
                    scratch,
                    signatures={"serving_default": serve},
                    options=distribute.saved_model_save_options(strategy, scratch),
                )
        finally:
            if tf.io.gfile.exists(scratch):
                tf.io.gfile.rmtree(scratch)
        return path
    tmp = paths.join(parent, f".tfk_export_{uuid.uuid4().hex[:12]}")
    try:
        tf.saved_model.save(
            root,
            tmp,
            signatures={"serving_default": serve},
            options=distribute.saved_model_save_options(strategy, tmp),
        )
        if tf.io.gfile.exists(path):
            tf.io.gfile.rmtree(path)  # an empty directory (checked above)
        move_tree(tmp, path)
    except BaseException:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.rmtree(tmp)
        raise
    return path
