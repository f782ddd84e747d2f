"""The training binary (tools/train.py, console script tfk-train), run as a subprocess.

Small configs written to tmp_path: the synthetic dataset (tiny) and a subset of the
real Fashion-MNIST. Nothing here touches the network (TFDS runs under
tfds.testing.mock_data, and is skipped when tensorflow_datasets is not installed).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from binary_helpers import ENV, REPO, TRAIN, assert_failed_before_running, write_config
from tolerances import ATOL

from tfk_trainer.datasets import fashion_mnist

PREEMPTED = 143

pytestmark = pytest.mark.timeout(300)

SYNTHETIC = """
    config = base_config(model="mlp", data="synthetic")
    config.model.hidden_units = (16,)
    config.data.input_shape = (8, 8)
    config.data.num_classes = 4
    config.data.num_train = 256
    config.data.num_test = 64
    config.train.epochs = 2
    config.train.batch_size = 32
    config.train.steps_per_execution = 2
    config.eval.batch_size = 64
"""

FASHION_MNIST = """
    config = base_config(model="mlp", data="fashion_mnist")
    config.model.hidden_units = (64,)
    config.data.max_train_samples = 3000
    config.data.max_test_samples = 500
    config.train.epochs = 1
    config.train.batch_size = 64
    config.train.steps_per_execution = 8
    config.eval.min_accuracy = 0.6
