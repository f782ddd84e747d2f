"""The training binary's durable state: `ram://` model dirs in every mode, kills in the
window after `fit`, the model_dir lease, exit statuses, resume checks and NaN configs.

`ram://` is TensorFlow's in-memory file system, an offline stand-in for `gs://`
(only `tf.io.gfile` and TensorFlow's own savers reach it). It lives in one process,
so those tests host the binary's `main` in the test process (`host`); the kill
tests run the binary in subprocesses on a local `tmp_path`.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from binary_helpers import ENV, REPO, TRAIN, write_config

from tfk_trainer.train import flags as flags_lib
from tfk_trainer.train import lease as lease_lib
from tfk_trainer.train import main as main_lib

pytestmark = pytest.mark.timeout(600)

TINY = """
    config = base_config(model="mlp", data="synthetic")
    config.model.hidden_units = (8,)
    config.data.input_shape = (4,)
    config.data.num_classes = 3
    config.data.num_train = 64
    config.data.num_test = 32
    config.train.epochs = 2
    config.train.batch_size = 16
    config.train.steps_per_execution = 2
    config.eval.batch_size = 32
    config.runtime.deterministic = True
"""
STEPS = 2 * 4  # 2 epochs of ceil(64 * 0.9 / 16) = 4 steps


def _reset_flags() -> None:
    """Back to the defaults, without the `--config.<key>` flags ml_collections defined
    for the previous run's overrides (it defines them anew on each parse)."""
    flags = flags_lib.FLAGS
    for name in [n for n in flags if n.startswith("config.")]:
        delattr(flags, name)
    flags.unparse_flags()


def host(config: Path, *args: str) -> int:
    """Runs `tfk-train --config=<config> <args>` in this process (absl flags parsed
    afresh); returns its exit status."""
    saved = sys.argv
    _reset_flags()
    try:
        remaining = flags_lib.parse(["tfk-train", f"--config={config}", *args])
        return main_lib.main(remaining)
    except SystemExit as e:
        return e.code
    finally:
        sys.argv = saved
        _reset_flags()


def tree(root: str) -> set[str]:
    """Every file under `root` (a URL too), relative to it."""
    out = set()
    for directory, _, files in tf.io.gfile.walk(root):
        for name in files:
            out.add(os.path.join(directory, name)[len(root) + 1 :])
    return out


def read_json(path: str) -> dict:
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


@pytest.fixture
def config(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)  # a URL written as a local path would land here
    return write_config(tmp_path / "config.py", TINY)


def _ram_dir(name: str) -> str:
    model_dir = f"ram://tfk_durable/{name}-{time.monotonic_ns()}"
    return model_dir


# -- every mode on ram:// (gs:// stand-in) ------------------------------------------


def test_every_mode_writes_only_under_a_ram_model_dir(config, tmp_path, capsys):
    model_dir = _ram_dir("modes")
    assert host(config, f"--model_dir={model_dir}", "--mode=train_and_evaluate") == 0
    out = capsys.readouterr().out
    files = tree(model_dir)
    assert {"config.json", "summary.json", "TRAINING_DONE", "export/saved_model.pb"} <= files
    assert f"checkpoints/ckpt-{STEPS}.index" in files
    assert any(f.startswith("logs/train/events") for f in files)
    assert any(f.startswith("logs/eval/events") for f in files)
    # Finished: the backup, the FIT_DONE marker and the lease are gone.
    assert not {f for f in files if f.startswith(("backup/", "FIT_DONE", "LEASE"))}
    assert f"checkpoint: {model_dir}/checkpoints/ckpt-{STEPS}" in out
    assert f"export dir: {model_dir}/export" in out
    assert f"summary path: {model_dir}/summary.json" in out
    summary = read_json(f"{model_dir}/summary.json")
    assert summary["model_dir"] == model_dir and summary["global_step"] == STEPS
    assert tf.saved_model.load(f"{model_dir}/export").signatures["serving_default"]

    assert host(config, f"--model_dir={model_dir}", "--mode=train") == 0  # a finished run
    assert "already complete" in capsys.readouterr().out
    for mode, output in [
        ("evaluate", "eval_results.json"),
        ("predict", "predictions.npy"),
        ("export", "export/saved_model.pb"),
        ("continuous_evaluate", "eval_results.jsonl"),
    ]:
        assert host(config, f"--model_dir={model_dir}", f"--mode={mode}") == 0, mode
        assert output in tree(model_dir), mode
        assert model_dir in capsys.readouterr().out
    with tf.io.gfile.GFile(f"{model_dir}/predictions.npy", "rb") as f:
        assert np.load(f).shape == (32, 3)
    assert read_json(f"{model_dir}/eval_results.json")["global_step"] == STEPS
    # Nothing reached the local disk (os.path on "ram://x" would write ./ram:/x).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.py"]


