"""Saving and export of `tfk_trainer.Model`: `.keras`, `.weights.h5`, SavedModel.

`Model.save`, `save_weights`, `load_weights` and `export` (model_surface.py)
keep Keras's signatures and docstrings and delegate here. Where Keras's
meaning is about the network (its architecture, its `.keras` file), the
wrapped Keras network does the work, so a file written here is the file
Keras writes and `keras.models.load_model` reads it. A network that is not
a Keras model writes its variables in `model.variables` order to our own
`.weights.h5` layout, built in memory and written with `tf.io.gfile`, so
every path may be remote (`gs://`, `ram://`).

The model's own module (it reads the model's engine state).
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfk_trainer.engine import build

# `export()` formats: Keras 3 knows these; tfk writes the first.
_EXPORT_FORMATS = ("tf_saved_model",)
_KERAS_ONLY_EXPORT_FORMATS = ("onnx", "openvino", "litert", "torch")
_TFK_WEIGHTS_FORMAT = "tfk_trainer.variables.v1"  # our .weights.h5 for non-Keras networks

def check_path(filepath: Any, argument: str = "filepath") -> str:
    if hasattr(filepath, "__fspath__"):
        filepath = filepath.__fspath__()
    if not isinstance(filepath, str):
        raise TypeError(
            f"`{argument}` must be a str or path-like (a local path or a gs:// URL); received "
            f"{type(filepath).__name__}: {filepath!r}."
        )
    return filepath


def _check_overwrite(path: str, overwrite: Any, method: str) -> None:
    """Keras asks on a terminal before overwriting; a library call cannot, so it refuses."""
    if not isinstance(overwrite, bool):
        raise TypeError(f"{method}: `overwrite` must be a bool; received {overwrite!r}.")
    if not overwrite and tf.io.gfile.exists(path):
        raise FileExistsError(
            f"{method}: {path!r} exists and `overwrite=False`; pass `overwrite=True` to "
            "replace it, or choose another path. Nothing was written."
        )



def export(model: Any, filepath: Any, format: str, verbose: bool | None, input_signature: Any, kwargs: dict) -> str:
    """`Model.export` (see its docstring)."""
    if format not in _EXPORT_FORMATS:
        hint = (
            f" {format!r} is a Keras format that tfk does not write; the wrapped Keras "
            f'network can: `model.network.export(filepath, format="{format}")`.'
            if format in _KERAS_ONLY_EXPORT_FORMATS
            else ""
        )
        raise ValueError(
            f"Unrecognized format={format!r}. Supported formats are: "
            f"{list(_EXPORT_FORMATS)}.{hint}"
        )
    if kwargs:
        raise TypeError(
            f"export() got unexpected keyword arguments {sorted(kwargs)}; accepted: "
            "filepath, format, verbose, input_signature."
        )
    path = check_path(filepath)
    if input_signature is not None and not model._state.network_built:
        spec = input_signature
        if isinstance(spec, (list, tuple)) and len(spec) == 1:
            spec = spec[0]
        if not all(isinstance(s, tf.TensorSpec) for s in tf.nest.flatten(spec)):
            raise TypeError(
                "`input_signature` must be a tf.TensorSpec, or a list/dict of them (one "
                f"per input); received {input_signature!r}."
            )
        build.build_network(model, spec)
    from tfk_trainer import export as export_lib

    written = export_lib.export(model, path, model._state.input_spec)
    if verbose is None or verbose:
        print(f"Saved artifact at '{path}'. Serving endpoint: signature 'serving_default'.")
    return written
def save(model: Any, filepath: Any, overwrite: bool, zipped: bool | None, kwargs: dict) -> None:
    """`Model.save` (see its docstring)."""
    path = check_path(filepath)
    if zipped in (None, True) and not path.endswith((".keras", ".h5", ".hdf5")):
        raise ValueError(
            "Invalid filepath extension for saving. Please add either a `.keras` extension "
            "for the native Keras format (recommended) or a `.h5` extension. Use "
            "`model.export(filepath)` if you want to export a SavedModel for use with "
            f"TFLite/TFServing/etc. Use `model.save_checkpoint(path)` for tfk's training "
            f"checkpoint. Received: filepath={path}."
        )
    network = keras_network(model, "save")
    _check_overwrite(path, overwrite, "save()")
    with keras_training_state(model, network, compile_config=True):
        keras.saving.save_model(network, path, overwrite=True, zipped=zipped, **kwargs)
def save_weights(model: Any, filepath: Any, overwrite: bool, max_shard_size: Any) -> None:
    """`Model.save_weights` (see its docstring)."""
    path = check_path(filepath)
    network = model.network
    if isinstance(network, keras.Model):
        if max_shard_size is None and not path.endswith(".weights.h5"):
            raise ValueError(
                f"The filename must end in `.weights.h5`. Received: filepath={path}"
            )
        _check_overwrite(path, overwrite, "save_weights()")
        with keras_training_state(model, network, compile_config=False):
            network.save_weights(path, overwrite=True, max_shard_size=max_shard_size)
        return
    if not path.endswith(".weights.h5"):
        raise ValueError(f"The filename must end in `.weights.h5`. Received: filepath={path}")
    if max_shard_size is not None:
        raise ValueError(
            "`max_shard_size` is supported for wrapped Keras models only; this model's "
            "weights are written to one `.weights.h5` file."
        )
    _check_overwrite(path, overwrite, "save_weights()")
    variables = model.variables
    if not variables:
        raise ValueError(
            "You are saving a model that has not yet been built (it has no variables). "
            "Build it first by calling it on a batch of data or by fitting it."
        )
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.attrs["format"] = _TFK_WEIGHTS_FORMAT
        group = f.create_group("variables")
        for i, v in enumerate(variables):
            data = group.create_dataset(f"{i:06d}", data=np.asarray(v.numpy()))
            data.attrs["name"] = str(getattr(v, "path", None) or v.name)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent and not tf.io.gfile.exists(parent):
        tf.io.gfile.makedirs(parent)
    with tf.io.gfile.GFile(path, "wb") as out:
        out.write(buffer.getvalue())
def load_weights(model: Any, filepath: Any, skip_mismatch: bool, kwargs: dict) -> None:
    """`Model.load_weights` (see its docstring)."""
    path = check_path(filepath)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"load_weights(): no file at {path!r}. Pass the path given to save_weights() "
            "(a `.weights.h5` file) or to save() (a `.keras` file)."
        )
    network = model.network
    if isinstance(network, keras.Model):
        with keras_training_state(model, network, compile_config=False, build_optimizer=True):
            network.load_weights(path, skip_mismatch=skip_mismatch, **kwargs)
        return
    if kwargs:
        raise ValueError(f"Invalid keyword arguments: {kwargs}")
    if not path.endswith(".weights.h5"):
        raise ValueError(
            "This model's network is not a Keras model, so it loads only `.weights.h5` files "
            f"written by its save_weights(); received filepath={path}."
        )
    variables = model.variables
    if not variables:
        raise ValueError(
            "load_weights() needs the model's variables to exist: build it first (call it "
            "on a batch of data)."
        )
    import h5py

    with tf.io.gfile.GFile(path, "rb") as f:
        buffer = io.BytesIO(f.read())
    with h5py.File(buffer, "r") as f:
        if f.attrs.get("format") != _TFK_WEIGHTS_FORMAT or "variables" not in f:
            raise ValueError(
                f"load_weights(): {path!r} is not a weights file written by tfk_trainer's "
                "save_weights() for a network that is not a Keras model (a Keras weights file "
                "loads into a wrapped Keras model: tfk.Model(keras_model))."
            )
        group = f["variables"]
        stored = [group[k] for k in sorted(group)]
        if len(stored) != len(variables):
            raise ValueError(
                f"load_weights(): {path!r} holds {len(stored)} variables, but this model has "
                f"{len(variables)}; it was saved from a different model."
            )
        for v, data in zip(variables, stored):
            if tuple(v.shape) != tuple(data.shape):
                message = (
                    f"load_weights(): variable {data.attrs.get('name')!r} in {path!r} has "
                    f"shape {tuple(data.shape)}, but this model's variable "
                    f"{getattr(v, 'path', None) or v.name!r} has {tuple(v.shape)}."
                )
                if skip_mismatch:
                    warnings.warn(message + " Skipped (skip_mismatch=True).", stacklevel=3)
                    continue
                raise ValueError(message + " Pass skip_mismatch=True to skip it.")
            v.assign(data[()])

def keras_network(model: Any, method: str) -> keras.Model:
    network = model.network
    if isinstance(network, keras.Model):
        return network
    if network is None:
        what = f"{type(model).__name__} is a subclassed tfk_trainer.Model (no Keras network)"
    elif isinstance(network, keras.layers.Layer):
        what = (
            f"the network is a Keras layer ({type(network).__name__}), not a Keras model; "
            "wrap it as tfk.Model(keras.Sequential([layer])) to get a `.keras` file"
        )
    else:
        what = f"the network is a {type(network).__name__}, not a Keras model"
    raise TypeError(
        f"{method}() writes a Keras `.keras` file, which holds a Keras model, but {what}. "
        "Use model.save_checkpoint(path) for the training state (restore with "
        "load_checkpoint), model.save_weights('x.weights.h5') for the weights, or "
        "model.export(path) for a SavedModel."
    )


@contextlib.contextmanager
def keras_training_state(
    model: Any, network: keras.Model, *, compile_config: bool, build_optimizer: bool = False
) -> Iterator[None]:
    """Lends the network the model's optimizer (and compile arguments) while Keras
    saves or loads it, as if Keras had compiled it: Keras's files then hold
    the optimizer's state, and `load_model` compiles the network.

    Only public attributes are set (`optimizer`, `get_compile_config`), and
    the network's own values come back afterwards. The optimizer is lent
    only when it was built for exactly the network's trainable variables,
    in the same order (Keras matches optimizer slots by position).
    """
    lent: dict[str, Any] = {}
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and model.compiled:
        same_variables = [id(v) for v in model.trainable_variables] == [
            id(v) for v in network.trainable_variables
        ]
        if not same_variables:
            warnings.warn(
                "The optimizer's state is not included: the model trains variables beyond "
                "the wrapped network's. Use save_checkpoint() to keep the optimizer.",
                stacklevel=4,
            )
        else:
            if build_optimizer and not optimizer.built and network.built:
                with model.distribute_strategy.scope():
                    optimizer.build(model.trainable_variables)
            lent["optimizer"] = optimizer
            if compile_config:
                config = model.get_compile_config()
                try:
                    json.dumps(keras.saving.serialize_keras_object(config))
                    lent["get_compile_config"] = lambda: config
                except Exception as e:  # noqa: BLE001 - reported, the save goes on
                    warnings.warn(
                        f"The compile() arguments are not saved: Keras cannot serialize "
                        f"them ({type(e).__name__}: {e}). load_model() returns an "
                        "uncompiled network.",
                        stacklevel=4,
                    )
    missing = object()
    previous = {name: vars(network).get(name, missing) for name in lent}
    try:
        for name, value in lent.items():
            setattr(network, name, value)
        yield
    finally:
        for name, value in previous.items():
            if value is missing:
                with contextlib.suppress(AttributeError):
                    delattr(network, name)
            else:
                setattr(network, name, value)
