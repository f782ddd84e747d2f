"""Durable files on any file system: every library write goes through tf.io.gfile.

TensorFlow's `ram://` file system stands in for `gs://`: like an object store
it is reached only through `tf.io.gfile` (and TensorFlow's checkpoint,
SavedModel and summary APIs), so a write that used `open()`, `os.path` or
`shutil` would land on local disk as `./ram:/...` instead. Each test runs in an
empty working directory and checks that nothing appeared there.

Also here: same-prefix overwrites are published atomically (a crash at any
point of `save_checkpoint` or `ModelCheckpoint(save_best_only=True)` leaves
the previous checkpoint loadable), and only the chief writes.
"""

import uuid

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfk_trainer as tfk
from tfk_trainer import checkpoint as checkpoint_lib
from tfk_trainer import distribute

ATOL = 1e-6
X = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
Y = (X[:, :2] * 2.0).astype("float32")


def _model() -> tfk.Model:
    keras.utils.set_random_seed(2)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
    model = tfk.Model(net)
    model.compile("adam", "mse")
    return model


def _fit(model, epochs=1, **kwargs):
    return model.fit(X, Y, batch_size=16, epochs=epochs, verbose=0, shuffle=False, **kwargs)


def _same(a, b) -> None:
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=0, atol=ATOL)


@pytest.fixture
def ram(tmp_path, monkeypatch):
    """A fresh `ram://` directory; the test runs in an empty local directory that
    must stay empty (a write that bypassed tf.io.gfile would land there)."""
    monkeypatch.chdir(tmp_path)
    yield f"ram://durable-{uuid.uuid4().hex[:8]}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "something was written locally"


def _names(directory: str) -> list[str]:
    return sorted(n.rstrip("/") for n in tf.io.gfile.listdir(directory))


# -- item 1: every file through tf.io.gfile -------------------------------------------


def test_model_checkpoint_epoch_template_on_ram(ram):
    model = _model()
    _fit(model, epochs=2, callbacks=[tfk.callbacks.ModelCheckpoint(f"{ram}/ckpt-{{epoch}}")])
    names = _names(ram)
    for epoch in (1, 2):
        assert f"ckpt-{epoch}.index" in names
    restored = _model()
    restored.load_checkpoint(f"{ram}/ckpt-2")
    _same(restored.get_weights(), model.get_weights())
    assert int(restored.optimizer.iterations.numpy()) == 8


def test_model_checkpoint_best_only_and_weights_only_on_ram(ram):
    model = _model()
    best = tfk.callbacks.ModelCheckpoint(f"{ram}/best", monitor="loss", save_best_only=True)
    weights = tfk.callbacks.ModelCheckpoint(
        f"{ram}/w{{epoch}}.weights.h5", save_weights_only=True
    )
    no_optimizer = tfk.callbacks.ModelCheckpoint(f"{ram}/net", save_weights_only=True)
    keras_file = tfk.callbacks.ModelCheckpoint(f"{ram}/m.keras")
    _fit(model, epochs=3, callbacks=[best, weights, no_optimizer, keras_file])
    names = _names(ram)
    assert {"w1.weights.h5", "w2.weights.h5", "w3.weights.h5", "m.keras"} <= set(names)
    # The loss falls every epoch, so `best` was overwritten twice: published by
    # its pointer, the superseded files gone.
    assert "best.checkpoint" in names
    assert len([n for n in names if n.startswith("best") and n.endswith(".index")]) == 1
    restored = _model()
    restored.load_checkpoint(f"{ram}/best")
    _same(restored.get_weights(), model.get_weights())
    from_h5 = _model()
    from_h5.load_weights(f"{ram}/w3.weights.h5")
    _same(from_h5.get_weights(), model.get_weights())
    net_only = _model()
    net_only.load_checkpoint(f"{ram}/net", include_optimizer=False)
    _same(net_only.get_weights(), model.get_weights())
    loaded = keras.saving.load_model(f"{ram}/m.keras")
    _same(loaded.get_weights(), model.network.get_weights())


def test_backup_removed_after_a_finished_run_so_the_next_fit_trains_every_epoch(ram):
    backup = f"{ram}/backup"
    model = _model()
    _fit(model, epochs=2, callbacks=[tfk.callbacks.BackupAndRestore(backup)])
    assert not tf.io.gfile.exists(backup)
    again = _model()
    history = _fit(again, epochs=2, callbacks=[tfk.callbacks.BackupAndRestore(backup)])
    assert len(history.history["loss"]) == 2
    assert int(again.optimizer.iterations.numpy()) == 8


