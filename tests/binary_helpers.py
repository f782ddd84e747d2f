"""What the tests that run the `tools/train.py` binary in subprocesses share:
where it is, the environment it runs in, and how a config file is written."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRAIN = str(REPO / "tools" / "train.py")
# No GPU, TensorFlow's C++ logs quiet, output unbuffered (tests read it as it comes).
ENV = {
    **os.environ,
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "CUDA_VISIBLE_DEVICES": "",
    "PYTHONUNBUFFERED": "1",
}


def write_config(path: Path, body: str, header: str = "") -> Path:
    """A config file: `header` at module level, `body` inside get_config()."""
    text = "from tfk_trainer.train.config import base_config\n"
    text += textwrap.dedent(header) + "\n\ndef get_config():\n"
    text += textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n    return config\n"
    path.write_text(text)
    return path


# What only a run that got past the flag and config checks writes into model_dir.
RUN_OUTPUTS = ("checkpoints", "backup", "logs", "export", "config.json", "summary.json")


def assert_failed_before_running(model_dir: Path, output: str) -> None:
    """A bad flag or config was reported before anything ran: no training line was
    printed and nothing a run writes exists under `model_dir`. (This is what "fails
    fast" means here; the tests assert it structurally, never as a wall-clock bound.)"""
    trained = re.search(r"^Epoch \d+/|^\s*\d+/\d+ - .*/step|tfk-train summary", output, re.M)
    assert not trained, output[-4000:]
    written = [p for name in RUN_OUTPUTS for p in model_dir.rglob(name)] if model_dir.exists() else []
    assert not written, f"written before the error: {written}"
