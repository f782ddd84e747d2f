"""JSON results in model_dir and the summary printed at the end of a run."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import tensorflow as tf

from tfk_trainer import distribute


def to_jsonable(value: Any) -> Any:
    """Plain Python for numpy/TF scalars and arrays, nested in dicts and lists."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (tf.Tensor, tf.Variable)):
        value = value.numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_json(path: str, data: Any, strategy: Any = None) -> None:
    """Writes `data` as JSON atomically (chief only), through tf.io.gfile (gs:// too);
    the file gets the permissions the umask gives."""
    if not distribute.is_chief(strategy):
        return
    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(to_jsonable(data), indent=2) + "\n")
    tf.io.gfile.rename(tmp, path, overwrite=True)


def accuracy_of(results: dict[str, Any]) -> float | None:
    """The accuracy entry of evaluate()'s dict ("accuracy", else the first "*acc*")."""
    if "accuracy" in results:
        return float(results["accuracy"])
    for key in sorted(results):
        if "acc" in key:
            return float(results[key])
    return None


def _format_metrics(logs: dict[str, Any] | None) -> str:
    if not logs:
        return "-"
    return ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(logs.items())
    )


def print_summary(summary: dict[str, Any]) -> None:
    """The human-readable end-of-run block."""
    lines = [
        "",
        "=" * 72,
        f"tfk-train summary: mode {summary['mode']}, model {summary['model']}, "
        f"data {summary['data']}",
    ]
    if "global_step" in summary:
        lines.append(
            f"  steps {summary['global_step']}, epochs run {summary.get('epochs_run', '-')}"
            f"/{summary.get('epochs', '-')}, strategy {summary.get('strategy', '-')} "
            f"({summary.get('replicas', 1)} replica(s))"
        )
    if summary.get("final_train"):
        lines.append(f"  last epoch:  {_format_metrics(summary['final_train'])}")
    if summary.get("test"):
        lines.append(f"  test:        {_format_metrics(summary['test'])}")
    if summary.get("already_complete"):
        # Nothing was trained now: this run's time, and the stored one of the run that
        # trained, labelled apart (never "wall time 13s (fit 35s)").
        line = f"  wall time {summary['wall_seconds']:.1f}s (this run: no training, already complete)"
        original = summary.get("original_train_seconds")
        if original is not None:
            line += f"; original training fit {original:.1f}s"
        lines.append(line)
    elif "train_seconds" in summary:
        lines.append(
            f"  wall time {summary['wall_seconds']:.1f}s (fit {summary['train_seconds']:.1f}s)"
        )
    elif "wall_seconds" in summary:
        lines.append(f"  wall time {summary['wall_seconds']:.1f}s")
    for key in ("checkpoint", "export_dir", "predictions", "summary_path"):
        if summary.get(key):
            lines.append(f"  {key.replace('_', ' ')}: {summary[key]}")
    lines.append("=" * 72)
    print("\n".join(lines), flush=True)
