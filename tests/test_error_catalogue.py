"""The bad-input catalogue: malformed calls and the clear errors they must give.

Two tables, one parametrized test each (docs/errors.md lists them all):

* `CASES`: in-process calls to compile, fit, evaluate, predict, the
  `*_on_batch` methods, the data sources, the callbacks and the checkpoint
  functions. Each names the exception type (or the documented warning) and a
  regex the message must match; the regex names the offending argument.
  A message that *starts* with a TensorFlow trace ("in user code:",
  "Graph execution error") fails the case, unless a TensorFlow error is the
  documented behaviour. Saved-state cases also check, after the failure,
  that the checkpoint written before it is byte-for-byte unchanged and still
  loads into a fresh model.
* `BINARY_CASES`: bad flags and configs of the training binary
  (`tools/train.py`), each run as a subprocess that must exit with status 2
  before anything runs (no training line, nothing a run writes in model_dir),
  with a message naming the flag or key and no Python traceback. They run on a background pool while the in-process
  cases run, so the whole file stays short on 2 cores.

A few behaviours are documented rather than errors: NaN/inf in the data
(trains to a NaN loss reported as it is; `TerminateOnNaN` stops) and labels
out of range in a tf.data.Dataset under XLA (NaN loss: a dataset cannot be
scanned up front, unlike arrays); they have their own tests at the end.

Every case has a timeout (the "thread" method, which also ends a hang
inside TensorFlow's C++ code), so a hang fails instead of stalling the run.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from binary_helpers import ENV, REPO, TRAIN, assert_failed_before_running, write_config

import tfk_trainer as tfk
from tfk_trainer import callbacks as cbs

N, F, C = 20, 4, 3  # samples, features, classes
_rng = np.random.default_rng(0)
X = _rng.normal(size=(N, F)).astype("float32")
Y = _rng.integers(0, C, N)
X_NAN = X.copy()
X_NAN[7] = np.nan  # in batch 1 of 4 when batch_size=5 and shuffle=False
Y_OUT_OF_RANGE = Y.copy()
Y_OUT_OF_RANGE[3] = 7  # sparse label 7 for 3 classes

CASE_TIMEOUT = 60  # seconds, per in-process case
BINARY_WORKERS = 2
FILE_SIZE_LIMIT = 16 * 1024  # bytes: the "full disk" for checkpoint writes


# -- models and data -------------------------------------------------------------


def _net(width: int = 0) -> keras.Model:
    layers: list[Any] = [keras.Input((F,))]
    if width:
        layers.append(keras.layers.Dense(width))
    layers.append(keras.layers.Dense(C))
    return keras.Sequential(layers)


def _model(compile: bool = True, width: int = 0, **compile_kwargs) -> tfk.Model:
    model = tfk.Model(_net(width))
    if compile:
        kwargs = {"optimizer": "sgd", "loss": "sparse_categorical_crossentropy"}
        kwargs.update(compile_kwargs)
        model.compile(**kwargs)
    return model


def _fit(*args, model: tfk.Model | None = None, **kwargs):
    kwargs.setdefault("verbose", 0)
    return (model or _model()).fit(*args, **kwargs)


def _fit_with(callback: Any, model: tfk.Model | None = None, **kwargs):
    """Two epochs of 4 batches with one callback."""
    kwargs = {"batch_size": 5, "epochs": 2, "verbose": 0, **kwargs}
    return (model or _model()).fit(X, Y, callbacks=[callback], **kwargs)


def _dataset(*parts: Any, batch: int | None = 5) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices(parts if len(parts) > 1 else parts[0])
    return dataset if batch is None else dataset.batch(batch)


def _image_model() -> tfk.Model:
    """Takes (28, 28) images, like the README's Fashion-MNIST model."""
    net = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(C)])
    model = tfk.Model(net)
    model.compile("sgd", "sparse_categorical_crossentropy")
    return model


def _two_inputs() -> tfk.Model:
    inputs = {"a": keras.Input((2,), name="a"), "b": keras.Input((2,), name="b")}
    outputs = keras.layers.Dense(C)(keras.layers.Concatenate()([inputs["a"], inputs["b"]]))
    model = tfk.Model(keras.Model(inputs, outputs))
    model.compile("sgd", "sparse_categorical_crossentropy")
    return model


def _two_outputs(**compile_kwargs) -> tfk.Model:
    """Outputs "a" (3 classes) and "b" (a regression)."""
    inputs = keras.Input((F,))
    outputs = {
        "a": keras.layers.Dense(C, name="a")(inputs),
        "b": keras.layers.Dense(1, name="b")(inputs),
    }
    model = tfk.Model(keras.Model(inputs, outputs))
    kwargs = {"optimizer": "sgd", "loss": {"a": "sparse_categorical_crossentropy", "b": "mse"}}
    kwargs.update(compile_kwargs)
    model.compile(**kwargs)
    return model


def _raising_batches():
    yield X[:5], Y[:5]
    raise KeyError("corrupt record 17")


def _inconsistent_batches():
    yield X[:5], Y[:5]
    yield (X[5:10],)


