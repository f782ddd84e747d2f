"""Damaged backups and checkpoints: the newest intact one is used, never a silent restart.

Each damage case of a two-backup `BackupAndRestore` directory (the newest
backup's `.index` missing, a garbage `checkpoint` state file, flipped bytes
in the newest `.data`, everything damaged) and of `load_checkpoint`. What is
checked: which epoch training resumes at, the warning naming the damaged
files, the error naming the directory, and that no file was deleted.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfk_trainer as tfk
from tfk_trainer.checkpoint import DamagedCheckpointError

ATOL = 1e-6
X = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
Y = (X[:, :2] * 2.0).astype("float32")
STEPS = 4  # per epoch: 64 samples, batch 16


def _model() -> tfk.Model:
    keras.utils.set_random_seed(2)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
    model = tfk.Model(net)
    model.compile("adam", "mse")
    return model


class _Epochs(tfk.callbacks.Callback):
    """Records the epochs trained and the optimizer step each one began at."""

    def __init__(self):
        super().__init__()
        self.begun = []

    def on_epoch_begin(self, epoch, logs=None):
        self.begun.append((epoch, int(self.model.optimizer.iterations.numpy())))


def _fit(model, backup, epochs, delete_checkpoint=True):
    seen = _Epochs()
    model.fit(
        X,
        Y,
        batch_size=16,
        epochs=epochs,
        verbose=0,
        shuffle=False,
        callbacks=[tfk.callbacks.BackupAndRestore(backup, delete_checkpoint=delete_checkpoint), seen],
    )
    return seen.begun


@pytest.fixture(params=["local", "ram"])
def backup(request, tmp_path):
    """A backup directory holding two backups (`ckpt-4` after epoch 1, `ckpt-8` after 2)."""
    root = str(tmp_path) if request.param == "local" else f"ram://damaged-{tmp_path.name}"
    directory = f"{root}/backup"
    _fit(_model(), directory, epochs=2, delete_checkpoint=False)
    names = _files(directory)
    assert {"checkpoint", "ckpt-4.index", "ckpt-8.index"} <= set(names), names
    return directory


def _files(directory):
    return sorted(n.rstrip("/") for n in tf.io.gfile.listdir(directory))


def _data_file(prefix):
    return tf.io.gfile.glob(prefix + ".data-*")[0]


def _rewrite(path, data):
    # TensorFlow's ram:// file system does not truncate on "w": remove first.
    tf.io.gfile.remove(path)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(data)


def _flip_bytes(path):
    with tf.io.gfile.GFile(path, "rb") as f:
        data = bytearray(f.read())
    for i in range(0, len(data), max(1, len(data) // 8)):
        data[i] ^= 0xFF
    _rewrite(path, bytes(data))


def _resume(directory, epochs=3):
    """Fits a fresh model with the backup; returns (epochs begun, warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        begun = _fit(_model(), directory, epochs=epochs, delete_checkpoint=False)
    return begun, [str(w.message) for w in caught if "damaged" in str(w.message)]


def test_intact_backups_resume_from_the_newest(backup):
    begun, damaged = _resume(backup)
    assert begun == [(2, 2 * STEPS)] and damaged == []


def test_missing_index_falls_back_to_the_older_backup(backup):
    tf.io.gfile.remove(f"{backup}/ckpt-8.index")
    before = _files(backup)
    begun, damaged = _resume(backup)
    assert begun[0] == (1, STEPS)  # resumed after epoch 1, not from scratch
    assert len(damaged) == 1 and "ckpt-8.index (missing)" in damaged[0]
    assert "ckpt-8.data-" in damaged[0] and "restored the newest intact checkpoint" in damaged[0]
    assert set(before) <= set(_files(backup)), "a damaged file was deleted"


def test_garbage_state_file_still_finds_the_newest_backup(backup):
    _rewrite(f"{backup}/checkpoint", b"garbage \x00\x01 {{{ not a state file")
    begun, damaged = _resume(backup)
    assert begun[0] == (2, 2 * STEPS)
    assert len(damaged) == 1 and f"{backup}/checkpoint: not a checkpoint state file" in damaged[0]
    kept = [n for n in _files(backup) if n.startswith("checkpoint.damaged-")]
    assert len(kept) == 1, _files(backup)  # the unreadable state file is kept, not overwritten
    with tf.io.gfile.GFile(f"{backup}/{kept[0]}") as f:
        assert f.read().startswith("garbage")


def test_flipped_bytes_in_data_fall_back_to_the_older_backup(backup):
    _flip_bytes(_data_file(f"{backup}/ckpt-8"))
    begun, damaged = _resume(backup)
    assert begun[0] == (1, STEPS)
    assert len(damaged) == 1 and "ckpt-8.data-00000-of-00001" in damaged[0]
    assert "Checksum does not match" in damaged[0] or "checksum" in damaged[0].lower()
    # The resumed run's next backups continue from the restored one, and finish.
    assert tf.train.latest_checkpoint(backup).endswith("ckpt-12")


def test_every_backup_damaged_is_a_clear_error_and_nothing_is_deleted(backup):
    tf.io.gfile.remove(f"{backup}/ckpt-8.index")
    _flip_bytes(_data_file(f"{backup}/ckpt-4"))
    before = _files(backup)
    with pytest.raises(DamagedCheckpointError) as info:
        _fit(_model(), backup, epochs=3)
    message = str(info.value)
    assert f"no intact checkpoint in {backup!r}" in message
    assert "ckpt-8.index (missing)" in message and "ckpt-4.data-00000-of-00001" in message
    assert isinstance(info.value, ValueError)
    assert _files(backup) == before


def test_garbage_state_file_alone_is_an_error_not_a_fresh_start(tmp_path):
    directory = tmp_path / "backup"
    directory.mkdir()
    (directory / "checkpoint").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(DamagedCheckpointError, match=r"no intact checkpoint in '[^']*backup'"):
        _fit(_model(), str(directory), epochs=1)
    assert (directory / "checkpoint").read_bytes() == b"\xff\xfe garbage"


# -- load_checkpoint -------------------------------------------------------------------


@pytest.fixture
def two_checkpoints(tmp_path):
    model = _model()
    model.fit(
        X,
        Y,
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=[
            tfk.callbacks.ModelCheckpoint(str(tmp_path / "ckpt-{epoch}")),
            _Weights(weights := {}),
        ],
    )
    return tmp_path, weights


class _Weights(tfk.callbacks.Callback):
    def __init__(self, store):
        super().__init__()
        self.store = store

    def on_epoch_end(self, epoch, logs=None):
        self.store[epoch + 1] = self.model.get_weights()


def _same(a, b):
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=0, atol=ATOL)


