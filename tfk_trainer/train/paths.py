"""Where the binary writes in `model_dir`, and reading back its JSON files.

`model_dir` layout:

    config.json           the resolved config (train modes, chief only)
    backup/               BackupAndRestore (a rerun of the same command resumes)
    checkpoints/          ckpt-<step>, every epoch or every N steps, and at the end
    logs/                 TensorBoard: HParams, train/, validation/, eval/ (the test split),
                          all at the optimizer step (see tfk_trainer.train.logs)
    export/               the SavedModel (serving_default)
    summary.json          train modes: history, test results, times, steps
    eval_results.json     evaluate: the latest checkpoint's test results
    eval_results.jsonl    continuous_evaluate: one line per checkpoint
    predictions.npy       predict: outputs for the test split
    TRAINING_DONE         written last by a finished training run
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from tfk_trainer import paths as paths_lib


@dataclass
class Paths:
    model_dir: str

    def __getattr__(self, name: str) -> str:
        names = {
            "config": "config.json",
            "backup": "backup",
            "checkpoints": "checkpoints",
            "logs": "logs",
            "export": "export",
            "summary": "summary.json",
            "eval_results": "eval_results.json",
            "eval_stream": "eval_results.jsonl",
            "predictions": "predictions.npy",
        }
        if name not in names:
            raise AttributeError(name)
        return paths_lib.join(self.model_dir, names[name])


def _read_json(path: str) -> Any:
    try:
        with tf.io.gfile.GFile(path) as f:
            return json.loads(f.read())
    except (OSError, ValueError, tf.errors.OpError):
        return None
