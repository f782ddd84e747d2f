"""The wheel ships the configs, and an installed `tfk-train` runs them by name.

A real wheel is built from a copy of the sources (pip, no build isolation: the
venv's setuptools), installed with `pip install --target`, and its console
script is run from another directory, with only the installed copy on the path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from binary_helpers import ENV, REPO

from tfk_trainer import configs

pytestmark = pytest.mark.timeout(300)


def _pip(*args: str, cwd: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**ENV, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """`(wheel, install target)`: built from a copy (the checkout gets no build/ dir)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(
        REPO / "tfk_trainer", src / "tfk_trainer", ignore=shutil.ignore_patterns("__pycache__")
    )
    dist = base / "dist"
    _pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), ".", cwd=src)
    (wheel,) = dist.glob("tfk_trainer-*.whl")
    target = base / "site"
    _pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel), cwd=base)
    return wheel, target


def test_every_shipped_config_has_its_configs_dir_re_export():
    """One source of truth: configs/<name>.py only re-exports tfk_trainer/configs/<name>.py."""
    names = configs.names()
    assert "fashion_mnist_mlp" in names and len(names) >= 5
    assert sorted(p.stem for p in (REPO / "configs").glob("*.py")) == names
    for name in names:
        text = (REPO / "configs" / f"{name}.py").read_text()
        assert f"from tfk_trainer.configs.{name} import get_config" in text
        assert "base_config(" not in text  # no second copy of the values


def test_wheel_contains_the_configs(installed):
    wheel, _ = installed
    members = set(zipfile.ZipFile(wheel).namelist())
    for name in configs.names():
        assert f"tfk_trainer/configs/{name}.py" in members, sorted(members)
    assert "tfk_trainer/configs/__init__.py" in members


def test_installed_binary_runs_a_shipped_config_by_name(installed, tmp_path):
    _, target = installed
    env = {**ENV, "PYTHONPATH": str(target)}
    script = target / "bin" / "tfk-train"
    assert script.exists(), sorted(os.listdir(target / "bin"))
    where = subprocess.run(
        [sys.executable, "-c", "import tfk_trainer; print(tfk_trainer.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.strip().startswith(str(target)), where.stdout + where.stderr

    printed = subprocess.run(
        [sys.executable, str(script), "--config=fashion_mnist_mlp", "--print_config"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert printed.returncode == 0, printed.stdout[-3000:] + printed.stderr[-3000:]
    assert "model.hidden_units = [256, 128]" in printed.stdout
    assert "eval.min_accuracy = 0.85" in printed.stdout

    model_dir = tmp_path / "run"
    trained = subprocess.run(
        [
            sys.executable,
            str(script),
            "--config=synthetic_transformer.py",  # ".py" is accepted too
            f"--model_dir={model_dir}",
            "--mode=train",
            "--config.train.epochs=1",
            "--config.data.num_train=128",
            "--config.data.num_test=32",
            "--config.model.num_layers=1",
            "--config.runtime.verbose=0",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert (model_dir / "export" / "saved_model.pb").exists()

    unknown = subprocess.run(
        [sys.executable, str(script), "--config=fashion_mnist", "--print_config"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unknown.returncode == 2
    assert "no shipped config is named 'fashion_mnist'" in unknown.stderr
    for name in configs.names():
        assert name in unknown.stderr