def test_continuous_evaluate_on_an_empty_ram_dir_times_out_with_status_4(config, capsys):
    model_dir = _ram_dir("empty")
    rc = host(
        config,
        f"--model_dir={model_dir}",
        "--mode=continuous_evaluate",
        "--continuous_eval_timeout=0.3",
        "--config.eval.poll_interval=0.1",
    )
    assert rc == 4
    assert f"watching {model_dir}/checkpoints" in capsys.readouterr().out


def test_quality_gate_failure_is_status_3_not_a_crash(config, capsys):
    rc = host(config, f"--model_dir={_ram_dir('gate')}", "--config.eval.min_accuracy=1.0")
    assert rc == 3
    assert "below eval.min_accuracy" in capsys.readouterr().err


@pytest.mark.parametrize(
    "key", ["train.learning_rate", "eval.min_accuracy", "eval.continuous_timeout"]
)
def test_nan_config_is_status_2_naming_the_key(config, capsys, key):
    model_dir = _ram_dir("nan")
    assert host(config, f"--model_dir={model_dir}", f"--config.{key}=nan") == 2
    assert f"{key} must be a finite number; received nan." in capsys.readouterr().err
    assert not tf.io.gfile.exists(model_dir)


# -- resume checks ------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, expected",
    [
        ("--config.data.input_shape=(5,)", "data.input_shape: [4] -> [5]"),
        ("--config.data.num_classes=5", "data.num_classes: 3 -> 5"),
        ("--config.model.hidden_units=(9,)", "model.hidden_units: [8] -> [9]"),
        ("--config.train.optimizer=sgd", "train.optimizer: 'adam' -> 'sgd'"),
    ],
)
def test_resume_with_changed_state_keys_fails_before_writing(config, capsys, override, expected):
    """An interrupted run (here: checkpoints but no TRAINING_DONE) cannot resume into a
    model or optimizer of another shape or kind: exit 2 naming the key, old -> new,
    and config.json is not overwritten (an Adam backup is never silently loaded
    into SGD, dropping its slots)."""
    model_dir = _ram_dir("resume")
    assert host(config, f"--model_dir={model_dir}", "--mode=train") == 0
    tf.io.gfile.remove(f"{model_dir}/TRAINING_DONE")
    with tf.io.gfile.GFile(f"{model_dir}/config.json") as f:
        before = f.read()
    files_before = tree(model_dir)
    capsys.readouterr()
    assert host(config, f"--model_dir={model_dir}", "--mode=train", override) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert "cannot resume" in err
    with tf.io.gfile.GFile(f"{model_dir}/config.json") as f:
        assert f.read() == before
    assert tree(model_dir) == files_before


# -- the model_dir lease ----------------------------------------------------------


def _write_lease(model_dir: str, **fields) -> None:
    lease = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "token": "someone-else",
        "acquired": time.time() - 60,
        "refreshed": time.time(),
        "timeout": 300.0,
        **fields,
    }
    tf.io.gfile.makedirs(model_dir)
    with tf.io.gfile.GFile(f"{model_dir}/LEASE", "w") as f:
        f.write(json.dumps(lease))


