"""TensorBoard callback: steps are optimizer steps, checked in the event files and
through a real TensorBoard server.

With steps_per_execution=4 and 12 steps per epoch, Keras 3 writes batch
summaries at execution counts 1, 2, 3; these tests pin the true steps 4, 8,
12, ..., and in-model summaries at 1..N rather than all at one step.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfk_trainer as tfk
from tfk_trainer.callbacks import TensorBoard

BATCH = 8
SAMPLES = 96  # 12 steps per epoch
SPE = 4
EPOCHS = 3


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES, 4)).astype("float32")
    y = rng.integers(0, 3, size=(SAMPLES,))
    return x, y


def _model(*layers: keras.layers.Layer, run_eagerly: bool = False) -> tfk.Model:
    net = keras.Sequential(
        [keras.Input((4,)), *layers, keras.layers.Dense(3, activation="softmax")]
    )
    model = tfk.Model(net)
    model.compile(
        optimizer="sgd",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=SPE,
        jit_compile=False,
        run_eagerly=run_eagerly,
    )
    return model


Event = collections.namedtuple("Event", "step value plugin")


def _events(run_dir: Path) -> dict[str, list[Event]]:
    """tag -> events (in file order) for every event file of one run."""
    out: dict[str, list[Event]] = collections.defaultdict(list)
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for v in event.summary.value:
                plugin = v.metadata.plugin_data.plugin_name
                value = tf.make_ndarray(v.tensor) if v.HasField("tensor") else None
                out[v.tag].append(Event(event.step, value, plugin))
    return dict(out)


def _steps(events: dict[str, list[Event]], tag: str) -> list[int]:
    return [e.step for e in events.get(tag, [])]


class SummaryLayer(keras.layers.Layer):
    """Writes the batch mean of its input from inside the traced train function."""

    def call(self, x):
        tf.summary.scalar("activation_mean", tf.reduce_mean(x))
        return x


def _in_model_tag(events: dict[str, list[Event]]) -> str:
    tags = [t for t in events if t.endswith("activation_mean")]
    assert len(tags) == 1, sorted(events)
    return tags[0]


# -- 1. batch and epoch scalars, histograms, rates, graph ------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One fit with batch logging, histograms and rates; shared by the server tests."""
    keras.utils.set_random_seed(1)
    log_dir = tmp_path_factory.mktemp("tb") / "logs"
    x, y = _data()
    model = _model()
    tb = TensorBoard(log_dir, histogram_freq=1, update_freq="batch", write_steps_per_second=True)
    model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=EPOCHS,
        validation_data=(x[:32], y[:32]),
        callbacks=[tb],
        verbose=0,
        shuffle=False,
    )
    tags = [
        v.path.replace("/", "_").replace(":", "_") for v in model.trainable_variables
    ]  # e.g. sequential_dense_kernel
    return log_dir, tags


