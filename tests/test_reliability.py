"""NaN/inf during training, and the security rules (no eval/exec, no pickle)."""

import math
import os
import re

import keras
import numpy as np
import pytest

import tfk_trainer as tfk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model():
    keras.utils.set_random_seed(0)
    model = tfk.Model(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]))
    model.compile(keras.optimizers.SGD(0.01), "mse")
    return model


def _data(n=64, poison_from=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    if poison_from is not None:
        x[poison_from:] = np.inf
    return x, y


def test_nan_loss_is_reported_as_it_is_without_terminate_on_nan():
    x, y = _data(poison_from=40)
    history = _model().fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert all(math.isnan(v) for v in history.history["loss"])


def test_terminate_on_nan_stops_and_the_last_good_checkpoint_loads(tmp_path):
    model = _model()
    x, y = _data()
    best = tfk.callbacks.ModelCheckpoint(
        str(tmp_path / "best"), monitor="loss", save_best_only=True
    )
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[best])
    good = model.get_weights()
    bad_x, bad_y = _data(poison_from=0)
    history = model.fit(
        bad_x,
        bad_y,
        batch_size=16,
        epochs=5,
        verbose=0,
        callbacks=[tfk.callbacks.TerminateOnNaN(), best],
    )
    assert len(history.epoch) == 1  # stopped in the first epoch
    assert int(model.optimizer.iterations.numpy()) == 2 * 4 + 1  # right after the bad step
    restored = _model()
    restored.load_checkpoint(str(tmp_path / "best"))
    for a, b in zip(restored.get_weights(), good):
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(a).all()


def _sources():
    for folder in ("tfk_trainer", "tools", "configs", "examples"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(dirpath, name)
                    with open(path, encoding="utf-8") as f:
                        yield path, f.read()


@pytest.mark.parametrize(
    "pattern",
    [
        r"(?<![\w.])eval\(",
        r"(?<![\w.])exec\(",
        r"import pickle|pickle\.loads?\(|allow_pickle\s*=\s*True",
        r"\bmarshal\.",
    ],
)
def test_no_eval_exec_or_pickle_in_the_project(pattern):
    hits = []
    for path, text in _sources():
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(pattern, code) and not code.strip().startswith(("'", '"')):
                hits.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_backups_hold_only_tensor_checkpoint_files(tmp_path):
    model = _model()
    x, y = _data()
    backup = tmp_path / "backup"
    model.fit(
        x,
        y,
        epochs=1,
        verbose=0,
        callbacks=[tfk.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False)],
    )
    names = sorted(os.listdir(backup))
    assert names and all(n == "checkpoint" or ".index" in n or ".data-" in n for n in names), names
    for name in names:
        mode = os.stat(backup / name).st_mode & 0o777
        assert not mode & 0o002, f"{name} is world-writable ({oct(mode)})"