class _Interrupt(tfk.callbacks.Callback):
    """Raises after the given epoch's end (after BackupAndRestore saved it)."""

    def __init__(self, after_epoch):
        super().__init__()
        self.after_epoch = after_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.after_epoch:
            raise KeyboardInterrupt("interrupted (simulated)")


def test_backup_on_ram_resumes_an_interrupted_run(ram):
    backup = f"{ram}/backup"
    reference = _model()
    _fit(reference, epochs=3)

    model = _model()
    with pytest.raises(KeyboardInterrupt):
        _fit(model, epochs=3, callbacks=[tfk.callbacks.BackupAndRestore(backup), _Interrupt(0)])
    assert "checkpoint" in _names(backup)
    resumed = _model()
    history = _fit(resumed, epochs=3, callbacks=[tfk.callbacks.BackupAndRestore(backup)])
    assert len(history.history["loss"]) == 2  # epochs 2 and 3 only
    assert int(resumed.optimizer.iterations.numpy()) == 12
    _same(resumed.get_weights(), reference.get_weights())
    assert not tf.io.gfile.exists(backup)


def test_csv_logger_on_ram_writes_and_appends(ram):
    path = f"{ram}/logs/log.csv"
    tf.io.gfile.makedirs(f"{ram}/logs")
    model = _model()
    _fit(model, epochs=2, callbacks=[tfk.callbacks.CSVLogger(path)])
    with tf.io.gfile.GFile(path) as f:
        rows = f.read().splitlines()
    assert rows[0] == "epoch,loss,val_loss" and [r.split(",")[0] for r in rows[1:]] == ["0", "1"]
    _fit(model, epochs=2, callbacks=[tfk.callbacks.CSVLogger(path, append=True)])
    with tf.io.gfile.GFile(path) as f:
        rows = f.read().splitlines()
    assert rows.count("epoch,loss,val_loss") == 1
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "0", "1"]


def test_save_and_load_checkpoint_on_ram(ram):
    model = _model()
    _fit(model)
    first = model.save_checkpoint(f"{ram}/ckpt")
    assert first == f"{ram}/ckpt"
    _fit(model)
    second = model.save_checkpoint(f"{ram}/ckpt")
    assert second.startswith(f"{ram}/ckpt.tfk-")  # the files written, named by the pointer
    assert not tf.io.gfile.exists(f"{ram}/ckpt.index")  # superseded, deleted after publishing
    for path in (f"{ram}/ckpt", second, ram):
        restored = _model()
        restored.load_checkpoint(path)
        _same(restored.get_weights(), model.get_weights())
    # TensorFlow reads the pointer too (it is a `checkpoint` state file).
    assert tf.train.latest_checkpoint(ram, latest_filename="ckpt.checkpoint") == second


def test_export_to_ram_loads_with_tf_saved_model(ram):
    model = _model()
    _fit(model)
    model.export(f"{ram}/serving", verbose=False)
    names = _names(ram)
    assert names == ["serving"], names  # no staging directory left behind
    loaded = tf.saved_model.load(f"{ram}/serving")
    out = loaded.signatures["serving_default"](tf.constant(X[:5]))
    np.testing.assert_allclose(
        next(iter(out.values())).numpy(), model.predict(X[:5], verbose=0), rtol=0, atol=ATOL
    )


def test_keras_files_round_trip_on_ram(ram):
    model = _model()
    _fit(model)
    model.save(f"{ram}/m.keras")
    model.save_weights(f"{ram}/w.weights.h5")
    assert _names(ram) == ["m.keras", "w.weights.h5"]  # no temporary names left
    loaded = keras.saving.load_model(f"{ram}/m.keras")
    _same(loaded.get_weights(), model.network.get_weights())
    restored = _model()
    restored.load_weights(f"{ram}/w.weights.h5")
    _same(restored.get_weights(), model.get_weights())
    with pytest.raises(FileExistsError, match=r"save\(\): .*m\.keras' exists and `overwrite=False`"):
        model.save(f"{ram}/m.keras", overwrite=False)
    with pytest.raises(FileExistsError, match="save_weights"):
        model.save_weights(f"{ram}/w.weights.h5", overwrite=False)


