"""Preemption: SIGTERM to any one worker saves the same step everywhere and exits 143.

The single-process tests check `PreemptionGuard` (tfk_trainer/preemption.py)
and `BackupAndRestore`'s use of it; the cluster tests start a two-worker
loopback `MultiWorkerMirroredStrategy` cluster (tests/workers/mwms_preempt.py),
send SIGTERM to one worker mid-training, and restart the cluster with the
same command: it must end with the weights of an uninterrupted run.
"""

import os
import re
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf
from cluster_helpers import launch, log_path, wait, wait_for_file
from tolerances import ATOL, RTOL

import tfk_trainer as tfk
from tfk_trainer import preemption

WORKER = os.path.join(os.path.dirname(__file__), "workers", "mwms_preempt.py")


@pytest.fixture
def sigterm_recorder():
    """A Python SIGTERM handler that records calls; the original one is put back after."""
    calls = []
    original = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    yield calls
    signal.signal(signal.SIGTERM, original)


# -- the guard, in one process ------------------------------------------------------


def test_guard_on_one_worker_acts_on_its_own_flag_without_a_collective(sigterm_recorder):
    acted = []
    guard = preemption.PreemptionGuard(tf.distribute.get_strategy(), acted.append)
    guard.install()
    assert not guard.agreed()
    guard.at_boundary()
    assert acted == []
    os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next bytecode
    assert guard.signalled and guard.agreed()
    guard.at_boundary()
    assert acted == [True]
    # Acted on: the previous handler is back and the SIGTERM is not delivered again.
    assert sigterm_recorder == []
    os.kill(os.getpid(), signal.SIGTERM)
    assert sigterm_recorder == [signal.SIGTERM]


def test_a_sigterm_not_acted_on_goes_to_the_previous_handler(sigterm_recorder):
    guard = preemption.PreemptionGuard(tf.distribute.get_strategy(), lambda signalled: None)
    guard.install()
    os.kill(os.getpid(), signal.SIGTERM)
    assert sigterm_recorder == []  # caught by the guard
    guard.uninstall()  # e.g. fit ended after the last boundary
    assert sigterm_recorder == [signal.SIGTERM]  # never lost
    guard.uninstall()  # twice: nothing more
    assert sigterm_recorder == [signal.SIGTERM]


def test_the_agreement_function_sums_the_flag_over_replicas(mirrored_strategy):
    strategy = mirrored_strategy(2)
    any_flag = preemption._any_flag_function(strategy)
    assert any_flag is preemption._any_flag_function(strategy)  # traced once per strategy
    assert float(any_flag(tf.constant(1.0)).numpy()) == 2.0
    assert float(any_flag(tf.constant(0.0)).numpy()) == 0.0


# -- BackupAndRestore in one process ------------------------------------------------


def _model():
    keras.utils.set_random_seed(3)
    model = tfk.Model(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, "relu"), keras.layers.Dense(1)])
    )
    model.compile(keras.optimizers.Adam(0.01), "mse")
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


class _SigtermAt(tfk.callbacks.Callback):
    """Sends this process SIGTERM at one hook (`where`), at optimizer step `step`."""

    def __init__(self, where: str, step: int):
        super().__init__()
        self.where, self.step = where, step

    def _maybe(self, where):
        if where == self.where and int(self.model.optimizer.iterations.numpy()) == self.step:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_train_batch_end(self, batch, logs=None):
        self._maybe("batch")

    def on_epoch_end(self, epoch, logs=None):
        self._maybe("epoch")

    def on_train_end(self, logs=None):
        self._maybe("train_end")