"""


def _fashion_mnist_present() -> bool:
    try:
        folder = os.environ.get(fashion_mnist.ENV_VAR) or fashion_mnist.DEFAULT_SEARCH_DIRS[0]
        return all(os.path.isfile(os.path.join(folder, f)) for f in fashion_mnist.FILES.values())
    except Exception:  # noqa: BLE001
        return False


def start(config: Path, model_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, TRAIN, f"--config={config}", f"--model_dir={model_dir}", *args],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run(config: Path, model_dir: Path, *args: str, timeout: float = 180) -> tuple[int, str]:
    proc = start(config, model_dir, *args)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def ok(config: Path, model_dir: Path, *args: str) -> str:
    rc, out = run(config, model_dir, *args)
    assert rc == 0, out[-4000:]
    return out


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


# -- every mode ----------------------------------------------------------------


@pytest.mark.parametrize(
    "dataset",
    [
        "synthetic",
        pytest.param(
            "fashion_mnist",
            marks=pytest.mark.skipif(
                not _fashion_mnist_present(), reason="Fashion-MNIST files not installed"
            ),
        ),
    ],
)
def test_every_mode(tmp_path, dataset):
    body = SYNTHETIC if dataset == "synthetic" else FASHION_MNIST
    config = write_config(tmp_path / "config.py", body)
    model_dir = tmp_path / "run"

    out = ok(config, model_dir, "--mode=train_and_evaluate")
    assert "tfk-train summary" in out
    assert "val_loss" in out  # the per-epoch line
    summary = load_json(model_dir / "summary.json")
    x_shape = (8, 8) if dataset == "synthetic" else (28, 28)
    n_train = 256 if dataset == "synthetic" else 3000
    batch = 32 if dataset == "synthetic" else 64
    epochs = 2 if dataset == "synthetic" else 1
    steps = epochs * -(-int(n_train * 0.9) // batch)
    assert summary["global_step"] == steps
    assert summary["epochs_run"] == epochs
    assert set(summary["test"]) == {"accuracy", "loss"}
    if dataset == "fashion_mnist":
        assert summary["test_accuracy"] >= 0.6 and summary["passed"]
        assert "PASSED" in out
    resolved = load_json(model_dir / "config.json")
    assert resolved["train"]["epochs"] == epochs and resolved["model"]["name"] == "mlp"
    assert (model_dir / "checkpoints" / "checkpoint").exists()
    assert (model_dir / "checkpoints" / f"ckpt-{steps}.index").exists()
    assert list((model_dir / "logs" / "train").glob("events.out.tfevents.*"))
    assert (model_dir / "export" / "saved_model.pb").exists()
    assert not (model_dir / "backup").exists()  # deleted once training completed
    assert load_json(model_dir / "TRAINING_DONE")["global_step"] == steps

    # evaluate, predict and export read the checkpoint and write different files: run
    # them side by side to keep the suite short.
    before = (model_dir / "export" / "saved_model.pb").stat().st_mtime_ns
    procs = {m: start(config, model_dir, f"--mode={m}") for m in ("evaluate", "predict", "export")}
    for mode, proc in procs.items():
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"--mode={mode}:\n{out[-4000:]}"
        assert "tfk-train summary: mode " + mode in out

    evaluated = load_json(model_dir / "eval_results.json")
    assert evaluated["global_step"] == steps
    np.testing.assert_allclose(evaluated["test"]["loss"], summary["test"]["loss"], rtol=1e-5, atol=ATOL)

    predictions = np.load(model_dir / "predictions.npy")
    n_test = 64 if dataset == "synthetic" else 500
    n_classes = 4 if dataset == "synthetic" else 10
    assert predictions.shape == (n_test, n_classes)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, rtol=1e-4, atol=ATOL)

    assert (model_dir / "export" / "saved_model.pb").stat().st_mtime_ns != before
    import tensorflow as tf

    served = tf.saved_model.load(str(model_dir / "export")).signatures["serving_default"]
    if dataset == "synthetic":
        rng = np.random.default_rng(0)  # the synthetic test split, as the dataset makes it
        x = rng.standard_normal((256 + 64, *x_shape)).astype(np.float32)[256:]
    else:
        x = fashion_mnist.load_fashion_mnist()[1][0][:500]
    outputs = served(inputs=tf.constant(x[:10]))["outputs"].numpy()
    np.testing.assert_allclose(outputs, predictions[:10], rtol=1e-4, atol=1e-6)

    if dataset != "synthetic":
        return
    # The same train command again: already complete, nothing retrained.
    out = ok(config, model_dir, "--mode=train_and_evaluate")
    assert "already complete" in out
    assert load_json(model_dir / "summary.json")["global_step"] == steps


# -- --print_config -----------------------------------------------------------------


def test_print_config_prints_every_resolved_key_and_exits(tmp_path):
    config = write_config(tmp_path / "config.py", SYNTHETIC)
    model_dir = tmp_path / "never"
    proc = subprocess.run(
        [
            sys.executable,
            TRAIN,
            f"--config={config}",
            f"--model_dir={model_dir}",
            "--print_config",
            "--config.train.epochs=7",
            "--seed=5",
        ],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = dict(
        line.split(" = ", 1) for line in proc.stdout.splitlines() if " = " in line and "." in line
    )
    assert lines["train.epochs"] == "7"  # the override
    assert lines["runtime.seed"] == "5"  # the flag
    assert lines["data.num_train"] == "256" and lines["model.hidden_units"] == "[16]"
    assert lines["train.optimizer"] == "'adam'"  # a default the file did not set
    assert lines["runtime.static_shapes"] == "None"
    from tfk_trainer.train.config import SECTIONS, fixed_fields

    for section in SECTIONS:
        for key in fixed_fields(section):
            assert f"{section}.{key}" in lines, f"{section}.{key} not printed"
    assert not model_dir.exists()  # nothing ran


# -- TensorBoard, permissions, a rerun's summary ----------------------------------


def _scalar_steps(run_dir: Path) -> dict[str, list[int]]:
    import tensorflow as tf

    out: dict[str, list[int]] = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                out.setdefault(value.tag, []).append(event.step)
    return out


def _hparams(log_dir: Path) -> dict:
    import tensorflow as tf
    from tensorboard.plugins.hparams import plugin_data_pb2

    found = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "hparams":
                    continue
                data = plugin_data_pb2.HParamsPluginData.FromString(
                    value.metadata.plugin_data.content
                )
                for key, hparam in data.session_start_info.hparams.items():
                    kind = hparam.WhichOneof("kind")
                    found[key] = getattr(hparam, kind)
    return found


def test_tensorboard_axes_hparams_permissions_and_rerun_summary(tmp_path):
    """One training run (umask 027), read back: every TensorBoard run on the optimizer
    step axis, batch scalars at exact multiples, the test evaluation written, the
    config as HParams, and files/directories with the umask's permissions (no 0700
    export). Then the same command again: its summary does not mix times."""
    config = write_config(
        tmp_path / "config.py",
        SYNTHETIC
        + """
    config.train.tensorboard_every_steps = 3
    config.train.learning_rate = 0.002