class _Batches(tfk.data.PyDataset):
    """4 batches of 5 samples; `length` is what `__len__` claims."""

    def __init__(self, length: Any = 4, fail_at: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.length = length
        self.fail_at = fail_at

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        if index == self.fail_at:
            raise RuntimeError(f"cannot decode image {index}.png")
        if not 0 <= index < 4:
            raise IndexError(index)
        return X[index * 5 : (index + 1) * 5], Y[index * 5 : (index + 1) * 5]


def _under_a_file(tmp: Path, *parts: str) -> str:
    """A path below a regular file: no one can create it, root included."""
    blocker = tmp / "afile"
    blocker.write_text("a regular file, not a directory\n")
    return str(blocker.joinpath("sub", *parts))


def _string_schedule(epoch):
    return "fast"


# -- saved state -------------------------------------------------------------------


def _digest(prefix: Path) -> dict[str, str]:
    """sha256 of a checkpoint's own files (`prefix.index`, `prefix.data-*`)."""
    files = sorted(prefix.parent.glob(prefix.name + ".*"))
    assert files, f"no checkpoint files for {prefix}"
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _dir_digest(directory: Path) -> dict[str, str]:
    return {
        str(f.relative_to(directory)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(directory.rglob("*"))
        if f.is_file()
    }


def _save_good(tmp: Path, width: int = 0) -> tfk.Model:
    """Trains a step and saves `tmp/good/ckpt`, recording its weights and bytes."""
    model = _model(width=width)
    model.train_on_batch(X, Y)
    model.save_checkpoint(str(tmp / "good" / "ckpt"))
    np.savez(tmp / "good_weights.npz", *model.get_weights())
    (tmp / "good_digest.json").write_text(json.dumps(_digest(tmp / "good" / "ckpt")))
    return model


def _good_checkpoint_intact(width: int = 0) -> Callable[[Path], None]:
    def check(tmp: Path) -> None:
        prefix = tmp / "good" / "ckpt"
        assert _digest(prefix) == json.loads((tmp / "good_digest.json").read_text())
        restored = _model(width=width)
        restored.load_checkpoint(str(prefix))
        saved = np.load(tmp / "good_weights.npz")
        expected = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        got = restored.get_weights()
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g, e)

    return check


def _backup_all_damaged(tmp: Path) -> None:
    """Two backups, both `.index` files lost: an error naming the directory, not a restart."""
    backup = tmp / "backup"
    _fit_with(cbs.BackupAndRestore(str(backup), delete_checkpoint=False), epochs=2)
    for index in backup.glob("ckpt-*.index"):
        index.unlink()
    (tmp / "backup_digest.json").write_text(json.dumps(_dir_digest(backup)))
    _fit_with(cbs.BackupAndRestore(str(backup)))


def _backup_files_kept(tmp: Path) -> None:
    assert _dir_digest(tmp / "backup") == json.loads((tmp / "backup_digest.json").read_text())


def _load_flipped_data(tmp: Path) -> None:
    _save_good(tmp)
    model = _model()
    model.train_on_batch(X, Y)
    model.save_checkpoint(str(tmp / "bad" / "ckpt"))
    data = next((tmp / "bad").glob("ckpt.data-*"))
    data.write_bytes(bytes(b ^ 0xFF for b in data.read_bytes()))
    _model().load_checkpoint(str(tmp / "bad" / "ckpt"))


def _load_other_model(tmp: Path) -> None:
    _save_good(tmp)
    _model(width=7).load_checkpoint(str(tmp / "good" / "ckpt"))


def _load_corrupt(tmp: Path) -> None:
    _save_good(tmp)
    (tmp / "good" / "broken.index").write_bytes(b"not an sstable")
    _model().load_checkpoint(str(tmp / "good" / "broken"))


def _save_unwritable(tmp: Path) -> None:
    _save_good(tmp).save_checkpoint(_under_a_file(tmp, "ckpt"))


def _checkpoint_filepath_bad_key(tmp: Path) -> None:
    model = _save_good(tmp)
    callback = cbs.ModelCheckpoint(str(tmp / "ck-{val_los:.2f}"), monitor="val_loss")
    _fit_with(callback, model=model, validation_data=(X, Y))


def _backup_of_another_model(tmp: Path) -> None:
    backup = tmp / "backup"
    _fit_with(cbs.BackupAndRestore(str(backup), delete_checkpoint=False), epochs=1, batch_size=32)
    (tmp / "backup_digest.json").write_text(json.dumps(_dir_digest(backup)))
    _fit_with(cbs.BackupAndRestore(str(backup)), model=_model(width=7), batch_size=32)


def _backup_intact(tmp: Path) -> None:
    backup = tmp / "backup"
    assert _dir_digest(backup) == json.loads((tmp / "backup_digest.json").read_text())
    model = _model()
    resumed_at = []
    restore = cbs.BackupAndRestore(str(backup))
    probe = cbs.LambdaCallback(
        on_train_begin=lambda logs: resumed_at.append(int(model.optimizer.iterations.numpy()))
    )
    model.fit(X, Y, batch_size=32, epochs=2, verbose=0, callbacks=[restore, probe])
    assert resumed_at == [1]  # the backup of epoch 1 (one step) was restored


_SPAWN_LOCK = threading.Lock()  # no binary is started while the file-size limit is on


@contextlib.contextmanager
def _file_size_limit(nbytes: int):
    """A "full disk": writes past `nbytes` fail with EFBIG (SIGXFSZ ignored)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if hard != resource.RLIM_INFINITY and hard < nbytes:
        pytest.skip(f"RLIMIT_FSIZE hard limit {hard} is below {nbytes}")
    with _SPAWN_LOCK:
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, previous)


def _disk_full_during_checkpoint(tmp: Path) -> None:
    """ModelCheckpoint overwrites `good/ckpt` while the disk is full."""
    model = _save_good(tmp, width=1024)  # ~33 KB of variables: over the limit
    with _file_size_limit(FILE_SIZE_LIMIT):
        _fit_with(cbs.ModelCheckpoint(str(tmp / "good" / "ckpt")), model=model, epochs=1)


class _Module(tf.Module):
    """A tf.Module network (no Keras model to write a `.keras` file of)."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(tf.zeros([F, C]))

    def __call__(self, x):
        return tf.matmul(x, self.w)


def _save_twice_without_overwrite(tmp: Path) -> None:
    model = _model()
    model.save(str(tmp / "m.keras"))
    model.save(str(tmp / "m.keras"), overwrite=False)


# -- the in-process table ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """A malformed call and what it must raise (or warn)."""

    id: str
    call: Callable[[Path], Any]  # receives a fresh tmp_path
    error: type[BaseException] | tuple[type[BaseException], ...]  # or a Warning class: warns
    match: str  # re.search on the message; names the offending argument
    after: Callable[[Path], None] | None = None  # saved-state check after the failure
    timeout: float = CASE_TIMEOUT


# One case per line, as a table (the formatter is off here).
# fmt: off
CASES: list[Case] = [
    # -- constructor and compile ------------------------------------------------------
    Case("model-network-not-callable", lambda t: tfk.Model(42), TypeError, r"`network` must be callable.*received int"),
    Case("model-static-remainder-unknown", lambda t: tfk.Model(_net(), static_remainder="pad"), ValueError, r"`static_remainder` must be \"drop\".*received 'pad'"),
    Case("compile-optimizer-int", lambda t: _model(optimizer=42), TypeError, r"`optimizer` must be a string.*received int: 42"),
    Case("compile-optimizer-class-not-instance", lambda t: _model(optimizer=keras.optimizers.SGD), TypeError, r"`optimizer` must be .*received type"),
    Case("compile-optimizer-typo", lambda t: _model(optimizer="adamm"), ValueError, r"(?s)Unknown optimizer 'adamm' for `optimizer`.*Did you mean 'adam'"),
    Case("compile-loss-int", lambda t: _model(loss=42), TypeError, r"`loss` must be a string.*received int: 42"),
    Case("compile-loss-typo", lambda t: _model(loss="mean_squared_eror"), ValueError, r"Unknown loss 'mean_squared_eror' in `loss`.*'mean_squared_error'"),
    Case("compile-metrics-single-string", lambda t: _model(metrics="accuracy"), TypeError, r"`metrics` must be a list.*Wrap it in a list"),
    Case("compile-metrics-typo", lambda t: _model(metrics=["acuracy"]), ValueError, r"Unknown metric 'acuracy' in `metrics`.*'accuracy'"),
    Case("compile-weighted-metrics-int", lambda t: _model(weighted_metrics=[42]), TypeError, r"metric in `weighted_metrics` must be .*received int: 42"),
    Case("compile-loss-weights-string", lambda t: _model(loss_weights="heavy"), TypeError, r"`loss_weights` must be a number; received 'heavy'"),
    Case("compile-loss-weights-nan", lambda t: _model(loss_weights=float("nan")), ValueError, r"`loss_weights` must be finite; received nan"),
    Case("compile-steps-per-execution-zero", lambda t: _model(steps_per_execution=0), ValueError, r"`steps_per_execution` must be a positive int; received 0"),
    Case("compile-steps-per-execution-string", lambda t: _model(steps_per_execution="2"), TypeError, r"`steps_per_execution` must be a positive int or \"auto\"; received '2'"),
    Case("compile-jit-compile-unknown", lambda t: _model(jit_compile="yes"), ValueError, r"`jit_compile` must be \"auto\", True or False; received jit_compile='yes'"),
    Case("compile-run-eagerly-string", lambda t: _model(run_eagerly="yes"), TypeError, r"`run_eagerly` must be a bool; received 'yes'"),
    Case("compile-loss-list-too-long", lambda t: _fit(X, Y, model=_model(loss=["mse", "mae"])), ValueError, r"`loss` has 2 entries, but the model has 1 output"),
    Case("compile-loss-dict-unknown-output", lambda t: _fit(X, {"a": Y, "b": Y}, model=_two_outputs(loss={"a": "mse", "bb": "mse"})), ValueError, r"`loss` has keys \['bb'\] that are not output names.*did you mean 'b'"),
    Case("compile-loss-weights-dict-unknown-output", lambda t: _fit(X, {"a": Y, "b": Y}, model=_two_outputs(loss_weights={"a": 1.0, "c": 2.0})), ValueError, r"`loss_weights` has keys \['c'\] that are not output names"),
    # -- fit: arguments ----------------------------------------------------------------
    Case("fit-before-compile", lambda t: _fit(X, Y, model=_model(compile=False)), RuntimeError, r"call `compile\(\)` before `fit\(\)`"),
    Case("fit-unknown-keyword", lambda t: _fit(X, Y, bogus_arg=1), TypeError, r"bogus_arg"),
    Case("fit-epochs-negative", lambda t: _fit(X, Y, epochs=-1), ValueError, r"`epochs` must be an int >= 0; received epochs=-1"),
    Case("fit-epochs-float", lambda t: _fit(X, Y, epochs=1.5), TypeError, r"`epochs` must be an int >= 0; received epochs=1\.5"),
    Case("fit-initial-epoch-negative", lambda t: _fit(X, Y, initial_epoch=-1), ValueError, r"`initial_epoch` must be an int >= 0"),
    Case("fit-batch-size-zero", lambda t: _fit(X, Y, batch_size=0), ValueError, r"`batch_size` must be a positive int or None; received 0"),
    Case("fit-batch-size-string", lambda t: _fit(X, Y, batch_size="32"), TypeError, r"`batch_size` must be a positive int or None; received '32'"),
    Case("fit-steps-per-epoch-zero", lambda t: _fit(X, Y, steps_per_epoch=0), ValueError, r"`steps_per_epoch` must be a positive int, -1 or None; received 0"),
    Case("fit-shuffle-unknown", lambda t: _fit(X, Y, shuffle="yes"), ValueError, r"`shuffle` must be True, False or \"batch\"; received shuffle='yes'"),
    Case("fit-verbose-unknown", lambda t: _fit(X, Y, verbose="loud"), ValueError, r"`verbose` must be \"auto\", 0, 1 or 2; received verbose='loud'"),
    Case("fit-validation-split-out-of-range", lambda t: _fit(X, Y, validation_split=1.5), ValueError, r"`validation_split` must be in \[0, 1\); received 1\.5"),
    Case("fit-validation-split-string", lambda t: _fit(X, Y, validation_split="0.2"), TypeError, r"`validation_split` must be a float"),
    Case("fit-validation-data-string", lambda t: _fit(X, Y, validation_data="val.csv"), ValueError, r"`validation_data` must be a tuple .*received str"),
    Case("fit-validation-data-length-mismatch", lambda t: _fit(X, Y, validation_data=(X, Y[:5])), ValueError, r"same number of samples.*x: 20, y: 5"),
    Case("fit-validation-data-wrong-feature-count", lambda t: _fit(X, Y, validation_data=(np.zeros((N, 5), "float32"), Y)), ValueError, r"inputs of `validation_data` do not fit the model: received inputs of shape \(None, 5\), but the training data `x` has \(None, 4\)"),
    Case("fit-validation-freq-zero", lambda t: _fit(X, Y, validation_data=(X, Y), validation_freq=0), ValueError, r"`validation_freq` must be >= 1; received 0"),
    Case("fit-validation-steps-zero", lambda t: _fit(X, Y, validation_data=(X, Y), validation_steps=0), ValueError, r"`validation_steps` must be a positive int"),
    Case("fit-class-weight-list", lambda t: _fit(X, Y, class_weight=[1.0, 2.0]), TypeError, r"`class_weight` must be a dict.*received list"),
    Case("fit-class-weight-nan", lambda t: _fit(X, Y, class_weight={0: float("nan")}), ValueError, r"`class_weight\[0\]` must be a finite, non-negative number; received nan"),
    Case("fit-class-weight-negative-key", lambda t: _fit(X, Y, class_weight={-1: 1.0}), ValueError, r"`class_weight` keys must be non-negative int.*-1"),
    Case("fit-callbacks-not-a-list", lambda t: _fit(X, Y, callbacks=object()), TypeError, r"`callbacks`"),
    Case("fit-callbacks-holds-non-callback", lambda t: _fit(X, Y, callbacks=[object()]), TypeError, r"`callbacks` must be a list of Callback instances.*received object"),
    # -- fit: array data ---------------------------------------------------------------
    Case("fit-x-none", lambda t: _fit(None, Y), ValueError, r"`x` is required; received None"),
    Case("fit-x-string", lambda t: _fit("train.csv", Y), TypeError, r"Unrecognized data type for `x`: str"),
    Case("fit-x-object-dtype", lambda t: _fit(np.array([[1.0, "a", 2.0, None]] * N, dtype=object), Y), TypeError, r"`x` holds Python objects \(dtype=object"),
    Case("fit-x-scalar", lambda t: _fit(np.float32(3.0), Y), ValueError, r"`x` is a scalar"),
    Case("fit-x-empty", lambda t: _fit(X[:0], Y[:0]), ValueError, r"The input data is empty \(0 samples in x, y\)"),
    Case("fit-x-y-length-mismatch", lambda t: _fit(X, Y[:8]), ValueError, r"same number of samples.*x: 20, y: 8"),
    Case("fit-x-wrong-feature-count", lambda t: _fit(np.zeros((N, 5), "float32"), Y), ValueError, r"\ACalling the model on `x` \(a batch shaped like the data: \(None, 5\)\) failed: [^\n]*expected axis -1 of input shape to have value 4[^\n]*\Z"),
    Case("fit-x-flat-images-into-image-model", lambda t: _fit(np.zeros((N, 784), "float32"), Y, model=_image_model()), ValueError, r"\A`x` does not fit the model: the model expects inputs of shape \(None, 28, 28\), but `x` has shape \(None, 784\)\.\Z"),
    Case("fit-x-dict-unknown-key", lambda t: _fit({"a": X[:, :2], "c": X[:, 2:]}, Y, model=_two_inputs()), ValueError, r"`x`.*'c'"),
    Case("fit-y-missing", lambda t: _fit(X), ValueError, r"compiled with a loss, but the data has no targets `y`"),
    Case("fit-y-string", lambda t: _fit(X, "labels"), TypeError, r"`y` must be an array or a list/dict of arrays"),
    Case("fit-y-wrong-shape-for-loss", lambda t: _fit(X, np.zeros((N, 5))), ValueError, r"`y` has shape \(None, 5\), but the model's output '[^']+' has shape \(None, 3\), and its loss 'sparse_categorical_crossentropy' cannot take them"),
    Case("fit-y-dict-unknown-output", lambda t: _fit(X, {"a": Y, "c": Y}, model=_two_outputs()), ValueError, r"`y` is a dict without keys \['b'\].*received keys \['a', 'c'\]"),
    Case("fit-sample-weight-length-mismatch", lambda t: _fit(X, Y, sample_weight=np.ones(7, "float32")), ValueError, r"same number of samples.*sample_weight: 7"),
    Case("fit-sample-weight-without-y", lambda t: _fit(X, sample_weight=np.ones(N)), ValueError, r"`sample_weight` was given without `y`"),
    Case("fit-sample-weight-dict-unknown-output", lambda t: _fit(X, {"a": Y, "b": Y}, sample_weight={"a": np.ones(N), "c": np.ones(N)}, model=_two_outputs()), ValueError, r"`sample_weight` has keys \['c'\] that are not outputs"),
    Case("fit-nan-in-x-terminate-on-nan-raises", lambda t: _fit(X_NAN, Y, batch_size=5, shuffle=False, epochs=3, callbacks=[cbs.TerminateOnNaN(raise_error=True)]), RuntimeError, r"NaN or Inf loss encountered at batch 1"),
    Case("fit-sparse-label-out-of-range", lambda t: _fit(X, Y_OUT_OF_RANGE, model=_model(jit_compile=False)), ValueError, r"`y` holds the label 7 \(sample 3\), outside the valid range \[0, 3\)"),
    Case("fit-sparse-label-out-of-range-xla", lambda t: _fit(X, Y_OUT_OF_RANGE, model=_model(jit_compile=True)), ValueError, r"`y` holds the label 7 \(sample 3\), outside the valid range \[0, 3\)"),
    Case("fit-sparse-label-negative-in-validation-data", lambda t: _fit(X, Y, validation_data=(X, -Y - 1)), ValueError, r"`validation_data` holds the label -\d \(sample \d+\), outside the valid range \[0, 3\)"),
    # -- fit: datasets, generators, PyDatasets ----------------------------------------
    Case("data-dataset-with-y", lambda t: _fit(_dataset(X, Y), Y), ValueError, r"`y` must not be given when `x` is a tf\.data\.Dataset"),
    Case("data-dataset-of-4-tuples", lambda t: _fit(_dataset(X, Y, Y, Y)), ValueError, r"tf\.data\.Dataset passed as `x` must yield .*tuples of length 4"),
    Case("data-dataset-of-dicts", lambda t: _fit(_dataset({"features": X, "label": Y})), ValueError, r"`x`"),
    Case("data-dataset-unbatched", lambda t: _fit(_dataset(X, Y, batch=None)), ValueError, r"`x`"),
    Case("data-dataset-empty", lambda t: _fit(_dataset(X, Y).take(0)), ValueError, r"`x`.*(empty|no batches)"),
    Case("data-dataset-infinite-without-steps", lambda t: _fit(_dataset(X, Y).repeat()), ValueError, r"infinite.*`steps_per_epoch` is None"),
    Case("data-dataset-runs-out-before-steps", lambda t: _fit(_dataset(X, Y), steps_per_epoch=10), UserWarning, r"ran out of data in epoch 0 after 4 of 10 steps; each epoch ends there"),
    Case("data-generator-raises", lambda t: _fit(_raising_batches()), KeyError, r"corrupt record 17"),
    Case("data-generator-empty", lambda t: _fit(iter([])), ValueError, r"generator passed as `x` yielded no batches"),
    Case("data-generator-inconsistent-structure", lambda t: _fit(_inconsistent_batches()), ValueError, r"`x \(generator\)` yielded batches of inconsistent structure"),
    Case("data-generator-one-shot-for-2-epochs", lambda t: _fit(_raising_batches(), epochs=2), ValueError, r"`x` is a one-shot generator.*2 epochs"),
    Case("data-pydataset-len-too-long", lambda t: _fit(_Batches(length=6), shuffle=False), IndexError, r"PyDataset passed as `x` raised IndexError for batch 4; its `__len__`/`num_batches` \(6\) is larger"),
    Case("data-pydataset-len-zero", lambda t: _fit(_Batches(length=0)), ValueError, r"PyDataset passed as `x` is empty \(0 batches\)"),
    Case("data-pydataset-len-negative", lambda t: _fit(_Batches(length=-1)), ValueError, r"PyDataset passed as `x`.*-1"),
    Case("data-pydataset-len-string", lambda t: _fit(_Batches(length="4")), (TypeError, ValueError), r"PyDataset passed as `x`.*'4'"),
    Case("data-pydataset-getitem-raises", lambda t: _fit(_Batches(fail_at=2, workers=2)), RuntimeError, r"cannot decode image 2\.png"),
    Case("data-pydataset-workers-zero", lambda t: _Batches(workers=0), ValueError, r"`workers` must be a positive int; received 0"),
    Case("data-pydataset-with-sample-weight", lambda t: _fit(_Batches(), sample_weight=np.ones(N)), ValueError, r"`sample_weight` must not be given when `x` is a PyDataset"),
    # -- evaluate, predict -------------------------------------------------------------
    Case("evaluate-before-compile", lambda t: _model(compile=False).evaluate(X, Y, verbose=0), RuntimeError, r"call `compile\(\)` before `evaluate\(\)`"),
    Case("evaluate-unknown-keyword", lambda t: _model().evaluate(X, Y, bogus_arg=1, verbose=0), TypeError, r"evaluate\(\) got unexpected keyword arguments \['bogus_arg'\]"),
    Case("evaluate-x-y-length-mismatch", lambda t: _model().evaluate(X, Y[:3], verbose=0), ValueError, r"same number of samples.*x: 20, y: 3"),
    Case("evaluate-steps-zero", lambda t: _model().evaluate(X, Y, steps=0, verbose=0), ValueError, r"`steps` must be a positive int, -1 or None; received 0"),
    Case("evaluate-dataset-empty", lambda t: _model().evaluate(_dataset(X, Y).take(0), verbose=0), ValueError, r"`x`.*(empty|no batches|no data)"),
    Case("evaluate-generator-raises", lambda t: _model().evaluate(_raising_batches(), verbose=0), KeyError, r"corrupt record 17"),
    Case("predict-x-none", lambda t: _model().predict(None, verbose=0), ValueError, r"`x` is required; received None"),
    Case("predict-batch-size-zero", lambda t: _model().predict(X, batch_size=0, verbose=0), ValueError, r"`batch_size` must be a positive int or None; received 0"),
    Case("predict-steps-negative", lambda t: _model().predict(X, steps=-2, verbose=0), ValueError, r"`steps` must be a positive int, -1 or None; received -2"),
    Case("predict-x-empty", lambda t: _model().predict(X[:0], verbose=0), ValueError, r"The input data is empty \(0 samples in x\)"),
    Case("predict-dataset-empty", lambda t: _model().predict(_dataset(X).take(0), verbose=0), ValueError, r"`x`.*(empty|no batches|no data)"),
    # -- train_on_batch, test_on_batch, predict_on_batch -----------------------------
    Case("batch-train-before-compile", lambda t: _model(compile=False).train_on_batch(X, Y), RuntimeError, r"call `compile\(\)` before `train_on_batch\(\)`"),
    Case("batch-train-on-a-dataset", lambda t: _model().train_on_batch(_dataset(X, Y)), TypeError, r"`x` for train_on_batch\(\) must be array-like"),
    Case("batch-train-length-mismatch", lambda t: _model().train_on_batch(X, Y[:4]), ValueError, r"same number of samples.*x: 20, y: 4"),
    Case("batch-train-class-weight-list", lambda t: _model().train_on_batch(X, Y, class_weight=[1, 2]), TypeError, r"`class_weight` must be a dict"),
    Case("batch-train-empty", lambda t: _model().train_on_batch(X[:0], Y[:0]), ValueError, r"The input data is empty"),
    Case("batch-test-before-compile", lambda t: _model(compile=False).test_on_batch(X, Y), RuntimeError, r"call `compile\(\)` before `test_on_batch\(\)`"),
    Case("batch-test-sample-weight-length", lambda t: _model().test_on_batch(X, Y, sample_weight=np.ones(3)), ValueError, r"sample_weight: 3"),
    Case("batch-predict-string", lambda t: _model().predict_on_batch("x.npy"), TypeError, r"`x` for predict_on_batch\(\) must be array-like.*received str"),
    # -- callbacks: constructor arguments and use in fit ----------------------------
    Case("callback-earlystopping-patience-negative", lambda t: cbs.EarlyStopping(patience=-1), ValueError, r"EarlyStopping: `patience` must be an int >= 0; received patience=-1"),
    Case("callback-earlystopping-mode-unknown", lambda t: cbs.EarlyStopping(mode="bogus"), ValueError, r"EarlyStopping: `mode` must be one of .*received mode='bogus'"),
    Case("callback-earlystopping-min-delta-string", lambda t: cbs.EarlyStopping(min_delta="0.1"), TypeError, r"EarlyStopping: `min_delta` must be a number"),
    Case("callback-earlystopping-direction-unknown", lambda t: _fit_with(cbs.EarlyStopping(monitor="val_foo")), ValueError, r"monitor='val_foo'.*Pass `mode='max'`"),
    Case("callback-earlystopping-monitor-missing", lambda t: _fit_with(cbs.EarlyStopping(monitor="val_loss")), UserWarning, r"Early stopping conditioned on metric `val_loss` which is not available"),
    Case("callback-reducelr-factor-above-1", lambda t: cbs.ReduceLROnPlateau(factor=1.5), ValueError, r"ReduceLROnPlateau does not support a factor outside \[0, 1\).*factor=1\.5"),
    Case("callback-reducelr-min-lr-negative", lambda t: cbs.ReduceLROnPlateau(min_lr=-1.0), ValueError, r"ReduceLROnPlateau: `min_lr` must be >= 0"),
    Case("callback-reducelr-with-a-schedule", lambda t: _fit_with(cbs.ReduceLROnPlateau(monitor="loss"), model=_model(optimizer=keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)))), TypeError, r"ReduceLROnPlateau sets the optimizer's learning rate.*`learning_rate`"),
    Case("callback-lrscheduler-not-callable", lambda t: cbs.LearningRateScheduler(0.1), TypeError, r"LearningRateScheduler: `schedule` must be callable"),
    Case("callback-lrscheduler-returns-string", lambda t: _fit_with(cbs.LearningRateScheduler(_string_schedule)), ValueError, r"output of the `schedule` function should be a float. Got: 'fast'"),
    Case("callback-csvlogger-separator", lambda t: cbs.CSVLogger(str(t / "log.csv"), separator=";;"), ValueError, r"CSVLogger: `separator` must be a 1-character string"),
    Case("callback-csvlogger-unwritable", lambda t: _fit_with(cbs.CSVLogger(_under_a_file(t, "log.csv"))), NotADirectoryError, r"CSVLogger: `filename` '[^']*afile/sub/log\.csv' cannot be opened for writing: .*Not a directory"),
    Case("callback-terminateonnan-raise-error-string", lambda t: cbs.TerminateOnNaN(raise_error="yes"), TypeError, r"TerminateOnNaN: `raise_error` must be a bool"),
    Case("callback-lambda-unknown-hook", lambda t: cbs.LambdaCallback(on_epoch_ending=print), TypeError, r"unexpected keyword argument\(s\) \['on_epoch_ending'\]"),
    Case("callback-lambda-hook-not-callable", lambda t: cbs.LambdaCallback(on_epoch_end=3), TypeError, r"LambdaCallback: `on_epoch_end` must be callable"),
    Case("callback-modelcheckpoint-save-freq-zero", lambda t: cbs.ModelCheckpoint(str(t / "ck"), save_freq=0), ValueError, r"`save_freq` must be \"epoch\" or a positive int"),
    Case("callback-modelcheckpoint-mode-unknown", lambda t: cbs.ModelCheckpoint(str(t / "ck"), mode="bogus"), ValueError, r"`mode` must be \"auto\", \"min\" or \"max\"; received 'bogus'"),
    Case("callback-modelcheckpoint-filepath-unknown-key", _checkpoint_filepath_bad_key, KeyError, r"`filepath` .* names 'val_los', which is not in the logs", after=_good_checkpoint_intact()),
    Case("callback-modelcheckpoint-unwritable", lambda t: _fit_with(cbs.ModelCheckpoint(_under_a_file(t, "ckpt"))), NotADirectoryError, r"ModelCheckpoint: `filepath` '[^']*afile/sub/ckpt' cannot be created or written: '[^']*afile' is not a directory"),
    Case("callback-backup-save-freq-negative", lambda t: cbs.BackupAndRestore(str(t), save_freq=-1), ValueError, r"`save_freq` must be \"epoch\" or a positive int.*-1"),
    Case("callback-backup-unwritable", lambda t: _fit_with(cbs.BackupAndRestore(_under_a_file(t))), OSError, r"`backup_dir` '[^']*afile/sub' cannot be created"),
    Case("callback-backup-of-another-model", _backup_of_another_model, ValueError, r"backup in '[^']*backup' was written by a different model", after=_backup_intact),
    Case("callback-backup-all-damaged", _backup_all_damaged, ValueError, r"BackupAndRestore: no intact checkpoint in '[^']*backup'; every one found is damaged and was left in place: .*ckpt-\d+\.index \(missing\)", after=_backup_files_kept),
    Case("callback-tensorboard-update-freq-unknown", lambda t: cbs.TensorBoard(str(t), update_freq="sometimes"), ValueError, r"`update_freq` must be \"epoch\", \"batch\" or a positive int"),
    Case("callback-tensorboard-profile-batch-unparsable", lambda t: cbs.TensorBoard(str(t), profile_batch="a,b"), ValueError, r"`profile_batch` must be .*received 'a,b'"),
    Case("callback-tensorboard-embeddings-unsupported", lambda t: cbs.TensorBoard(str(t), embeddings_freq=1), UserWarning, r"embedding projector is not supported"),
    Case("callback-tensorboard-unwritable", lambda t: _fit_with(cbs.TensorBoard(_under_a_file(t, "logs"))), NotADirectoryError, r"TensorBoard: `log_dir` '[^']*afile/sub/logs' cannot be created: .*Not a directory"),
    # -- checkpoints and saved state -------------------------------------------------
    Case("checkpoint-load-from-another-model", _load_other_model, ValueError, r"checkpoint '[^']*ckpt' does not match this model.*shape", after=_good_checkpoint_intact()),
    Case("checkpoint-load-missing", lambda t: _model().load_checkpoint(str(t / "nowhere")), FileNotFoundError, r"No checkpoint at '[^']*nowhere'"),
    Case("checkpoint-load-corrupt-index", _load_corrupt, ValueError, r"checkpoint '[^']*broken'", after=_good_checkpoint_intact()),
    Case("checkpoint-load-flipped-data", _load_flipped_data, ValueError, r"The checkpoint '[^']*bad/ckpt' cannot be read \(missing, truncated or corrupt files: [^)]*bad/ckpt\.data-00000-of-00001.*\): .*[Cc]hecksum does not match", after=_good_checkpoint_intact()),
    Case("checkpoint-save-unwritable", _save_unwritable, NotADirectoryError, r"save_checkpoint: `path` '[^']*afile/sub/ckpt' cannot be created: .*Not a directory", after=_good_checkpoint_intact()),
    Case("checkpoint-disk-full-during-save", _disk_full_during_checkpoint, tf.errors.OpError, r"ckpt\S*_temp/\S*; File too large", after=_good_checkpoint_intact(width=1024)),
    Case("weights-set-wrong-count", lambda t: _model().set_weights([np.zeros(3)]), ValueError, r"`set_weights` expects 2 arrays .*received 1"),
    # -- Keras's saving surface and Keras's own callbacks ---------------------------------
    Case("save-keras-wrong-suffix", lambda t: _model().save(str(t / "m.ckpt")), ValueError, r"Invalid filepath extension for saving.*`\.keras`.*save_checkpoint.*Received: filepath=.*m\.ckpt"),
    Case("save-keras-of-a-tf-module", lambda t: tfk.Model(_Module()).save(str(t / "m.keras")), TypeError, r"save\(\) writes a Keras `\.keras` file.*_Module, not a Keras model.*save_checkpoint.*export"),
    Case("save-overwrite-false", _save_twice_without_overwrite, FileExistsError, r"save\(\): '[^']*m\.keras' exists and `overwrite=False`"),
    Case("save-weights-wrong-suffix", lambda t: _model().save_weights(str(t / "w.h5")), ValueError, r"must end in `\.weights\.h5`.*w\.h5"),
    Case("load-weights-missing", lambda t: _model().load_weights(str(t / "none.weights.h5")), FileNotFoundError, r"load_weights\(\): no file at '[^']*none\.weights\.h5'"),
    Case("export-format-unknown", lambda t: _model().export(str(t / "x"), format="onnx"), ValueError, r"Unrecognized format='onnx'. Supported formats are: \['tf_saved_model'\]"),
    Case("callback-keras-tensorboard", lambda t: _fit_with(keras.callbacks.TensorBoard(str(t / "logs"))), TypeError, r"keras\.callbacks\.TensorBoard cannot run.*tfk_trainer\.callbacks\.TensorBoard"),
    Case("callback-keras-backupandrestore", lambda t: _fit_with(keras.callbacks.BackupAndRestore(str(t / "b"))), TypeError, r"keras\.callbacks\.BackupAndRestore cannot run.*tfk_trainer\.callbacks\.BackupAndRestore"),
]
# fmt: on