@pytest.mark.parametrize("where, step", [("batch", 5), ("epoch", 16)])
def test_sigterm_saves_once_exits_143_and_the_resume_matches(where, step, sigterm_recorder):
    x, y = _data()
    reference = _model()
    reference.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)

    backup = f"ram://preempt_{where}/backup"
    model = _model()
    with pytest.raises(tfk.callbacks.Preempted) as info:
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=3,
            shuffle=False,
            verbose=0,
            callbacks=[_SigtermAt(where, step), tfk.callbacks.BackupAndRestore(backup)],
        )
    assert info.value.code == tfk.callbacks.PREEMPTED_EXIT_CODE == 143
    assert f"optimizer step {step}" in str(info.value) and "SIGTERM received" in str(info.value)
    assert tf.train.latest_checkpoint(backup).endswith(f"ckpt-{step}")
    # An epoch-end SIGTERM does not write the epoch's backup twice.
    assert len(tf.io.gfile.glob(f"{backup}/ckpt-{step}.index")) == 1
    assert sigterm_recorder == []  # acted on, not handed on

    resumed = _model()
    history = resumed.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[tfk.callbacks.BackupAndRestore(backup)],
    )
    first_epoch = step // 8 if where == "batch" else 2
    assert history.epoch == list(range(first_epoch, 3))
    assert int(resumed.optimizer.iterations.numpy()) == 24
    for got, want in zip(resumed.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    assert not tf.io.gfile.exists(backup)  # a finished run's backup is deleted


def test_a_sigterm_after_the_last_boundary_goes_to_the_handler_from_before_fit(
    sigterm_recorder,
):
    x, y = _data()
    backup = "ram://preempt_end/backup"
    model = _model()
    # The SIGTERM comes in on_train_end, before BackupAndRestore's: fit is over, nothing
    # more to save; the handler that was there before fit gets it.
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=1,
        verbose=0,
        callbacks=[_SigtermAt("train_end", 8), tfk.callbacks.BackupAndRestore(backup)],
    )
    assert sigterm_recorder == [signal.SIGTERM]


def test_save_before_preemption_is_accepted_as_true_only():
    callback = tfk.callbacks.BackupAndRestore("ram://x", save_before_preemption=True)
    assert callback.save_before_preemption is True
    with pytest.raises(ValueError, match="save_before_preemption.*received False"):
        tfk.callbacks.BackupAndRestore("ram://x", save_before_preemption=False)


# -- a two-worker loopback cluster ---------------------------------------------------


def _run_to_end(work, tag=""):
    procs = launch(WORKER, [str(work)], work, tag=tag)
    codes = wait(procs, timeout=400)
    logs = [log_path(work, i, tag).read_text() for i in range(2)]
    for code, text in zip(codes, logs):
        assert code == 0, text[-4000:]
        assert "DONE iterations=64" in text  # 4 epochs x 16 steps, none repeated
    return [np.load(work / f"result_{i}.npz") for i in range(2)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    results = _run_to_end(tmp_path_factory.mktemp("uninterrupted"))
    return [results[0][k] for k in results[0].files]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("victim", [1, 0], ids=["worker1", "chief"])
def test_sigterm_to_one_worker_saves_the_same_step_on_all_and_the_cluster_resumes(
    tmp_path, victim, uninterrupted
):
    procs = launch(WORKER, [str(tmp_path)], tmp_path, tag="_first")
    wait_for_file(tmp_path / f"running{victim}", procs, timeout=400)
    procs[victim].send_signal(signal.SIGTERM)
    codes = wait(procs, timeout=300)
    logs = [log_path(tmp_path, i, "_first").read_text() for i in range(2)]
    for code, text in zip(codes, logs):
        assert code == 143, text[-4000:]  # both, not only the signalled one
    steps = [int(re.search(r"backup saved .* \(optimizer step (\d+)\)", t).group(1)) for t in logs]
    assert steps[0] == steps[1] >= 20, steps  # the same step, after the first epoch's backup
    assert "SIGTERM received: backup saved" in logs[victim]
    assert "another worker of the cluster received SIGTERM" in logs[1 - victim]
    backup = tmp_path / "backup"
    assert tf.train.latest_checkpoint(str(backup)).endswith(f"ckpt-{steps[0]}")

    for index in range(2):
        (tmp_path / f"running{index}").unlink(missing_ok=True)
    results = _run_to_end(tmp_path, tag="_resumed")
    for result in results:
        weights = [result[k] for k in result.files]
        assert len(weights) == len(uninterrupted)
        for got, want in zip(weights, uninterrupted):
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    assert not backup.exists()  # the finished run deleted its backup