def test_batch_and_epoch_scalars_at_true_optimizer_steps(trained):
    log_dir, variable_tags = trained
    train = _events(log_dir / "train")
    val = _events(log_dir / "validation")

    assert _steps(train, "epoch_loss") == [0, 1, 2]
    assert _steps(train, "epoch_accuracy") == [0, 1, 2]
    assert _steps(val, "epoch_loss") == [0, 1, 2]
    assert _steps(val, "epoch_accuracy") == [0, 1, 2]
    assert not any(t.startswith("epoch_val") for t in list(train) + list(val))

    # True optimizer steps after each 4-step execution, not execution counts.
    assert _steps(train, "batch_loss") == list(range(4, 37, 4))
    assert _steps(train, "batch_accuracy") == list(range(4, 37, 4))
    # The last execution of an epoch logs the epoch's running mean: the epoch value.
    batch_loss = {e.step: float(e.value) for e in train["batch_loss"]}
    for epoch, event in enumerate(train["epoch_loss"]):
        assert batch_loss[12 * (epoch + 1)] == pytest.approx(float(event.value), rel=1e-5)

    lr = train["epoch_learning_rate"]
    assert [e.step for e in lr] == [0, 1, 2]
    assert all(float(e.value) == pytest.approx(0.01) for e in lr)  # SGD's default

    # Rates: none for the first execution (tracing), then after every execution.
    assert _steps(train, "batch_steps_per_second") == list(range(8, 37, 4))
    assert all(float(e.value) > 0 for e in train["batch_steps_per_second"])
    assert _steps(train, "epoch_steps_per_second") == [0, 1, 2]
    # fit passes its batch size (8) in params: examples/s = steps/s * 8.
    assert _steps(train, "batch_examples_per_second") == list(range(8, 37, 4))
    for steps_event, examples_event in zip(
        train["batch_steps_per_second"], train["batch_examples_per_second"]
    ):
        assert float(examples_event.value) == pytest.approx(8 * float(steps_event.value), rel=1e-5)

    assert len(variable_tags) == 2
    for tag in variable_tags:
        assert _steps(train, tag) == [0, 1, 2], sorted(train)
        plugins = {e.plugin for e in train[tag]} - {""}
        assert plugins == {"histograms"}

    # The graph of the train function, written once.
    assert _steps(train, "train_function") == [0]

    # Only train and validation runs; the previous summary state is restored.
    assert sorted(p.name for p in log_dir.iterdir()) == ["train", "validation"]
    assert tf.summary.experimental.get_step() is None


def test_update_freq_int_counts_optimizer_steps(tmp_path):
    """update_freq=6 with 4-step executions: the engine ends executions on multiples
    of 6 (4, 2, 4, 2 steps per epoch), so scalars land exactly at 6, 12, 18, ..."""
    x, y = _data()
    model = _model(SummaryLayer())
    tb = TensorBoard(tmp_path, update_freq=6, write_graph=False)
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, callbacks=[tb], verbose=0)
    train = _events(tmp_path / "train")
    assert _steps(train, "batch_loss") == [6, 12, 18, 24, 30, 36]
    assert _steps(train, "epoch_loss") == [0, 1, 2]
    assert "train_function" not in train
    # In-model summaries record on the steps that are multiples of 6.
    assert _steps(train, _in_model_tag(train)) == [6, 12, 18, 24, 30, 36]
    assert not (tmp_path / "validation").exists()