_TRACE_PREFIXES = ("in user code:", "Graph execution error")


def _expects_tf_error(error: Any) -> bool:
    errors = error if isinstance(error, tuple) else (error,)
    return any(issubclass(e, tf.errors.OpError) for e in errors)


def test_case_ids_are_unique_and_enough():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 40


# Known gaps: case ids whose error is still raised from inside the traced step or
# without naming the argument. They are marked xfail (issue 10 stays open for them)
# and docs/errors.md lists each with its fix. None today; add an id here (and to
# the docs) rather than weakening a case's expectation.
KNOWN_GAPS: set[str] = set()


def _marks(case_id: str, *marks):
    if case_id in KNOWN_GAPS:
        marks = (*marks, pytest.mark.xfail(reason="known gap, see docs/errors.md", strict=False))
    return marks


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            c, id=c.id, marks=_marks(c.id, pytest.mark.timeout(c.timeout, method="thread"))
        )
        for c in CASES
    ],
)
def test_bad_input(case: Case, tmp_path: Path):
    if isinstance(case.error, type) and issubclass(case.error, Warning):
        with pytest.warns(case.error, match=case.match):
            case.call(tmp_path)
    else:
        with pytest.raises(case.error, match=case.match) as info:
            case.call(tmp_path)
        message = str(info.value).lstrip()
        if not _expects_tf_error(case.error):
            assert not message.startswith(_TRACE_PREFIXES), (
                f"the message starts with a TensorFlow trace:\n{message[:600]}"
            )
            assert "\x1b[" not in message, f"terminal colour codes in the message: {message!r}"
    if case.after is not None:
        case.after(tmp_path)


