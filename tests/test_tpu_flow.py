"""TPU flow without a TPU: multi-host slices refuse tpu="local", the TPU install
does not pull `tensorflow`, and local paths under a remote TPU go through the client.

Issue 18 items 4, 5 and 10 (fake resolvers and strategies; no TPU here).
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from packaging.requirements import Requirement

import tfk_trainer as tfk
from tfk_trainer import distribute

ROOT = Path(__file__).resolve().parent.parent
POD_ENV = {
    "TPU_WORKER_HOSTNAMES": "t1v-n-0,t1v-n-1,t1v-n-2,t1v-n-3",
    "TPU_WORKER_ID": "2",
    "TPU_ACCELERATOR_TYPE": "v4-32",
}


# -- 4: a multi-host slice refuses tpu="local" ---------------------------------------------


@pytest.mark.parametrize(
    "environ, hosts",
    [
        ({}, 1),
        ({"TPU_WORKER_HOSTNAMES": "localhost", "TPU_WORKER_ID": "0"}, 1),
        (POD_ENV, 4),
        ({"TPU_WORKER_ID": "3"}, 4),
        ({"TPU_WORKER_HOSTNAMES": "a,b"}, 2),
    ],
)
def test_tpu_slice_hosts_reads_the_tpu_vm_environment(environ, hosts):
    assert distribute.tpu_slice_hosts(environ) == hosts


def test_tpu_slice_hosts_reads_the_metadata_endpoints():
    endpoints = "unknown:unknown:10.0.0.2,unknown:unknown:10.0.0.3,unknown:unknown:10.0.0.4"
    assert distribute.tpu_slice_hosts({}, endpoints) == 3
    assert distribute.tpu_slice_hosts({}, "unknown:unknown:10.0.0.2") == 1
    with pytest.raises(RuntimeError, match="3 hosts"):
        distribute.check_local_tpu({}, endpoints)


class _FakeResolver:
    """Stands in for TPUClusterResolver: records how it was made."""

    made: list = []

    def __init__(self, tpu=None, zone=None, project=None):
        _FakeResolver.made.append(tpu)
        self.tpu = tpu

    def master(self):
        return "" if self.tpu == "local" else "grpc://10.0.0.2:8470"


@pytest.fixture
def fake_tpu(monkeypatch):
    _FakeResolver.made = []
    initialized = []
    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", _FakeResolver)
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", initialized.append)
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster", lambda resolver: None)
    monkeypatch.setattr(tf.distribute, "TPUStrategy", lambda resolver: ("strategy", resolver))
    monkeypatch.setattr(distribute, "tpu_attached", lambda: True)
    monkeypatch.setattr(distribute, "_tpu_vm_endpoints", lambda: None)
    for name in POD_ENV:
        monkeypatch.delenv(name, raising=False)
    return initialized


def test_local_on_a_multi_host_slice_is_refused_before_touching_the_tpu(fake_tpu, monkeypatch):
    for name, value in POD_ENV.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(RuntimeError) as info:
        tfk.distribute.resolve("tpu", tpu="local")
    message = str(info.value)
    assert "multi-host TPU slice" in message and "v4-32 has 4 hosts" in message
    assert "tpu='NAME'" in message or "--tpu=NAME" in message
    assert "docs/distributed.md" in message
    assert _FakeResolver.made == [] and fake_tpu == []


def test_local_is_refused_when_only_the_metadata_says_multi_host(fake_tpu, monkeypatch):
    monkeypatch.setattr(distribute, "_tpu_vm_endpoints", lambda: "a:b:10.0.0.2,a:b:10.0.0.3")
    with pytest.raises(RuntimeError, match="2 hosts"):
        tfk.distribute.resolve("tpu", tpu="local")
    assert _FakeResolver.made == []


def test_local_on_one_host_and_a_name_on_a_pod_resolve(fake_tpu, monkeypatch):
    kind, resolver = tfk.distribute.resolve("tpu", tpu="local")
    assert kind == "strategy" and resolver.tpu == "local" and fake_tpu == [resolver]
    # The pod flow: one client names the TPU (the slice's environment is no obstacle).
    for name, value in POD_ENV.items():
        monkeypatch.setenv(name, value)
    kind, resolver = tfk.distribute.resolve("tpu", tpu="my-pod", tpu_zone="z", tpu_project="p")
    assert resolver.tpu == "my-pod" and _FakeResolver.made == ["local", "my-pod"]


def test_the_tpu_config_and_docs_describe_the_pod_flow():
    from tfk_trainer.configs.tpu_fashion_mnist_mlp import get_config

    config = get_config()
    assert config.runtime.strategy == "tpu"
    source = (ROOT / "tfk_trainer" / "configs" / "tpu_fashion_mnist_mlp.py").read_text()
    assert "pod" in source and "--tpu=" in source
    docs = (ROOT / "docs" / "distributed.md").read_text()
    assert "run the same command on every host (" not in docs  # the old, wrong flow
    assert "one client" in docs.lower()


# -- 5: the TPU install pulls no `tensorflow` -------------------------------------------------


def _requirements(text: str) -> dict[str, Requirement]:
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            out[req.name.lower().replace("_", "-")] = req
    return out


def _pyproject():
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_requirements_tpu_is_the_dependencies_with_tensorflow_tpu_for_tensorflow():
    project = _pyproject()["project"]
    core = _requirements("\n".join(project["dependencies"]))
    tpu_extra = _requirements("\n".join(project["optional-dependencies"]["tpu"]))
    text = (ROOT / "requirements-tpu.txt").read_text()
    tpu = _requirements(text)
    assert "tensorflow" not in tpu
    assert str(tpu.pop("tensorflow-tpu").specifier) == str(core.pop("tensorflow").specifier)
    assert {k: str(v) for k, v in tpu.items()} == {
        k: str(v) for k, v in {**core, **tpu_extra}.items()
    }
    assert "--find-links https://storage.googleapis.com/libtpu-releases/index.html" in text
    # The tpu extra itself must not name a TensorFlow flavour either.
    assert not any(name.startswith("tensorflow") for name in tpu_extra)


@pytest.mark.timeout(300)
def test_no_deps_install_resolves_to_tfk_trainer_alone_offline(tmp_path):
    """The documented second step, `pip install --no-deps`, as a dry run without an
    index: it installs tfk_trainer only (no `tensorflow` next to tensorflow-tpu)."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copy(ROOT / "README.md", tmp_path)
    (tmp_path / "tfk_trainer").mkdir()
    (tmp_path / "tfk_trainer" / "__init__.py").write_text("")
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--quiet",
            "--report",
            str(report),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    if done.returncode != 0 and "No module named pip" in done.stderr:
        pytest.skip("pip is not installed in this environment")
    assert done.returncode == 0, done.stderr[-3000:]
    installs = json.loads(report.read_text())["install"]
    assert [i["metadata"]["name"].lower().replace("_", "-") for i in installs] == ["tfk-trainer"]