""",
    )
    model_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, TRAIN, f"--config={config}", f"--model_dir={model_dir}"],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: os.umask(0o027),
    )
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out[-4000:]
    steps = load_json(model_dir / "summary.json")["global_step"]
    assert steps == 16  # 8 steps per epoch (230 examples, batch 32), 2 epochs

    logs = model_dir / "logs"
    train, validation = _scalar_steps(logs / "train"), _scalar_steps(logs / "validation")
    evaluation = _scalar_steps(logs / "eval")
    assert train["epoch_loss"] == [8, 16]  # the optimizer step, not the epoch index
    assert validation["epoch_loss"] == [8, 16]
    assert train["batch_loss"] == [3, 6, 9, 12, 15]  # exact multiples of 3 (spe=2)
    assert evaluation["epoch_loss"] == evaluation["epoch_accuracy"] == [16]

    hparams = _hparams(logs)
    assert hparams["train.learning_rate"] == pytest.approx(0.002)
    assert hparams["train.epochs"] == 2
    assert hparams["model.name"] == "mlp" and hparams["data.name"] == "synthetic"
    assert hparams["model.hidden_units"] == "[16]"  # not a number or string: its literal
    assert hparams["train.shuffle"] is True

    export = model_dir / "export"
    assert (export / "saved_model.pb").exists()
    checked = {"dirs": 0, "files": 0}
    for path in [model_dir, *model_dir.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        if path.is_dir():
            assert mode == 0o750, f"{path}: {oct(mode)}"
            checked["dirs"] += 1
        else:
            assert mode == 0o640, f"{path}: {oct(mode)}"
            checked["files"] += 1
    assert checked["dirs"] >= 6 and checked["files"] >= 10, checked
    for must in ("export/variables", "checkpoints", "logs/train", "logs/eval"):
        assert (model_dir / must).is_dir()
    assert not list(model_dir.glob(".*")), "a staging directory was left behind"

    # The same command again: nothing trained, and the times are labelled apart.
    first = load_json(model_dir / "summary.json")
    out = ok(config, model_dir)
    assert "already complete" in out
    again = load_json(model_dir / "summary.json")
    assert again["train_seconds"] == 0.0
    assert again["original_train_seconds"] == pytest.approx(first["train_seconds"])
    line = next(line for line in out.splitlines() if "wall time" in line)
    assert "(fit " not in line and "no training, already complete" in line, line
    assert f"original training fit {first['train_seconds']:.1f}s" in line, line
    # No second HParams session and no second test evaluation for a run that did not train.
    assert _scalar_steps(logs / "eval")["epoch_loss"] == [16]


# -- resume after SIGTERM --------------------------------------------------------

RESUMABLE = """
    config = base_config(model="mlp", data="synthetic")
    config.model.hidden_units = (128, 128)
    config.data.input_shape = (16, 16)
    config.data.num_classes = 4
    config.data.num_train = 1600
    config.data.num_test = 64
    config.train.epochs = 3
    config.train.batch_size = 16
    config.train.steps_per_execution = 1
    config.train.backup_every_steps = 10