# -- documented behaviours ------------------------------------------------------------


@pytest.mark.timeout(CASE_TIMEOUT, method="thread")
@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_nan_or_inf_in_inputs_trains_to_a_nan_loss_reported_as_is(bad):
    """No error and no warning: the loss is NaN, evaluate and predict return NaN."""
    x = X.copy()
    x[7] = bad
    model = _model()
    history = model.fit(x, Y, batch_size=5, epochs=2, shuffle=False, verbose=0).history
    assert len(history["loss"]) == 2 and all(np.isnan(v) for v in history["loss"])
    assert int(model.optimizer.iterations.numpy()) == 8  # every step ran
    assert np.isnan(model.evaluate(x, Y, verbose=0))
    assert np.isnan(model.predict(x[7:8], verbose=0)).all()


@pytest.mark.timeout(CASE_TIMEOUT, method="thread")
def test_terminate_on_nan_stops_after_the_execution_with_the_nan():
    model = _model()
    history = model.fit(
        X_NAN,
        Y,
        batch_size=5,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[cbs.TerminateOnNaN()],
    ).history
    assert int(model.optimizer.iterations.numpy()) == 2  # batch 1 holds the NaN
    assert len(history["loss"]) == 1 and np.isnan(history["loss"][0])


@pytest.mark.timeout(CASE_TIMEOUT, method="thread")
def test_out_of_range_labels_in_a_dataset_under_xla_train_to_a_nan_loss():
    """Arrays are checked up front (`fit-sparse-label-out-of-range-xla`); a dataset
    cannot be scanned, and XLA's sparse cross-entropy does not check labels (nor
    does TF's on GPU): no error, the loss is NaN."""
    model = _model(jit_compile=True)
    history = model.fit(_dataset(X, Y_OUT_OF_RANGE), verbose=0).history
    assert np.isnan(history["loss"][0])


