"""Every public class of `keras.callbacks` in a tfk `fit`: it works, or it is refused
before anything trains with a message naming the tfk callback to use.

`test_every_keras_callback_class_is_covered` fails when Keras adds a class
that neither `keras_compat.KERAS_CALLBACKS` nor `CHECKS` below knows, so a
new callback cannot go untested. Where it is cheap, the effect is compared
with the same callback under `keras.Model.fit` (same initial weights, same
unshuffled batches).
"""

from __future__ import annotations

import contextlib
import csv
import http.server
import io
import json
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest

import tfk_trainer as tfk
from tfk_trainer.callbacks.keras_compat import KERAS_CALLBACKS

N, F, C = 32, 4, 3
_rng = np.random.default_rng(0)
X = _rng.normal(size=(N, F)).astype("float32")
Y = _rng.integers(0, C, N)
ATOL = 1e-5  # float32 training of the same network on the same batches, two engines

PUBLIC_CLASSES = sorted(
    name
    for name in dir(keras.callbacks)
    if isinstance(getattr(keras.callbacks, name), type)
    and issubclass(getattr(keras.callbacks, name), keras.callbacks.Callback)
)


def _net(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((F,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(C)]
    )


def _loss() -> keras.losses.Loss:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _pair(optimizer: Callable[[], keras.optimizers.Optimizer] = lambda: keras.optimizers.SGD(0.1)):
    """(tfk model, keras model) with identical initial weights and compile arguments."""
    ours = tfk.Model(_net())
    ours.compile(optimizer(), _loss(), metrics=["accuracy"])
    theirs = _net()
    theirs.set_weights(ours.network.get_weights())
    theirs.compile(optimizer(), _loss(), metrics=["accuracy"])
    return ours, theirs


def _fit(model, callbacks, epochs: int = 2, **kwargs):
    kwargs.setdefault("batch_size", 8)
    kwargs.setdefault("shuffle", False)
    kwargs.setdefault("verbose", 0)
    return model.fit(X, Y, epochs=epochs, callbacks=callbacks, **kwargs)


class _Recorder(keras.callbacks.Callback):
    """Records the hooks Keras calls, with epoch/batch indices and log keys."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, sorted(logs)))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, sorted(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))


# -- one check per class --------------------------------------------------------------


def check_callback(tmp_path: Path) -> None:
    ours, theirs = _pair()
    a, b = _Recorder(), _Recorder()
    _fit(ours, [a])
    _fit(theirs, [b])
    assert a.calls == b.calls
    assert a.model is ours


def check_callback_list(tmp_path: Path) -> None:
    ours, _ = _pair()
    inner = _Recorder()
    _fit(ours, keras.callbacks.CallbackList([inner]))  # as Keras's fit accepts it
    assert [c[0] for c in inner.calls].count("epoch_end") == 2
    again = _Recorder()
    _fit(ours, [keras.callbacks.CallbackList([again])])  # or inside the list
    assert [c[0] for c in again.calls].count("epoch_end") == 2


def check_csv_logger(tmp_path: Path) -> None:
    ours, theirs = _pair()
    _fit(ours, [keras.callbacks.CSVLogger(str(tmp_path / "ours.csv"))])
    _fit(theirs, [keras.callbacks.CSVLogger(str(tmp_path / "keras.csv"))])
    rows = [list(csv.DictReader(open(tmp_path / f"{n}.csv"))) for n in ("ours", "keras")]
    assert [r.keys() for r in rows[0]] == [r.keys() for r in rows[1]]
    assert [r["epoch"] for r in rows[0]] == ["0", "1"]
    for mine, ref in zip(*rows):
        for key in ("loss", "accuracy"):
            assert abs(float(mine[key]) - float(ref[key])) < ATOL


def check_early_stopping(tmp_path: Path) -> None:
    ours, theirs = _pair(lambda: keras.optimizers.SGD(0.0))  # nothing improves
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=1)
    history = _fit(ours, [stop], epochs=10)
    reference = _fit(theirs, [keras.callbacks.EarlyStopping(monitor="loss", patience=1)], epochs=10)
    assert len(history.history["loss"]) == len(reference.history["loss"]) == 2
    assert stop.stopped_epoch == 1 and ours.stop_training
    # mode="auto" on a compiled metric: Keras finds its direction in its own
    # compiled-metrics container; tfk gives it from the metric object.
    ours, _ = _pair()
    best = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", patience=5, restore_best_weights=True
    )
    _fit(ours, [best], epochs=2, validation_data=(X, Y))
    assert best.mode == "max" and best.best is not None


def check_history(tmp_path: Path) -> None:
    ours, theirs = _pair()
    mine, ref = keras.callbacks.History(), keras.callbacks.History()
    returned = _fit(ours, [mine])
    _fit(theirs, [ref])
    assert mine.epoch == ref.epoch == [0, 1]
    assert sorted(mine.history) == sorted(ref.history) == sorted(returned.history)
    np.testing.assert_allclose(mine.history["loss"], ref.history["loss"], rtol=0, atol=ATOL)


def check_lambda_callback(tmp_path: Path) -> None:
    ours, _ = _pair()
    seen: list[int] = []
    batches: list[int] = []
    callback = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(epoch),
        on_train_batch_end=lambda batch, logs: batches.append(batch),
    )
    _fit(ours, [callback])
    assert seen == [0, 1]
    assert batches == [0, 1, 2, 3] * 2


def check_learning_rate_scheduler(tmp_path: Path) -> None:
    ours, theirs = _pair()

    def schedule(epoch, lr):
        return 0.1 * 0.5**epoch

    history = _fit(ours, [keras.callbacks.LearningRateScheduler(schedule)], epochs=3)
    reference = _fit(theirs, [keras.callbacks.LearningRateScheduler(schedule)], epochs=3)
    assert float(ours.optimizer.learning_rate.numpy()) == pytest.approx(0.025, abs=1e-9)
    np.testing.assert_allclose(
        history.history["learning_rate"], reference.history["learning_rate"], rtol=0, atol=1e-9
    )
    np.testing.assert_allclose(ours.get_weights()[0], theirs.get_weights()[0], rtol=0, atol=ATOL)


def check_model_checkpoint(tmp_path: Path) -> None:
    ours, _ = _pair()
    every_epoch = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "ck-{epoch}.keras"), monitor="loss"
    )
    best = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "best.weights.h5"),
        monitor="val_accuracy",  # mode="auto": "max" from the metric object
        save_best_only=True,
        save_weights_only=True,
    )
    _fit(ours, [every_epoch, best], validation_data=(X, Y))
    assert (tmp_path / "ck-1.keras").exists() and (tmp_path / "ck-2.keras").exists()
    loaded = keras.models.load_model(tmp_path / "ck-2.keras")
    np.testing.assert_allclose(
        loaded.predict(X, verbose=0), ours.predict(X, verbose=0), rtol=0, atol=1e-6
    )
    assert int(loaded.optimizer.iterations.numpy()) == 8  # the optimizer's state is in the file
    assert best.mode == "max" and (tmp_path / "best.weights.h5").exists()
    restored = _net(seed=5)
    restored.load_weights(tmp_path / "best.weights.h5")
    assert restored.get_weights()[0].shape == (F, 8)


def check_progbar_logger(tmp_path: Path) -> None:
    ours, _ = _pair()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        _fit(ours, [keras.callbacks.ProgbarLogger()], verbose=1)
    text = out.getvalue()
    assert text.count("Epoch 1/2") == 1  # Keras's bar replaces tfk's, as in Keras's fit
    assert "Epoch 2/2" in text and "loss" in text


def check_reduce_lr_on_plateau(tmp_path: Path) -> None:
    ours, theirs = _pair(lambda: keras.optimizers.SGD(1e-9))  # a plateau from the start

    def callback():
        return keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0)

    history = _fit(ours, [callback()], epochs=3)
    reference = _fit(theirs, [callback()], epochs=3)
    lr = float(ours.optimizer.learning_rate.numpy())
    assert lr == pytest.approx(float(theirs.optimizer.learning_rate.numpy()), abs=1e-15)
    assert lr < 1e-9
    assert sorted(history.history) == sorted(reference.history)


class _Collector(http.server.BaseHTTPRequestHandler):
    posts: list[dict] = []

    def do_POST(self):  # noqa: N802 - the http.server hook name
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        _Collector.posts.append(json.loads(urllib.parse.parse_qs(body)["data"][0]))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def check_remote_monitor(tmp_path: Path) -> None:
    _Collector.posts = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        ours, _ = _pair()
        monitor = keras.callbacks.RemoteMonitor(root=f"http://127.0.0.1:{server.server_port}")
        history = _fit(ours, [monitor])
    finally:
        server.shutdown()
        server.server_close()
    assert [p["epoch"] for p in _Collector.posts] == [0, 1]
    np.testing.assert_allclose(
        [p["loss"] for p in _Collector.posts], history.history["loss"], rtol=0, atol=1e-7
    )


def check_swap_ema_weights(tmp_path: Path) -> None:
    def ema():
        return keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.9)

    ours, theirs = _pair(ema)
    _fit(ours, [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)], validation_data=(X, Y))
    _fit(theirs, [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)], validation_data=(X, Y))
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)
    # Evaluate with the averages swapped in, as Keras does.
    mine = ours.evaluate(X, Y, verbose=0, callbacks=[keras.callbacks.SwapEMAWeights()])
    ref = theirs.evaluate(X, Y, verbose=0, callbacks=[keras.callbacks.SwapEMAWeights()])
    np.testing.assert_allclose(mine, ref, rtol=0, atol=ATOL)


def check_terminate_on_nan(tmp_path: Path) -> None:
    bad = X.copy()
    bad[9] = np.nan  # batch 1 of epoch 0 (a linear network: a ReLU may turn NaN into 0)
    histories = []
    for model in (
        tfk.Model(keras.Sequential([keras.Input((F,)), keras.layers.Dense(C)])),
        keras.Sequential([keras.Input((F,)), keras.layers.Dense(C)]),
    ):
        model.compile(keras.optimizers.SGD(0.1), _loss())
        histories.append(
            model.fit(
                bad,
                Y,
                batch_size=8,
                epochs=3,
                shuffle=False,
                verbose=0,
                callbacks=[keras.callbacks.TerminateOnNaN()],
            ).history
        )
        assert model.stop_training
    ours, reference = histories
    assert len(ours["loss"]) == len(reference["loss"]) == 1 and np.isnan(ours["loss"][0])


def _refused(name: str) -> Callable[[Path], None]:
    def check(tmp_path: Path) -> None:
        cls = getattr(keras.callbacks, name)
        try:
            callback = {
                "TensorBoard": lambda: cls(log_dir=str(tmp_path / "logs")),
                "BackupAndRestore": lambda: cls(str(tmp_path / "backup")),
            }.get(name, lambda: cls(str(tmp_path / "ckpt")))()
        except ImportError:  # OrbaxCheckpoint needs orbax: an instance without __init__
            callback = cls.__new__(cls)
            keras.callbacks.Callback.__init__(callback)
        ours, _ = _pair()
        ours.predict(X[:2], verbose=0)
        before = ours.get_weights()
        use = KERAS_CALLBACKS[name].split(" or ")[0].replace(".", r"\.")
        with pytest.raises(TypeError, match=rf"keras\.callbacks\.{name} cannot run.*{use}"):
            _fit(ours, [callback])
        assert int(ours.optimizer.iterations.numpy()) == 0  # nothing trained
        for a, b in zip(before, ours.get_weights()):
            np.testing.assert_array_equal(a, b)
        assert list(tmp_path.iterdir()) == []  # nothing written

    return check


CHECKS: dict[str, Callable[[Path], None]] = {
    "Callback": check_callback,
    "CallbackList": check_callback_list,
    "CSVLogger": check_csv_logger,
    "EarlyStopping": check_early_stopping,
    "History": check_history,
    "LambdaCallback": check_lambda_callback,
    "LearningRateScheduler": check_learning_rate_scheduler,
    "ModelCheckpoint": check_model_checkpoint,
    "ProgbarLogger": check_progbar_logger,
    "ReduceLROnPlateau": check_reduce_lr_on_plateau,
    "RemoteMonitor": check_remote_monitor,
    "SwapEMAWeights": check_swap_ema_weights,
    "TerminateOnNaN": check_terminate_on_nan,
    **{name: _refused(name) for name, use in KERAS_CALLBACKS.items() if use != "works"},
}


def test_every_keras_callback_class_is_covered():
    """A class Keras adds must be decided (works / refused) and tested here."""
    assert set(PUBLIC_CLASSES) == set(KERAS_CALLBACKS), (
        "keras.callbacks changed: add the new classes to keras_compat.KERAS_CALLBACKS "
        f"and to CHECKS; unknown: {sorted(set(PUBLIC_CLASSES) - set(KERAS_CALLBACKS))}"
    )
    assert set(CHECKS) == set(KERAS_CALLBACKS)
    assert {n for n, use in KERAS_CALLBACKS.items() if use != "works"} == {
        "BackupAndRestore",
        "OrbaxCheckpoint",
        "TensorBoard",
    }


@pytest.mark.parametrize("name", PUBLIC_CLASSES)
def test_keras_callback(name: str, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    if name not in CHECKS:
        pytest.fail(f"keras.callbacks.{name} is new: decide it in KERAS_CALLBACKS and test it")
    CHECKS[name](tmp_path)


def test_subclass_of_a_refused_keras_callback_is_refused(tmp_path):
    class MyBoard(keras.callbacks.TensorBoard):
        pass

    ours, _ = _pair()
    with pytest.raises(TypeError, match=r"keras\.callbacks\.TensorBoard cannot run"):
        _fit(ours, [MyBoard(log_dir=str(tmp_path / "logs"))])
    assert int(ours.optimizer.iterations.numpy()) == 0
