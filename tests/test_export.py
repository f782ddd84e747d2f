"""`model.export` on any file system, with the umask's permissions.

The SavedModel is staged in a sibling directory that SavedModel creates itself
and moved into place through tf.io.gfile: no 0700 `tempfile.mkdtemp` directory
(a serving process under another user could not read it), and `ram://` (a
stand-in for gs://, whose directory rename differs from a local one) works.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfk_trainer as tfk


@pytest.fixture(scope="module")
def model() -> tfk.Model:
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model = tfk.Model(net)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.predict_on_batch(np.zeros((1, 4), "float32"))
    return model


def _serve(path: str, x: np.ndarray) -> np.ndarray:
    served = tf.saved_model.load(path).signatures["serving_default"]
    return served(inputs=tf.constant(x))["outputs"].numpy()


def test_export_to_ram_filesystem(model):
    x = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    path = "ram://tfk_export_test/run/export"
    model.export(path)
    listing = {name.rstrip("/") for name in tf.io.gfile.listdir(path)}
    assert {"saved_model.pb", "variables"} <= listing, listing
    assert tf.io.gfile.listdir(f"{path}/variables"), "the variables were not moved"
    assert tf.io.gfile.listdir("ram://tfk_export_test/run") == ["export"]  # no staging left
    np.testing.assert_allclose(_serve(path, x), model.predict(x, verbose=0), rtol=0, atol=1e-6)
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        model.export(path)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_export_has_the_umask_permissions(model, tmp_path, umask):
    previous = os.umask(umask)
    try:
        path = tmp_path / "out" / "export"
        model.export(str(path))
    finally:
        os.umask(previous)
    entries = [path, *path.rglob("*")]
    assert any(p.is_file() for p in entries) and any(p.is_dir() for p in entries[1:])
    for entry in entries:
        mode = entry.stat().st_mode & 0o777
        expected = (0o777 if entry.is_dir() else 0o666) & ~umask
        assert mode == expected, f"{entry}: {oct(mode)}, expected {oct(expected)}"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["export"]