@pytest.mark.timeout(CASE_TIMEOUT, method="thread")
def test_wrong_input_shape_is_one_short_line_with_the_keras_error_as_cause():
    """Keras's own message prints the whole input tensor (784 values per image) and
    the call's arguments; ours is one line, and Keras's error is kept as the cause."""
    with pytest.raises(ValueError) as info:
        _fit(np.zeros((N, 784), "float32"), Y, model=_image_model())
    message = str(info.value)
    assert "\n" not in message and len(message) < 200, message
    assert "0. 0." not in message and "Arguments received" not in message, message
    cause = info.value.__cause__
    assert isinstance(cause, ValueError) and "(None, 28, 28)" in str(cause)


# -- the binary: bad flags and configs ---------------------------------------------

TINY = """
    config = base_config(model="mlp", data="synthetic")
    config.model.hidden_units = (8, 8)
    config.data.input_shape = (4,)
    config.data.num_classes = 3
    config.data.num_train = 64
    config.data.num_test = 16
    config.train.epochs = 1
    config.train.batch_size = 16
    config.train.steps_per_execution = 1
    config.eval.batch_size = 16
"""


def _unwritable_model_dir(d: Path) -> str:
    """chmod 0o500 for a regular user; root ignores permission bits, so a path
    below a regular file (which no one can create) stands in for it."""
    if os.geteuid() == 0:
        return _under_a_file(d, "run")
    readonly = d / "readonly"
    readonly.mkdir()
    readonly.chmod(0o500)
    return str(readonly / "run")


