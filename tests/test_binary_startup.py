"""The training binary hides TensorFlow's CUDA start-up lines on a machine without a GPU.

`tfk_trainer/train/startup.py` sets TF_CPP_MIN_LOG_LEVEL=2 unless the user set it
and filters the lines TensorFlow prints before its logging is initialised
(which that variable does not reach). Each run here is a fresh subprocess
whose environment has no TF_CPP_MIN_LOG_LEVEL.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from binary_helpers import REPO, TRAIN

from tfk_trainer.train import startup

NOISE_MARKERS = ("cuInit", "Could not find cuda", "absl::InitializeLog", "oneDNN custom operations")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def _run(argv: list[str], **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv],
        cwd=REPO,
        env=_env(**extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=180,
    )


def _noise(output: str) -> list[str]:
    return [line for line in output.splitlines() if any(m in line for m in NOISE_MARKERS)]


@pytest.fixture(scope="module")
def tensorflow_prints_noise_here() -> list[str]:
    """What plain TensorFlow prints here at import and device enumeration."""
    code = "import tensorflow as tf; tf.config.list_physical_devices()"
    lines = _noise(_run(["-c", code]).stdout)
    if not lines:
        pytest.skip("TensorFlow prints no CUDA/oneDNN start-up lines on this machine")
    return lines


def test_start_up_patterns_match_what_tensorflow_prints(tensorflow_prints_noise_here):
    assert all(startup.is_startup_noise(line) for line in tensorflow_prints_noise_here)
    assert not startup.is_startup_noise("E0000 ... some_kernel.cc:12] real error: OOM")


def test_tools_train_py_hides_the_cuda_lines(tensorflow_prints_noise_here):
    result = _run([TRAIN, "--helpshort"])
    assert result.returncode == 1, result.stdout[-2000:]  # absl's --helpshort exits 1
    assert "--model_dir" in result.stdout  # the help itself is still printed
    assert _noise(result.stdout) == [], result.stdout[:2000]


def test_console_script_hides_the_cuda_lines(tensorflow_prints_noise_here):
    """The `tfk-train` console script imports `tfk_trainer` (and so TensorFlow)
    before main.py runs: the package filters when argv[0] is `tfk-train`."""
    code = (
        "import sys; sys.argv = ['/venv/bin/tfk-train', '--helpshort']; "
        "from tfk_trainer.train.main import run; run()"
    )
    result = _run(["-c", code])
    assert result.returncode == 1, result.stdout[-2000:]  # absl's --helpshort exits 1
    assert "--model_dir" in result.stdout
    assert _noise(result.stdout) == [], result.stdout[:2000]


def test_python_dash_m_main_hides_the_cuda_lines(tensorflow_prints_noise_here):
    result = _run(["-m", "tfk_trainer.train.main", "--helpshort"])
    assert result.returncode == 1, result.stdout[-2000:]  # absl's --helpshort exits 1
    assert "--model_dir" in result.stdout
    assert _noise(result.stdout) == [], result.stdout[:2000]


def test_a_user_setting_is_respected(tensorflow_prints_noise_here):
    """TF_CPP_MIN_LOG_LEVEL set by the user: nothing is filtered."""
    result = _run([TRAIN, "--helpshort"], TF_CPP_MIN_LOG_LEVEL="0")
    assert result.returncode == 1, result.stdout[-2000:]
    assert _noise(result.stdout), result.stdout[:2000]


def test_importing_the_library_changes_no_logging():
    code = "import os, tfk_trainer; print('LEVEL', os.environ.get('TF_CPP_MIN_LOG_LEVEL'))"
    result = _run(["-c", code])
    assert result.returncode == 0, result.stdout[-2000:]
    assert "LEVEL None" in result.stdout