def test_update_freq_longer_than_an_execution_writes_at_exact_multiples(tmp_path):
    """update_freq=50 with steps_per_execution=16 and 80-step epochs: writes at 50,
    100, 150 (not at the end of the execution that crossed them: 64, 112, 160), and
    training is the same steps as without the callback."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(160, 4)).astype("float32")
    y = rng.integers(0, 3, size=(160,))

    def fit(callbacks):
        keras.utils.set_random_seed(0)
        model = _model()
        model.compile(
            optimizer="sgd",
            loss="sparse_categorical_crossentropy",
            steps_per_execution=16,
            jit_compile=False,
        )
        seen = []
        marker = tfk.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: seen.append(
                int(model.optimizer.iterations.numpy())
            )
        )
        history = model.fit(
            x, y, batch_size=2, epochs=2, shuffle=False, callbacks=[*callbacks, marker], verbose=0
        )
        return model, history.history["loss"], seen

    model, losses, seen = fit([TensorBoard(tmp_path, update_freq=50, write_graph=False)])
    assert _steps(_events(tmp_path / "train"), "batch_loss") == [50, 100, 150]
    # Executions end at 16, 32, 48, 50, 66, 80 (the epoch), 96, 100, 116, ...
    assert seen == [16, 32, 48, 50, 66, 80, 96, 100, 116, 132, 148, 150, 160]
    assert int(model.optimizer.iterations.numpy()) == 160
    reference, reference_losses, reference_seen = fit([])
    assert reference_seen == [16, 32, 48, 64, 80, 96, 112, 128, 144, 160]
    np.testing.assert_allclose(losses, reference_losses, rtol=0, atol=1e-6)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_cut_at_intervals_and_declared_intervals(tmp_path):
    from tfk_trainer.callbacks.base import CallbackList
    from tfk_trainer.engine.tuning import cut_at_intervals

    assert cut_at_intervals(16, 48, [50]) == 2
    assert cut_at_intervals(16, 50, [50]) == 16  # on a multiple: up to the next one
    assert cut_at_intervals(16, 0, [6, 10]) == 6
    assert cut_at_intervals(16, 6, [6, 10]) == 4
    assert cut_at_intervals(3, 0, [50]) == 3
    callbacks = CallbackList(
        [
            TensorBoard(tmp_path, update_freq=50),
            TensorBoard(tmp_path, update_freq="batch"),  # 1: every execution anyway
            TensorBoard(tmp_path),  # "epoch": no interval
        ],
        model=None,
        params={},
    )
    assert callbacks.step_intervals() == [50]


def test_epoch_axis_step_writes_epoch_scalars_at_the_optimizer_step(tmp_path):
    x, y = _data()
    model = _model()
    tb = TensorBoard(tmp_path, epoch_axis="step", histogram_freq=1, write_graph=False)
    model.fit(
        x, y, batch_size=BATCH, epochs=2, callbacks=[tb], verbose=0, validation_data=(x, y)
    )
    train, validation = _events(tmp_path / "train"), _events(tmp_path / "validation")
    assert _steps(train, "epoch_loss") == [12, 24]
    assert _steps(validation, "epoch_loss") == [12, 24]
    histograms = [t for t, events in train.items() if events[0].plugin == "histograms"]
    assert histograms and all(_steps(train, t) == [12, 24] for t in histograms)
    with pytest.raises(ValueError, match="epoch_axis.*received 'global'"):
        TensorBoard(tmp_path, epoch_axis="global")


# -- 2. summaries inside the model -----------------------------------------


def test_in_model_summary_lands_at_each_step(tmp_path):
    x, y = _data()
    model = _model(SummaryLayer())
    tb = TensorBoard(tmp_path, update_freq="batch", write_graph=False)
    model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=2,
        callbacks=[tb],
        verbose=0,
        shuffle=False,
        validation_data=(x[:16], y[:16]),
    )
    train = _events(tmp_path / "train")
    events = train[_in_model_tag(train)]
    # One value per optimizer step, 1..24, from one traced function; none from
    # the validation steps.
    assert [e.step for e in events] == list(range(1, 25))
    # Step k of an epoch saw batch k of the unshuffled data.
    for e in events:
        k = (e.step - 1) % 12
        assert float(e.value) == pytest.approx(
            float(x[k * BATCH : (k + 1) * BATCH].mean()), abs=1e-5
        )
    assert not any(t.endswith("activation_mean") for t in _events(tmp_path / "validation"))

    # A second fit with the same callback reuses the traced function and keeps counting.
    model.fit(x, y, batch_size=BATCH, epochs=3, initial_epoch=2, callbacks=[tb], verbose=0)
    assert _steps(_events(tmp_path / "train"), _in_model_tag(train)) == list(range(1, 37))
    # A fit without it writes nothing more (the function still holds the writer).
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert len(_events(tmp_path / "train")[_in_model_tag(train)]) == 36
    assert tf.summary.experimental.get_step() is None


def test_update_freq_epoch_writes_no_batch_or_in_model_summaries(tmp_path):
    x, y = _data()
    model = _model(SummaryLayer())
    model.fit(x, y, batch_size=BATCH, epochs=1, callbacks=[TensorBoard(tmp_path)], verbose=0)
    train = _events(tmp_path / "train")
    assert _steps(train, "epoch_loss") == [0]
    assert not [t for t in train if t.startswith("batch_") or t.endswith("activation_mean")]
    assert _steps(train, "train_function") == [0]


def test_only_the_chief_writes(tmp_path, monkeypatch):
    import tfk_trainer.callbacks.tensorboard as tensorboard_module

    monkeypatch.setattr(tensorboard_module.distribute, "is_chief", lambda strategy=None: False)
    x, y = _data()
    model = _model(SummaryLayer())
    tb = TensorBoard(tmp_path / "logs", update_freq="batch", histogram_freq=1, profile_batch=1)
    model.fit(x, y, batch_size=BATCH, epochs=1, callbacks=[tb], verbose=0)
    model.evaluate(x, y, callbacks=[tb], verbose=0)
    assert not (tmp_path / "logs").exists()


def test_constructor_checks():
    with pytest.raises(ValueError, match="update_freq"):
        TensorBoard(update_freq=0)
    with pytest.raises(ValueError, match="update_freq"):
        TensorBoard(update_freq="steps")
    with pytest.raises(ValueError, match="profile_batch"):
        TensorBoard(profile_batch=(5, 2))
    with pytest.raises(ValueError, match="histogram_freq"):
        TensorBoard(histogram_freq=-1)
    with pytest.warns(UserWarning, match="embedding"):
        TensorBoard(embeddings_freq=1)
    assert TensorBoard(profile_batch="3,7")._profile_start == 3


# -- 3. profiler and evaluate ----------------------------------------------


def test_profile_batch_writes_a_profile_and_stops_the_profiler(tmp_path):
    x, y = _data()
    model = _model()
    tb = TensorBoard(tmp_path, profile_batch=(2, 3), write_graph=False)
    model.fit(x, y, batch_size=BATCH, epochs=1, callbacks=[tb], verbose=0)
    profiles = list((tmp_path / "train" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert profiles, list(tmp_path.rglob("*"))
    # Nothing is left running: another profiler can start and stop.
    tf.profiler.experimental.start(str(tmp_path / "after"))
    tf.profiler.experimental.stop()


def test_a_fit_that_raises_inside_the_profile_window_stops_the_profiler(tmp_path):
    """on_train_end does not run when fit raises (as in Keras); the profiler is still
    stopped then, not left on to block every later profiler in the process."""

    class Boom(tfk.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch >= 2:  # batch ends come per execution: the first at or after 2
                raise RuntimeError("boom at batch 2")

    x, y = _data()
    model = _model()
    tb = TensorBoard(tmp_path, profile_batch=(1, 6), write_graph=False)
    with pytest.raises(RuntimeError, match="boom at batch 2"):
        model.fit(x, y, batch_size=BATCH, epochs=1, callbacks=[tb, Boom()], verbose=0)
    assert not tb._profiling
    tf.profiler.experimental.start(str(tmp_path / "after"))
    tf.profiler.experimental.stop()
    # The callback still works for the next fit.
    model.fit(x, y, batch_size=BATCH, epochs=1, callbacks=[tb], verbose=0)
    assert _steps(_events(tmp_path / "train"), "epoch_loss") == [0]


def test_evaluate_alone_logs_against_optimizer_iterations(tmp_path):
    x, y = _data()
    model = _model()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)  # iterations = 12
    results = model.evaluate(x, y, batch_size=BATCH, callbacks=[TensorBoard(tmp_path)], verbose=0)
    val = _events(tmp_path / "validation")
    assert _steps(val, "evaluation_loss_vs_iterations") == [12]
    assert _steps(val, "evaluation_accuracy_vs_iterations") == [12]
    assert float(val["evaluation_loss_vs_iterations"][0].value) == pytest.approx(
        results[0], rel=1e-5
    )
    assert not (tmp_path / "train").exists()


# -- 4. a real TensorBoard server ------------------------------------------


@contextlib.contextmanager
def _tensorboard_server(log_dir: Path, out_dir: Path):
    """A `tensorboard` process serving log_dir; killed (its process group) on exit."""
    import portpicker

    binary = Path(sys.executable).parent / "tensorboard"
    if not binary.exists():
        pytest.skip(f"no tensorboard executable next to {sys.executable}")
    port = portpicker.pick_unused_port()
    out = open(out_dir / "tensorboard.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [str(binary), "--logdir", str(log_dir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"tensorboard exited with {process.returncode}: "
                    + (out_dir / "tensorboard.log").read_text()[-2000:]
                )
            try:
                with urllib.request.urlopen(base + "/data/runs", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("tensorboard did not answer /data/runs within 60 s")
            time.sleep(0.3)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        out.close()


def _get_json(base: str, path: str, **query: str):
    url = base + path + ("?" + urllib.parse.urlencode(query) if query else "")
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200, url
        return json.loads(r.read())


def _wait_for(fetch, ready, timeout: float = 60.0):
    """Polls `fetch()` until `ready(result)`: the server loads event files lazily."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if ready(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