def _model_dir_file(d: Path) -> str:
    (d / "afile").write_text("not a directory\n")
    return str(d / "afile")


@dataclasses.dataclass(frozen=True)
class BinaryCase:
    """`tools/train.py --config=<config> --model_dir=<model_dir> *args`: exit 2, quickly.

    Cases with the same `run` share one process (their `args` are joined): the
    config checks report every bad value at once, so one run covers them all.
    """

    id: str
    args: tuple[str, ...]  # "{d}" is the run's own directory
    expect: tuple[str, ...]  # regexes, each must be found in the output
    config: str | None = TINY  # get_config() body ("{d}" replaced); None: no --config
    model_dir: Callable[[Path], str] | str | None = "run"  # None: no --model_dir
    run: str | None = None  # the shared process; None: its own

    @property
    def run_id(self) -> str:
        return self.run or self.id


def _argv(cases: list[BinaryCase], d: Path) -> list[str]:
    first = cases[0]
    assert all(c.config == first.config and c.model_dir == first.model_dir for c in cases)
    argv = [TRAIN]
    if first.config is not None:
        config = write_config(d / "config.py", first.config.replace("{d}", str(d)))
        argv.append(f"--config={config}")
    if first.model_dir is not None:
        model_dir = first.model_dir
        argv.append(f"--model_dir={model_dir(d) if callable(model_dir) else d / model_dir}")
    return argv + [a.replace("{d}", str(d)) for c in cases for a in c.args]


