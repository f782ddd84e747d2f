"""Strategy resolution, multi-replica exactness, and a real 2-worker cluster on 127.0.0.1."""

import json
import os
import subprocess
import sys
import time

import cluster_helpers
import keras
import numpy as np
import portpicker
import pytest
import tensorflow as tf
from tolerances import ATOL

import tfk_trainer as tfk

WORKER = os.path.join(os.path.dirname(__file__), "workers", "mwms_fit.py")


def test_resolve_default_one_device_mirrored_and_auto():
    assert tfk.distribute.resolve("default") is tf.distribute.get_strategy()
    assert tfk.distribute.resolve("off") is tf.distribute.get_strategy()
    assert isinstance(tfk.distribute.resolve("one_device"), tf.distribute.OneDeviceStrategy)
    assert isinstance(
        tfk.distribute.resolve("one_device", devices=["/cpu:1"]), tf.distribute.OneDeviceStrategy
    )
    mirrored = tfk.distribute.resolve("mirrored", devices=["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    # CPU only, no TPU: "auto" is the default strategy.
    assert tfk.distribute.resolve("auto") is tf.distribute.get_strategy()
    with pytest.raises(ValueError, match="Unknown strategy 'gpus'"):
        tfk.distribute.resolve("gpus")
    with pytest.raises(ValueError, match="communication"):
        tfk.distribute.resolve("multi_worker_mirrored", communication="carrier-pigeon")


@pytest.mark.timeout(60)
def test_resolve_tpu_without_a_tpu_fails_fast_and_clearly():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="No TPU found"):
        tfk.distribute.resolve("tpu", tpu="local")
    # A grpc address nobody listens on: probed, never connected to (that hangs).
    port = portpicker.pick_unused_port()
    with pytest.raises(RuntimeError, match="No TPU answers"):
        tfk.distribute.resolve("tpu", tpu=f"grpc://127.0.0.1:{port}", connect_timeout=2)
    assert time.monotonic() - start < 30


def test_is_chief_without_a_cluster():
    assert tfk.distribute.is_chief()
    assert not tfk.distribute.is_multi_worker()


def test_strategy_predicates(mirrored_strategy):
    d = tfk.distribute
    default = tf.distribute.get_strategy()
    assert (d.num_replicas(default), d.is_multi_replica(default), d.is_tpu(default)) == (
        1,
        False,
        False,
    )
    assert d.replica_devices(default) == () and d.cpu_replicas(default)
    two = mirrored_strategy(2)
    assert (d.num_replicas(two), d.is_multi_replica(two), d.is_multi_worker(two)) == (
        2,
        True,
        False,
    )
    assert len(d.replica_devices(two)) == 2 and d.cpu_replicas(two)
    with two.scope():  # `None`: the strategy in scope
        assert d.num_replicas() == 2 and d.is_chief()


def test_only_distribute_inspects_strategies():
    """One rule per fact: every other module asks `tfk_trainer.distribute`."""
    import pathlib

    package = pathlib.Path(tfk.__file__).parent
    owners = {"distribute.py", "compat.py"}
    markers = ('"TPUStrategy', "_in_multi_worker_mode", "worker_devices", "cluster_resolver")
    offenders = [
        f"{path.relative_to(package)}: {marker}"
        for path in package.rglob("*.py")
        if path.name not in owners
        for marker in markers
        if marker in path.read_text()
    ]
    assert offenders == []


def _net(seed=3):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(2, activation="sigmoid"),
        ]
    )


