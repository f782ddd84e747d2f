"""Kill training (SIGKILL, SIGTERM) at several points; restarts end bit-identical."""

import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from tolerances import ATOL

import tfk_trainer as tfk

WORKER = os.path.join(os.path.dirname(__file__), "workers", "resumable_fit.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
STEPS = 4 * 12  # 4 epochs of 192 training samples at batch 16


def _run(work_dir, pause_at=0):
    return subprocess.Popen(
        [sys.executable, WORKER, str(work_dir)] + ([str(pause_at)] if pause_at else []),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_ready(proc, work_dir, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (work_dir / "ready").exists():
            return
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("worker never reached the pause step")


def _weights(path):
    data = np.load(path)
    return [data[k] for k in data.files if k.startswith("arr_")], int(data["iterations"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    work = tmp_path_factory.mktemp("reference")
    proc = _run(work)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return _weights(work / "final.npz")


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "kill_at, sig",
    [(5, signal.SIGKILL), (19, signal.SIGKILL), (30, signal.SIGTERM), (43, signal.SIGTERM)],
    ids=["kill-epoch0", "kill-epoch1", "term-epoch2", "term-epoch3"],
)
def test_killed_run_resumes_to_identical_weights(tmp_path, reference, kill_at, sig):
    proc = _run(tmp_path, pause_at=kill_at)
    _wait_ready(proc, tmp_path)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        # Saved at the next execution boundary, then exited with the documented code.
        assert proc.returncode == tfk.callbacks.PREEMPTED_EXIT_CODE, out[-3000:]
        assert "backup saved" in out
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "final.npz").exists()
    (tmp_path / "ready").unlink()

    restart = _run(tmp_path)
    out, _ = restart.communicate(timeout=300)
    assert restart.returncode == 0, out[-3000:]
    weights, iterations = _weights(tmp_path / "final.npz")
    ref_weights, ref_iterations = reference
    assert iterations == ref_iterations == STEPS
    for a, b in zip(weights, ref_weights):
        np.testing.assert_array_equal(a, b)


def _small_model(strategy=None):
    def build():
        keras.utils.set_random_seed(2)
        net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
        model = tfk.Model(net)
        model.compile("adam", "mse")
        return model

    if strategy is None:
        return build()
    with strategy.scope():
        return build()


def _train(model, epochs=1):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    model.fit(x, x[:, :2] * 2.0, batch_size=16, epochs=epochs, verbose=0)


def test_crash_during_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    model = _small_model()
    _train(model)
    good = model.save_checkpoint(str(tmp_path / "ckpt"))
    saved = model.get_weights()
    _train(model)

    original_write = tf.train.Checkpoint.write

    def crashing_write(self, file_prefix, options=None):
        original_write(self, file_prefix + "-partial", options)  # some files on disk...
        raise OSError("disk full (simulated)")  # ...then the write dies

    monkeypatch.setattr(tf.train.Checkpoint, "write", crashing_write)
    with pytest.raises(OSError, match="disk full"):
        model.save_checkpoint(str(tmp_path / "ckpt"))
    monkeypatch.undo()

    fresh = _small_model()
    fresh.load_checkpoint(good)
    for a, b in zip(fresh.get_weights(), saved):
        np.testing.assert_array_equal(a, b)


def test_backup_survives_a_crash_mid_save(tmp_path, monkeypatch):
    """A save that dies after writing data files leaves the pointer on the last good backup."""
    backup = tmp_path / "backup"
    model = _small_model()
    _train(model, epochs=1)
    cb = tfk.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False)
    model.fit(
        np.ones((32, 4), "float32"),
        np.ones((32, 2), "float32"),
        epochs=1,
        verbose=0,
        callbacks=[cb],
    )
    latest = tf.train.latest_checkpoint(str(backup))
    assert latest

    def dying_save(self, checkpoint_number=None, check_interval=True, options=None):
        self._checkpoint.write(os.path.join(self.directory, f"ckpt-{checkpoint_number}"))
        raise KeyboardInterrupt  # killed before the pointer file is updated

    monkeypatch.setattr(tf.train.CheckpointManager, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):  # resumes at epoch 1, saves at its end, dies
        model.fit(
            np.ones((32, 4), "float32"),
            np.ones((32, 2), "float32"),
            epochs=2,
            verbose=0,
            callbacks=[cb],
        )
    assert tf.train.latest_checkpoint(str(backup)) == latest


def test_checkpoint_restores_across_strategies(tmp_path, mirrored_strategy):
    four = _small_model(mirrored_strategy(4))
    _train(four)
    path = four.save_checkpoint(str(tmp_path / "from4"))
    one = _small_model()
    one.load_checkpoint(path)
    for a, b in zip(one.get_weights(), four.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(one.optimizer.iterations.numpy()) == int(four.optimizer.iterations.numpy())
    _train(one)
    back = one.save_checkpoint(str(tmp_path / "from1"))
    again = _small_model(mirrored_strategy(4))
    again.load_checkpoint(back)
    for a, b in zip(again.get_weights(), one.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_from_another_model_is_a_clear_error(tmp_path):
    model = _small_model()
    _train(model)
    path = model.save_checkpoint(str(tmp_path / "ckpt"))
    other = tfk.Model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
    other.compile("adam", "mse")
    with pytest.raises(ValueError, match="does not match this model"):
        other.load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        model.load_checkpoint(str(tmp_path / "missing"))


def test_model_checkpoint_formats_and_best_only(tmp_path):
    model = _small_model()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    cb = tfk.callbacks.ModelCheckpoint(
        str(tmp_path / "ckpt-{epoch:02d}-{val_loss:.3f}"), monitor="val_loss", save_best_only=True
    )
    h5 = tfk.callbacks.ModelCheckpoint(
        str(tmp_path / "w{epoch}.weights.h5"), save_weights_only=True
    )
    model.fit(x, x[:, :2], epochs=3, validation_split=0.25, verbose=0, callbacks=[cb, h5])
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert any(name.startswith("ckpt-01-") and name.endswith(".index") for name in saved)
    assert {"w1.weights.h5", "w2.weights.h5", "w3.weights.h5"} <= set(saved)
    prefix = sorted(
        p for p in tmp_path.iterdir() if p.name.startswith("ckpt-") and p.name.endswith(".index")
    )[-1]
    restored = _small_model()
    restored.load_checkpoint(str(prefix)[: -len(".index")])


@pytest.mark.timeout(240)
def test_savedmodel_round_trip_in_a_fresh_process(tmp_path):
    model = _small_model()
    _train(model)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(7, 4)).astype("float32")
    expected = model.predict(x, verbose=0)
    model.export(str(tmp_path / "serving"))
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        "assert 'tfk_trainer' not in sys.modules\n"
        f"m = tf.saved_model.load({str(tmp_path / 'serving')!r})\n"
        "f = m.signatures['serving_default']\n"
        f"out = f(tf.constant(np.load({str(tmp_path / 'x.npy')!r})))\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, list(out.values())[0].numpy())\n"
        "print(f.structured_input_signature)\n"
    )
    env = {**ENV, "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
        cwd=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-6, atol=ATOL)
    assert "float32" in result.stdout and "None, 4" in result.stdout
    with pytest.raises(FileExistsError):
        model.export(str(tmp_path / "serving"))


def test_load_checkpoint_from_a_directory_picks_the_newest(tmp_path):
    model = _small_model()
    _train(model)
    model.save_checkpoint(str(tmp_path / "first"))
    _train(model)
    model.save_checkpoint(str(tmp_path / "second"))
    fresh = _small_model()
    fresh.load_checkpoint(str(tmp_path))
    for a, b in zip(fresh.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