"""


def test_resume_after_sigterm_matches_uninterrupted_run(tmp_path):
    config = write_config(tmp_path / "config.py", RESUMABLE)
    reference = start(config, tmp_path / "reference", "--mode=train")

    model_dir = tmp_path / "run"
    proc = start(config, model_dir, "--mode=train")
    deadline = time.monotonic() + 120
    while not (model_dir / "backup" / "checkpoint").exists():
        assert proc.poll() is None, proc.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "no backup was written"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == PREEMPTED, out[-4000:]
    assert "backup saved" in out
    assert not (model_dir / "summary.json").exists()

    out = ok(config, model_dir, "--mode=train")
    assert "Resumed from the backup at step" in out
    resumed = load_json(model_dir / "summary.json")

    ref_out, _ = reference.communicate(timeout=180)
    assert reference.returncode == 0, ref_out[-4000:]
    uninterrupted = load_json(tmp_path / "reference" / "summary.json")
    assert resumed["global_step"] == uninterrupted["global_step"] == 3 * 90
    assert 0 < resumed["resumed_from_step"] < resumed["global_step"]


# -- continuous_evaluate ---------------------------------------------------------


def test_continuous_evaluate_alongside_training(tmp_path):
    config = write_config(
        tmp_path / "config.py",
        SYNTHETIC
        + """
    config.train.epochs = 4
    config.data.num_train = 1024
    config.train.steps_per_execution = 1
    config.eval.poll_interval = 0.2
    config.eval.continuous_timeout = 120.0