def test_four_replicas_fit_evaluate_predict_and_auc_equal_one_device(mirrored_strategy):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(203, 5)).astype("float32")
    y = (rng.uniform(size=(203, 2)) > 0.5).astype("float32")

    def run(strategy):
        scope = strategy.scope() if strategy else tf.distribute.get_strategy().scope()
        with scope:
            model = tfk.Model(_net())
            model.compile(
                "adam",
                "binary_crossentropy",
                metrics=[keras.metrics.AUC(name="auc"), keras.metrics.Precision(name="precision")],
                steps_per_execution=3,
            )
        history = model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history
        evaluation = model.evaluate(x, y, batch_size=32, return_dict=True, verbose=0)
        return model, history, evaluation, model.predict(x, batch_size=32, verbose=0)

    single = run(None)
    four = run(mirrored_strategy(4))
    for key in single[1]:
        np.testing.assert_allclose(four[1][key], single[1][key], rtol=1e-5, atol=1e-6, err_msg=key)
    for key in single[2]:
        np.testing.assert_allclose(four[2][key], single[2][key], rtol=1e-5, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(four[3], single[3], rtol=1e-5, atol=1e-6)  # order kept
    for a, b in zip(single[0].get_weights(), four[0].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows", [65, 66])  # a last batch of 1 or 2 rows for 4 replicas
def test_last_batch_smaller_than_the_replica_count(mirrored_strategy, rows):
    """Exact executions read the last batch directly; with fewer rows than replicas
    some replicas get none, and the numbers still equal one device's."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(rows, 5)).astype("float32")
    y = (rng.uniform(size=(rows, 2)) > 0.5).astype("float32")

    def run(strategy):
        with strategy.scope():
            model = tfk.Model(_net())
            model.compile("sgd", "binary_crossentropy", metrics=["mae"], steps_per_execution=2)
        history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
        evaluation = model.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
        single = model.train_on_batch(x[:1], y[:1], return_dict=True)
        return history, evaluation, model.predict(x, batch_size=16, verbose=0), single

    one, four = run(tf.distribute.get_strategy()), run(mirrored_strategy(4))
    for a, b in zip(one[:2] + one[3:], four[:2] + four[3:]):
        for key in a:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert four[2].shape == (rows, 2)
    np.testing.assert_allclose(four[2], one[2], rtol=1e-5, atol=1e-6)


@pytest.mark.timeout(300)
def test_two_worker_cluster_matches_one_process(tmp_path):
    procs = cluster_helpers.launch(WORKER, [str(tmp_path)], tmp_path)
    single_env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    single = subprocess.run(
        [sys.executable, WORKER, str(tmp_path), "single"],
        env=single_env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    cluster_helpers.finish(procs, tmp_path, timeout=240)

    reference = np.load(tmp_path / "result_single.npz")
    workers = [np.load(tmp_path / f"result_{i}.npz") for i in range(2)]
    assert bool(workers[0]["is_chief"]) and not bool(workers[1]["is_chief"])
    weight_keys = [k for k in reference.files if k.startswith("arr_")]
    for key in weight_keys:
        np.testing.assert_array_equal(workers[0][key], workers[1][key])  # identical on both workers
        np.testing.assert_allclose(workers[0][key], reference[key], rtol=1e-5, atol=1e-6)
    for key in ("loss", "accuracy", "eval_loss", "eval_top2", "predictions"):
        np.testing.assert_allclose(workers[0][key], workers[1][key], rtol=1e-6, err_msg=key, atol=ATOL)
        np.testing.assert_allclose(
            workers[0][key], reference[key], rtol=1e-5, atol=1e-6, err_msg=key
        )
    assert workers[0]["predictions"].shape == (100, 3)

    # Only the chief wrote checkpoints, backups, logs and the export.
    chief, other = tmp_path / "worker_0", tmp_path / "worker_1"
    for name in ("logs", "checkpoints", "backup", "export"):
        assert (chief / name).exists() and any((chief / name).iterdir()), name
    written = [p for p in other.rglob("*") if p.is_file()] if other.exists() else []
    assert not written, written


@pytest.mark.timeout(400)
def test_killed_worker_fails_fast_and_the_cluster_resumes_from_backup(tmp_path):
    worker = os.path.join(os.path.dirname(__file__), "workers", "mwms_slow_fit.py")

    def launch():
        ports = [portpicker.pick_unused_port() for _ in range(2)]
        cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
        procs = []
        for index in range(2):
            env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
            env["TF_CONFIG"] = json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, worker, str(tmp_path)],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        return procs

    procs = launch()
    deadline = time.monotonic() + 200
    while not (tmp_path / "running1").exists():
        assert time.monotonic() < deadline and procs[1].poll() is None, "cluster never started"
        time.sleep(0.1)
    procs[1].kill()
    killed_at = time.monotonic()
    out, _ = procs[0].communicate(timeout=120)  # must not hang
    assert time.monotonic() - killed_at < 90
    assert procs[0].returncode == 3, out[-3000:]
    assert "worker of the cluster is unavailable" in out
    procs[1].communicate()
    assert tf.train.latest_checkpoint(str(tmp_path / "backup"))

    for name in ("running0", "running1"):
        (tmp_path / name).unlink(missing_ok=True)
    procs = launch()
    outs = [p.communicate(timeout=240)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
        assert "DONE iterations=48" in out  # 3 epochs x 16 steps, resumed, none repeated