def test_a_live_lease_stops_a_second_trainer_at_once(config, capsys):
    model_dir = _ram_dir("leased")
    _write_lease(model_dir, host="other-vm", pid=4242)
    assert host(config, f"--model_dir={model_dir}") == 5
    err = capsys.readouterr().err
    assert "is in use by another trainer (host 'other-vm', pid 4242" in err
    assert "--force_unlock" in err
    assert tree(model_dir) == {"LEASE"}  # nothing written, the holder's lease untouched
    assert read_json(f"{model_dir}/LEASE")["token"] == "someone-else"


@pytest.mark.parametrize(
    "lease, args, reason",
    [
        ({"host": "other-vm", "refreshed": time.time() - 1000}, (), "last refreshed"),
        ({"pid": 2**22 + 12345}, (), "no longer exists on this host"),
        ({"host": "other-vm"}, ("--force_unlock",), "--force_unlock"),
    ],
    ids=["stale", "dead-local-process", "force-unlock"],
)
def test_a_stale_or_forced_lease_is_taken_over(config, capsys, lease, args, reason):
    model_dir = _ram_dir("takeover")
    _write_lease(model_dir, **lease)
    assert host(config, f"--model_dir={model_dir}", *args) == 0
    out = capsys.readouterr().out
    assert "taking over the lease" in out and reason in out
    assert "TRAINING_DONE" in tree(model_dir) and "LEASE" not in tree(model_dir)


def test_lease_is_refreshed_while_held_and_released(tmp_path):
    held = lease_lib.Lease(str(tmp_path / "run"), timeout=1.0).acquire()
    first = lease_lib.read(held.model_dir)["refreshed"]
    time.sleep(0.8)
    assert lease_lib.read(held.model_dir)["refreshed"] > first
    with pytest.raises(lease_lib.LeaseHeld, match="in use by another trainer"):
        lease_lib.Lease(held.model_dir).acquire()
    held.release()
    assert lease_lib.read(held.model_dir) is None


# -- kills in the window after fit (subprocesses) ------------------------------------

PAUSED = """
import os, sys, time
sys.path.insert(0, {repo!r})
from tfk_trainer.train import experiment

WINDOW = os.environ["TFK_TEST_WINDOW"]


def pause():
    print("PAUSED in " + WINDOW, flush=True)
    time.sleep(300)


def after(original):
    def patched(*args, **kwargs):
        out = original(*args, **kwargs)
        pause()
        return out
    return patched


def before(original):
    def patched(*args, **kwargs):
        pause()
        return original(*args, **kwargs)
    return patched


if WINDOW == "after_fit":  # fit returned; no final checkpoint, no FIT_DONE yet
    experiment._fit = after(experiment._fit)
elif WINDOW == "export":  # FIT_DONE written, export not
    experiment.export_model = before(experiment.export_model)
elif WINDOW == "test_evaluation":  # exported, the test split not evaluated
    experiment.evaluate_test = before(experiment.evaluate_test)
from tfk_trainer.train.main import run

run()
"""


def _binary(script: str, config: Path, model_dir: Path, *args: str, **env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, script, f"--config={config}", f"--model_dir={model_dir}", *args],
        cwd=REPO,
        env={**ENV, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(proc: subprocess.Popen, text: str) -> str:
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"{text!r} never printed:\n" + "".join(seen)[-4000:])


def _weights(prefix: Path) -> dict[str, np.ndarray]:
    """Every variable of a checkpoint (network, optimizer slots, step)."""
    reader = tf.train.load_checkpoint(str(prefix))
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if name.endswith("VARIABLE_VALUE") and not name.startswith("save_counter")
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """An uninterrupted run: its final weights and summary."""
    root = tmp_path_factory.mktemp("reference")
    config = write_config(root / "config.py", TINY)
    proc = _binary(TRAIN, config, root / "run")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-4000:]
    return {
        "weights": _weights(root / "run" / "checkpoints" / f"ckpt-{STEPS}"),
        "summary": json.loads((root / "run" / "summary.json").read_text()),
    }