def test_docs_give_the_tpu_install_commands():
    for doc in ("README.md", "docs/distributed.md"):
        text = (ROOT / doc).read_text()
        assert "pip install -r requirements-tpu.txt" in text, doc
        assert "pip install --no-deps -e ." in text, doc


# -- 10: local paths under a remote TPU are read and written by the client -------------------


class TPUStrategyFake:
    """Named like TF's TPU strategies (`distribute.is_tpu` reads the class name)."""

    def __init__(self, master: str):
        self.cluster_resolver = type("Resolver", (), {"master": lambda self: master})()


REMOTE = TPUStrategyFake("grpc://10.0.0.2:8470")
LOCAL = TPUStrategyFake("")


@pytest.mark.parametrize(
    "strategy, path, device",
    [
        (REMOTE, "/tmp/run/ckpt", "/job:localhost"),
        (REMOTE, "relative/ckpt", "/job:localhost"),
        (REMOTE, "file:///tmp/run/ckpt", "/job:localhost"),
        (REMOTE, "ram://run/ckpt", "/job:localhost"),
        (REMOTE, "gs://bucket/run/ckpt", None),
        (LOCAL, "/tmp/run/ckpt", None),
        (None, "/tmp/run/ckpt", None),
    ],
)
def test_io_device_for_local_paths_under_a_remote_tpu(strategy, path, device):
    assert distribute.remote_tpu(strategy) is (strategy is REMOTE)
    assert distribute.io_device(strategy, path) == device
    assert distribute.checkpoint_options(strategy, path).experimental_io_device == device
    assert distribute.saved_model_save_options(strategy, path).experimental_io_device == device
    assert distribute.saved_model_load_options(strategy, path).experimental_io_device == device


def test_mirrored_is_no_remote_tpu(mirrored_strategy):
    assert distribute.io_device(mirrored_strategy(2), "/tmp/x") is None


def _model():
    keras.utils.set_random_seed(1)
    model = tfk.Model(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    model.compile("sgd", "mse")
    model.fit(np.ones((8, 3), "float32"), np.ones((8, 2), "float32"), epochs=1, verbose=0)
    return model


def test_checkpoints_and_exports_ask_for_their_options(monkeypatch):
    asked = []

    def checkpoint_options(strategy, path):
        asked.append(("checkpoint", path))
        return tf.train.CheckpointOptions()

    def save_options(strategy, path):
        asked.append(("saved_model", path))
        return tf.saved_model.SaveOptions()

    monkeypatch.setattr(distribute, "checkpoint_options", checkpoint_options)
    monkeypatch.setattr(distribute, "saved_model_save_options", save_options)
    model = _model()
    written = model.save_checkpoint("ram://tpu_flow/ckpt")
    assert ("checkpoint", written) in asked
    model.load_checkpoint(written)
    assert [p for kind, p in asked if kind == "checkpoint"].count(written) == 2
    model.export("ram://tpu_flow/exported")
    assert any(kind == "saved_model" for kind, _ in asked)


def test_backups_and_the_binarys_checkpoints_ask_for_their_options(tmp_path, monkeypatch):
    from tfk_trainer.train.checkpoints import CheckpointSaver

    asked = []

    def checkpoint_options(strategy, path):
        asked.append(str(path))
        return tf.train.CheckpointOptions()

    monkeypatch.setattr(distribute, "checkpoint_options", checkpoint_options)
    model = _model()
    x, y = np.ones((8, 3), "float32"), np.ones((8, 2), "float32")
    backups, saved = str(tmp_path / "backup"), str(tmp_path / "ckpts")
    callbacks = [
        tfk.callbacks.BackupAndRestore(backups, delete_checkpoint=False),
        CheckpointSaver(saved),
    ]
    model.fit(x, y, epochs=1, verbose=0, callbacks=callbacks)
    assert any(p.startswith(backups) for p in asked), asked
    assert any(p.startswith(saved) for p in asked), asked
    asked.clear()
    resumed = _model()
    resumed.fit(x, y, epochs=2, verbose=0, callbacks=[tfk.callbacks.BackupAndRestore(backups)])
    assert any(p.startswith(backups) for p in asked), asked  # the restore read