_VALUES = "config-values"  # one process reports all of these
_DATA = "data-values"  # common data keys: reported before the dataset's own checks run

# fmt: off
BINARY_CASES: list[BinaryCase] = [
    BinaryCase("binary-epochs-zero", ("--config.train.epochs=0",), (r"train\.epochs must be >= 1; received 0",), run=_VALUES),
    BinaryCase("binary-batch-size-negative", ("--config.train.batch_size=-4",), (r"train\.batch_size must be >= 1; received -4",), run=_VALUES),
    BinaryCase("binary-learning-rate-negative", ("--config.train.learning_rate=-0.1",), (r"train\.learning_rate must be >= 0; received -0\.1",), run=_VALUES),
    BinaryCase("binary-optimizer-unknown", ("--config.train.optimizer=adamm",), (r"train\.optimizer must be one of \[.*'adam'.*\]; received 'adamm'",), run=_VALUES),
    BinaryCase("binary-lr-schedule-unknown", ("--config.train.lr_schedule=linear",), (r"train\.lr_schedule must be one of \['constant', 'cosine'\]; received 'linear'",), run=_VALUES),
    BinaryCase("binary-eval-batch-size-zero", ("--config.eval.batch_size=0",), (r"eval\.batch_size must be >= 1; received 0",), run=_VALUES),
    BinaryCase("binary-min-accuracy-above-one", ("--config.eval.min_accuracy=1.5",), (r"eval\.min_accuracy must be <= 1; received 1\.5",), run=_VALUES),
    BinaryCase("binary-jit-compile-unknown", ("--config.runtime.jit_compile=yes",), (r"runtime\.jit_compile must be one of \['auto', 'true', 'false'\]; received 'yes'",), run=_VALUES),
    BinaryCase("binary-input-shape-zero", ("--config.data.input_shape=(0,)",), (r"data\.input_shape must be positive ints; received \(0,\)",), run=_VALUES),
    BinaryCase("binary-num-classes-one", ("--config.data.num_classes=1",), (r"data\.num_classes must be >= 2; received 1",), run=_VALUES),
    BinaryCase("binary-validation-split-one", ("--config.data.validation_split=1.0",), (r"data\.validation_split must be < 1; received 1\.0",), run=_DATA),
    BinaryCase("binary-max-train-samples-negative", ("--config.data.max_train_samples=-1",), (r"data\.max_train_samples must be >= 0; received -1",), run=_DATA),
    BinaryCase("binary-unknown-key", ("--config.train.epochz=1",), (r"--config\.train\.epochz: the config has no key 'train\.epochz'", r'Did you mean "train\.epochs"')),
    BinaryCase("binary-override-wrong-type", ("--config.train.batch_size=abc",), (r"--config\.train\.batch_size=abc", r"invalid literal for int")),
    BinaryCase("binary-loss-unknown", ("--config.train.loss=mean_squared_eror",), (r"train\.loss", r"Unknown loss 'mean_squared_eror'")),
    BinaryCase("binary-model-dropout-out-of-range", ("--config.model.dropout=1.5",), (r"model\.dropout must be in \[0, 1\).*received 1\.5",)),
    BinaryCase("binary-npz-file-missing", (), (r"data\.path '[^']*missing\.npz': no such file",), config='config = base_config(model="mlp", data="npz")\nconfig.data.path = "{d}/missing.npz"'),
    BinaryCase("binary-flag-seed-negative", ("--seed=-1",), (r"flag --seed=-1: -1 is not a non-negative integer",)),
    BinaryCase("binary-extra-positional-argument", ("extra",), (r"unexpected arguments \['extra'\]",)),
    BinaryCase("binary-model-dir-missing", (), (r"--model_dir must have a value other than None",), model_dir=None),
    BinaryCase("binary-model-dir-empty", ("--model_dir=",), (r"--model_dir must not be empty",), model_dir=None),
    BinaryCase("binary-model-dir-is-a-file", (), (r"--model_dir '[^']*afile' exists and is not a directory",), model_dir=_model_dir_file),
    BinaryCase("binary-model-dir-not-writable", (), (r"--model_dir '[^']*(afile/sub|readonly)/run' cannot be created or written: '[^']*(afile|readonly)' is not a (writable )?directory",), model_dir=_unwritable_model_dir),
    BinaryCase("binary-config-file-missing", ("--config={d}/nonexistent.py",), (r"--config=\S*nonexistent\.py: could not read the config file", r"No such file or directory"), config=None),
    BinaryCase("binary-config-unknown-name", ("--config=fashion_mnist_mpl",), (r"--config=fashion_mnist_mpl: no such config file, and no shipped config is named 'fashion_mnist_mpl'\. Did you mean \"fashion_mnist_mlp\"\? Shipped configs: .*fashion_mnist_mlp",), config=None),
    BinaryCase("binary-config-raises", (), (r"--config=\S*config\.py: loading the config failed: RuntimeError: boom in get_config",), config='raise RuntimeError("boom in get_config")'),
    BinaryCase("binary-config-returns-a-dict", (), (r"get_config\(\) must return an ml_collections\.ConfigDict; it returned dict",), config="config = {'train': {'epochs': 1}}"),
]
# fmt: on