def test_load_checkpoint_directory_skips_a_damaged_newest(two_checkpoints):
    directory, weights = two_checkpoints
    _flip_bytes(_data_file(str(directory / "ckpt-2")))
    restored = _model()
    with pytest.warns(UserWarning, match=r"ckpt-2\.data-00000-of-00001.*Checksum"):
        restored.load_checkpoint(str(directory))
    _same(restored.get_weights(), weights[1])


def test_load_checkpoint_corrupt_prefix_names_the_file_and_keeps_the_cause(two_checkpoints):
    directory, _ = two_checkpoints
    data = _data_file(str(directory / "ckpt-2"))
    _flip_bytes(data)
    with pytest.raises(DamagedCheckpointError) as info:
        _model().load_checkpoint(str(directory / "ckpt-2"))
    assert data in str(info.value) and "cannot be read" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value.__cause__, tf.errors.OpError)  # TensorFlow's, kept
    assert "Checksum does not match" in str(info.value.__cause__)


def test_load_checkpoint_every_one_damaged_names_the_directory(two_checkpoints):
    directory, _ = two_checkpoints
    (directory / "ckpt-2.index").unlink()
    (directory / "ckpt-1.index").unlink()
    with pytest.raises(DamagedCheckpointError, match=r"no intact checkpoint in '[^']*'"):
        _model().load_checkpoint(str(directory))
    assert sorted(p.name for p in directory.iterdir()) == [
        "ckpt-1.checkpoint",
        "ckpt-1.data-00000-of-00001",
        "ckpt-2.checkpoint",
        "ckpt-2.data-00000-of-00001",
    ]