@pytest.mark.parametrize(
    "window, sig",
    [
        ("after_fit", signal.SIGTERM),
        ("after_fit", signal.SIGKILL),
        ("export", signal.SIGTERM),
        ("test_evaluation", signal.SIGTERM),
        ("test_evaluation", signal.SIGKILL),
    ],
)
def test_kill_after_fit_never_retrains(tmp_path, reference, window, sig):
    config = write_config(tmp_path / "config.py", TINY)
    paused = tmp_path / "paused_train.py"
    paused.write_text(PAUSED.format(repo=str(REPO)))
    model_dir = tmp_path / "run"
    proc = _binary(str(paused), config, model_dir, TFK_TEST_WINDOW=window)
    first = _wait_for(proc, f"PAUSED in {window}")
    assert first.count("Epoch ") == 2
    if window == "export":
        # A second trainer on the busy model_dir fails at once, naming the holder.
        second = _binary(TRAIN, config, model_dir)
        out, _ = second.communicate(timeout=120)
        assert second.returncode == 5, out[-4000:]
        assert f"is in use by another trainer (host {socket.gethostname()!r}, pid {proc.pid}" in out
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == (143 if sig == signal.SIGTERM else -9), (first + rest)[-4000:]
    assert not (model_dir / "TRAINING_DONE").exists()
    if sig == signal.SIGTERM:
        assert "SIGTERM received" in rest and not (model_dir / "LEASE").exists()

    rerun = _binary(TRAIN, config, model_dir)
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out[-4000:]
    assert "Epoch " not in out, out[-4000:]  # nothing trained again
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["global_step"] == STEPS
    assert summary["history"] == reference["summary"]["history"] or window == "after_fit"
    assert summary["test"] == pytest.approx(reference["summary"]["test"], abs=1e-6)
    weights = _weights(model_dir / "checkpoints" / f"ckpt-{STEPS}")
    assert weights.keys() == reference["weights"].keys() and weights
    for name, value in weights.items():
        np.testing.assert_allclose(value, reference["weights"][name], atol=1e-6, err_msg=name)
    left = {p.name for p in model_dir.iterdir()}
    assert "TRAINING_DONE" in left
    assert not left & {"backup", "FIT_DONE", "LEASE"}, left


def test_npz_data_on_ram_and_model_dir_on_ram(tmp_path, monkeypatch, capsys):
    """A data file on the object store (`data.path=gs://...`) is read through
    tf.io.gfile: checked up front, then loaded."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    data_path = f"{_ram_dir('data')}/tiny.npz"
    tf.io.gfile.makedirs(os.path.dirname(data_path))
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x_train=rng.random((48, 4), dtype=np.float32),
        y_train=rng.integers(0, 3, 48),
        x_test=rng.random((16, 4), dtype=np.float32),
        y_test=rng.integers(0, 3, 16),
    )
    with tf.io.gfile.GFile(data_path, "wb") as f:
        f.write(buffer.getvalue())
    config = write_config(
        tmp_path / "npz.py",
        f"""
        config = base_config(model="mlp", data="npz")
        config.model.hidden_units = (8,)
        config.data.path = {data_path!r}
        config.train.epochs = 1
        config.train.batch_size = 16
        config.eval.batch_size = 16
        """,
    )
    model_dir = _ram_dir("npz")
    assert host(config, f"--model_dir={model_dir}") == 0
    assert "input shape (4,), 3 classes" in capsys.readouterr().out
    assert "TRAINING_DONE" in tree(model_dir)
    missing = f"{os.path.dirname(data_path)}/missing.npz"
    assert host(config, f"--model_dir={model_dir}-2", f"--config.data.path={missing}") == 2
    assert f"data.path {missing!r}: no such file." in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["npz.py"]