def test_only_the_chief_writes(ram, monkeypatch):
    model = _model()
    _fit(model)
    monkeypatch.setattr(distribute, "is_chief", lambda strategy=None: False)
    model.save_checkpoint(f"{ram}/ckpt")
    model.save(f"{ram}/m.keras")
    model.save_weights(f"{ram}/w.weights.h5")
    model.export(f"{ram}/serving", verbose=False)
    leftover = _names(ram) if tf.io.gfile.exists(ram) else []
    assert leftover == [], leftover  # the workers' scratch copies are deleted too


# -- item 4: same-prefix overwrites are atomic ----------------------------------------


def _kill_between_data_and_index(monkeypatch):
    """A Checkpoint.write that dies after its `.data` file is in place but before the
    `.index` exists (TensorFlow renames `.data` into place first)."""
    original = tf.train.Checkpoint.write

    def dying_write(self, file_prefix, options=None):
        written = original(self, file_prefix, options)
        tf.io.gfile.remove(written + ".index")
        raise KeyboardInterrupt("killed between the .data rename and the .index write")

    monkeypatch.setattr(tf.train.Checkpoint, "write", dying_write)


@pytest.mark.parametrize("saves_before", [1, 2], ids=["plain-prefix", "published-prefix"])
def test_kill_between_data_and_index_keeps_the_previous_checkpoint(ram, monkeypatch, saves_before):
    model = _model()
    for _ in range(saves_before):
        _fit(model)
        model.save_checkpoint(f"{ram}/ckpt")
    good = model.get_weights()
    _fit(model)
    with monkeypatch.context() as m:
        _kill_between_data_and_index(m)
        with pytest.raises(KeyboardInterrupt):
            model.save_checkpoint(f"{ram}/ckpt")
    restored = _model()
    restored.load_checkpoint(f"{ram}/ckpt")
    _same(restored.get_weights(), good)
    # The next save succeeds and is the one loaded.
    model.save_checkpoint(f"{ram}/ckpt")
    again = _model()
    again.load_checkpoint(f"{ram}/ckpt")
    _same(again.get_weights(), model.get_weights())


def test_kill_before_the_pointer_write_keeps_the_previous_checkpoint(ram, monkeypatch):
    model = _model()
    _fit(model)
    model.save_checkpoint(f"{ram}/ckpt")
    good = model.get_weights()
    _fit(model)

    def dying_pointer(prefix, target):
        raise KeyboardInterrupt("killed before the pointer was written")

    with monkeypatch.context() as m:
        m.setattr(checkpoint_lib, "write_pointer", dying_pointer)
        with pytest.raises(KeyboardInterrupt):
            model.save_checkpoint(f"{ram}/ckpt")
    assert any(n.startswith("ckpt.tfk-") for n in _names(ram))  # the unpublished files
    for path in (f"{ram}/ckpt", ram):  # neither reader takes the unpublished save
        restored = _model()
        restored.load_checkpoint(path)
        _same(restored.get_weights(), good)


def test_kill_after_the_pointer_before_cleanup_loads_the_new_checkpoint(ram, monkeypatch):
    model = _model()
    _fit(model)
    model.save_checkpoint(f"{ram}/ckpt")
    _fit(model)

    def dying_delete(prefix):
        raise KeyboardInterrupt("killed before the old files were deleted")

    with monkeypatch.context() as m:
        m.setattr(checkpoint_lib, "_delete_checkpoint", dying_delete)
        with pytest.raises(KeyboardInterrupt):
            model.save_checkpoint(f"{ram}/ckpt")
    restored = _model()
    restored.load_checkpoint(f"{ram}/ckpt")
    _same(restored.get_weights(), model.get_weights())


def test_model_checkpoint_best_only_crash_keeps_the_previous_best(ram, monkeypatch):
    model = _model()
    best = tfk.callbacks.ModelCheckpoint(f"{ram}/best", monitor="loss", save_best_only=True)
    _fit(model, epochs=2, callbacks=[best])
    good = model.get_weights()
    with monkeypatch.context() as m:
        _kill_between_data_and_index(m)
        with pytest.raises(KeyboardInterrupt):
            _fit(model, epochs=1, callbacks=[best])  # the loss improves again: overwrite
    restored = _model()
    restored.load_checkpoint(f"{ram}/best")
    _same(restored.get_weights(), good)