@pytest.mark.timeout(180)
def test_real_tensorboard_server_serves_the_logs(trained, tmp_path):
    log_dir, variable_tags = trained
    with _tensorboard_server(log_dir, tmp_path) as base:
        tags = _wait_for(
            lambda: _get_json(base, "/data/plugin/scalars/tags"),
            lambda t: (
                "batch_loss" in t.get("train", {}) and "epoch_loss" in t.get("validation", {})
            ),
        )
        assert {"batch_loss", "epoch_loss", "epoch_learning_rate", "epoch_accuracy"} <= set(
            tags["train"]
        )
        assert {"epoch_loss", "epoch_accuracy"} <= set(tags["validation"])
        assert sorted(_get_json(base, "/data/runs")) == ["train", "validation"]

        batch = _get_json(base, "/data/plugin/scalars/scalars", run="train", tag="batch_loss")
        assert [step for _, step, _ in batch] == list(range(4, 37, 4))
        for run in ("train", "validation"):
            epoch = _get_json(base, "/data/plugin/scalars/scalars", run=run, tag="epoch_loss")
            assert [step for _, step, _ in epoch] == [0, 1, 2]
            assert all(np.isfinite(v) and v > 0 for _, _, v in epoch)
        lr = _get_json(base, "/data/plugin/scalars/scalars", run="train", tag="epoch_learning_rate")
        assert [round(v, 6) for _, _, v in lr] == [0.01] * 3

        hist_tags = _get_json(base, "/data/plugin/histograms/tags")
        assert set(variable_tags) <= set(hist_tags["train"])
        hist = _get_json(
            base, "/data/plugin/histograms/histograms", run="train", tag=variable_tags[0]
        )
        assert [step for _, step, _ in hist] == [0, 1, 2]
        assert all(len(buckets) > 0 for _, _, buckets in hist)


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.timeout(180)
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="no /usr/bin/chromium")
def test_scalars_page_screenshot(trained, tmp_path):
    log_dir, _ = trained
    with _tensorboard_server(log_dir, tmp_path) as base:
        _wait_for(
            lambda: _get_json(base, "/data/plugin/scalars/tags"),
            lambda t: "batch_loss" in t.get("train", {}),
        )
        png = tmp_path / "scalars.png"
        profile = tmp_path / "chromium-profile"
        command = [
            CHROMIUM,
            "--headless",
            f"--screenshot={png}",
            "--window-size=1600,1000",
            "--virtual-time-budget=20000",
            "--run-all-compositor-stages-before-draw",
            "--enable-unsafe-swiftshader",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            base + "/#scalars",
        ]
        browser = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd=tmp_path,
        )
        try:
            browser.wait(timeout=90)
        finally:
            if browser.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(browser.pid, signal.SIGKILL)
                browser.wait(timeout=10)
            shutil.rmtree(profile, ignore_errors=True)
    assert png.exists(), "chromium wrote no screenshot"
    assert png.stat().st_size > 10_000