""",
    )
    model_dir = tmp_path / "run"
    evaluator = start(config, model_dir, "--mode=continuous_evaluate")
    trainer = start(config, model_dir, "--mode=train")
    train_out, _ = trainer.communicate(timeout=240)
    assert trainer.returncode == 0, train_out[-4000:]
    eval_out, _ = evaluator.communicate(timeout=120)
    assert evaluator.returncode == 0, eval_out[-4000:]

    records = [
        json.loads(line) for line in (model_dir / "eval_results.jsonl").read_text().splitlines()
    ]
    assert records, eval_out
    done = load_json(model_dir / "TRAINING_DONE")
    assert records[-1]["global_step"] == done["global_step"] == 4 * 29
    assert all(set(r["test"]) == {"accuracy", "loss"} for r in records)
    # One x axis: each evaluation at its checkpoint's optimizer step, and the train
    # run's epoch scalars at the optimizer steps that end the epochs (29 per epoch).
    evaluated = _scalar_steps(model_dir / "logs" / "eval")
    assert evaluated["epoch_loss"] == [r["global_step"] for r in records]
    train_steps = _scalar_steps(model_dir / "logs" / "train")["epoch_loss"]
    assert train_steps == [29, 58, 87, 116]
    assert set(evaluated["epoch_loss"]) <= set(train_steps)  # checkpoints every epoch


def test_continuous_evaluate_times_out_without_checkpoints(tmp_path):
    config = write_config(tmp_path / "config.py", SYNTHETIC)
    rc, out = run(
        config,
        tmp_path / "empty",
        "--mode=continuous_evaluate",
        "--continuous_eval_timeout=0.5",
        "--config.eval.poll_interval=0.1",
    )
    assert rc == 4, out[-4000:]  # EXIT_NO_CHECKPOINT: neither a crash (1) nor a failed gate (3)
    assert "giving up after 0 evaluation(s)" in out


# -- fail fast -------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["--config.train.epoch=3"],
            ["--config.train.epoch", "no key 'train.epoch'", 'Did you mean "train.epochs"'],
        ),
        (["--config.train.epochs=abc"], ["--config.train.epochs=abc", "invalid literal for int"]),
        (
            [
                "--config.model.name=nope",
                "--config.data.name=nope",
                "--config.train.batch_size=0",
                "--config.runtime.mixed_precision=fp8",
                "--config.runtime.strategy=bogus",
            ],
            [
                "model.name 'nope' is not a registered model",
                "['mlp', 'resnet', 'transformer']",
                "data.name 'nope' is not a registered dataset",
                "'fashion_mnist', 'npz', 'synthetic', 'tfds'",
                "train.batch_size must be >= 1; received 0",
                "runtime.mixed_precision must be one of ['none', 'mixed_float16', 'mixed_bfloat16']",
                "runtime.strategy must be one of ['default', 'off', 'one_device', 'mirrored'",
            ],
        ),
        (["--mode=bogus"], ["--mode=bogus", "train_and_evaluate", "continuous_evaluate"]),
        (["--strategy=bogus"], ["--strategy=bogus", "mirrored", "multi_worker_mirrored"]),
        (["--mode=evaluate"], ["--mode=evaluate needs a checkpoint"]),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "bad-values",
        "bad-mode",
        "bad-strategy",
        "no-checkpoint",
    ],
)
def test_bad_flags_fail_fast(tmp_path, args, expected):
    config = write_config(tmp_path / "config.py", SYNTHETIC)
    rc, out = run(config, tmp_path / "run", *args, timeout=60)
    assert rc == 2, out[-4000:]
    for text in expected:
        assert text in out, out[-4000:]
    assert_failed_before_running(tmp_path / "run", out)


def test_missing_dataset_file_fails_fast(tmp_path):
    config = write_config(
        tmp_path / "config.py",
        """
        config = base_config(model="mlp", data="npz")
        config.data.path = "/nonexistent/data.npz"
        config.traine = 3
        """,
    )
    rc, out = run(config, tmp_path / "run", timeout=60)
    assert rc == 2, out[-4000:]
    assert "data.path '/nonexistent/data.npz': no such file." in out
    assert "unknown config section 'traine'" in out and 'Did you mean "train"' in out
    assert_failed_before_running(tmp_path / "run", out)


# -- user registrations, npz, TFDS -----------------------------------------------


def test_user_registered_model_from_config_file_on_npz_data(tmp_path):
    data = tmp_path / "data.npz"
    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, size=(160, 6, 6), dtype=np.uint8)
    y = (x.reshape(160, -1).mean(axis=1) > 127).astype(np.int64)
    np.savez(data, x_train=x[:128], y_train=y[:128], x_test=x[128:], y_test=y[128:])
    header = """
    import keras
    import tfk_trainer

    @tfk_trainer.registry.register_model("user_net", defaults={"width": 8})
    def user_net(config, input_shape, num_classes):
        inputs = keras.Input(input_shape)
        x = keras.layers.Flatten()(inputs)
        x = keras.layers.Dense(config.width, activation="relu", name="user_hidden")(x)
        outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
        return keras.Model(inputs, outputs, name="user_net")
    """
    body = f"""
    config = base_config(model="user_net", data="npz")
    config.model.width = 12
    config.data.path = {str(data)!r}
    config.train.epochs = 1
    config.train.batch_size = 32
    """
    config = write_config(tmp_path / "user_config.py", body, header)
    model_dir = tmp_path / "run"
    out = ok(config, model_dir, "--mode=train_and_evaluate", "--seed=3", "--steps_per_execution=2")
    assert "model user_net, data npz" in out
    summary = load_json(model_dir / "summary.json")
    assert summary["model"] == "user_net" and summary["global_step"] == 4
    resolved = load_json(model_dir / "config.json")
    assert resolved["model"] == {"name": "user_net", "width": 12}
    assert resolved["runtime"]["seed"] == 3 and resolved["train"]["steps_per_execution"] == 2


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow_datasets") is None,
    reason="tensorflow_datasets is not installed (pip install 'tfk_trainer[tfds]')",
)
def test_tfds_dataset_with_mock_data(tmp_path):
    # The binary runs in a subprocess: the config file itself turns mock_data on there,
    # so tfds.load never looks for (or downloads) the real data.
    header = """
    import tensorflow_datasets as tfds

    _MOCK = tfds.testing.mock_data(num_examples=96)
    _MOCK.__enter__()
    """
    body = f"""
    config = base_config(model="mlp", data="tfds")
    config.model.hidden_units = (16,)
    config.data.tfds_name = "cifar10"
    config.data.data_dir = {str(tmp_path / "tfds")!r}
    config.data.download = False
    config.data.validation_split = 0.25
    config.train.epochs = 1
    config.train.batch_size = 32
    """
    (tmp_path / "tfds").mkdir()
    config = write_config(tmp_path / "config.py", body, header)
    model_dir = tmp_path / "run"
    out = ok(config, model_dir, "--mode=train_and_evaluate")
    assert "input shape (32, 32, 3), 10 classes" in out
    summary = load_json(model_dir / "summary.json")
    assert summary["global_step"] >= 1 and "val_loss" in summary["history"]
    ok(config, model_dir, "--mode=predict")
    assert np.load(model_dir / "predictions.npy").shape[1] == 10