@dataclasses.dataclass
class BinaryResult:
    returncode: int | None
    output: str
    seconds: float
    directory: Path


def _run_binary(cases: list[BinaryCase], d: Path) -> BinaryResult:
    d.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, *_argv(cases, d)]
    started = time.monotonic()
    with _SPAWN_LOCK:  # never inherit the "full disk" file-size limit
        proc = subprocess.Popen(
            argv, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return BinaryResult(None, f"TIMED OUT after 120 s: {argv}\n{out}", 120.0, d)
    return BinaryResult(proc.returncode, out, time.monotonic() - started, d)


@pytest.fixture(scope="module", autouse=True)
def binary_results(request, tmp_path_factory):
    """Starts the runs of the selected binary cases on a background pool at the
    module's first test, so the subprocesses run while the in-process cases do."""
    selected = [
        item.callspec.params["bcase"]
        for item in request.session.items
        if item.module is request.module
        and hasattr(item, "callspec")
        and "bcase" in item.callspec.params
    ]
    runs: dict[str, list[BinaryCase]] = {}
    for case in BINARY_CASES:  # table order: a run's args in a stable order
        if any(case.run_id == s.run_id for s in selected):
            runs.setdefault(case.run_id, []).append(case)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=BINARY_WORKERS)
    base = tmp_path_factory.mktemp("binary") if runs else None
    futures = {
        run_id: pool.submit(_run_binary, cases, base / run_id) for run_id, cases in runs.items()
    }
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.timeout(300, method="thread")  # the first one may wait for most of the pool
@pytest.mark.parametrize(
    "bcase", [pytest.param(c, id=c.id, marks=_marks(c.id)) for c in BINARY_CASES]
)
def test_binary_bad_flags_and_configs(bcase: BinaryCase, binary_results):
    result = binary_results[bcase.run_id].result()
    tail = result.output[-4000:]
    assert result.returncode == 2, f"exit status {result.returncode}, expected 2:\n{tail}"
    for pattern in bcase.expect:
        assert re.search(pattern, result.output), f"{pattern!r} not in the output:\n{tail}"
    assert "Traceback (most recent call last)" not in result.output, tail
    assert_failed_before_running(result.directory, result.output)


def test_binary_case_ids_are_unique_and_runs_consistent():
    ids = [c.id for c in BINARY_CASES]
    assert len(ids) == len(set(ids)) and not set(ids) & {c.id for c in CASES}
    for run_id in {c.run_id for c in BINARY_CASES}:
        members = [c for c in BINARY_CASES if c.run_id == run_id]
        assert len({(m.config, m.model_dir) for m in members}) == 1, run_id
