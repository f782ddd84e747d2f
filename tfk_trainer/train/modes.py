"""The modes that restore a trained model: evaluate, continuous_evaluate, predict, export.

Each builds the model of the config, restores the latest checkpoint of
`model_dir`, does its one job and prints (and, on the chief, writes) a summary.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

import tfk_trainer as tfk
from tfk_trainer.train import checkpoints as ckpt_lib
from tfk_trainer.train import data as data_lib
from tfk_trainer.train import logs as logs_lib
from tfk_trainer.train import summary as summary_lib
from tfk_trainer.train.building import (
    _restore,
    _test_inputs,
    build_model,
    evaluate_test,
    load_data,
    setup_runtime,
)
from tfk_trainer.train.export_model import export_model
from tfk_trainer.train.paths import Paths
from tfk_trainer.train.reporting import (
    EXIT_NO_CHECKPOINT,
    EXIT_OK,
    _base_summary,
    _check_bar,
    _finish,
)


def _built_model(config: Any):
    strategy = setup_runtime(config)
    splits = load_data(config)
    model = build_model(config, splits, strategy)
    return strategy, splits, model


def _restored_model(config: Any, model_dir: str):
    """The model of `config`, restored from the latest checkpoint in `model_dir`."""
    paths = Paths(model_dir)
    strategy, splits, model = _built_model(config)
    path = ckpt_lib.latest(paths.checkpoints)
    _restore(model, splits, path)
    return paths, strategy, splits, model, path


def evaluate(config: Any, model_dir: str, started: float) -> int:
    paths, strategy, splits, model, path = _restored_model(config, model_dir)
    results = evaluate_test(model, config, splits)
    summary = _base_summary(config, "evaluate", model_dir, strategy)
    summary.update(
        {
            "checkpoint": path,
            "global_step": ckpt_lib.step_of(path),
            "test": results,
            "test_accuracy": summary_lib.accuracy_of(results),
            "wall_seconds": time.perf_counter() - started,
            "summary_path": paths.eval_results,
        }
    )
    status, line = _check_bar(config, results)
    summary["passed"] = status == EXIT_OK
    summary_lib.write_json(paths.eval_results, summary, strategy)
    _finish(summary, line)
    return status


def continuous_evaluate(config: Any, model_dir: str, started: float) -> int:
    """Evaluates each new checkpoint until the training-done marker appears."""
    paths = Paths(model_dir)
    strategy, splits, model = _built_model(config)
    chief = tfk.distribute.is_chief(strategy)
    writer = logs_lib.evaluation_writer(paths.logs) if chief else None
    timeout, poll = config.eval.continuous_timeout, config.eval.poll_interval
    last_path, last_results, evaluated = None, None, 0
    waiting_since = time.monotonic()
    print(f"continuous_evaluate: watching {paths.checkpoints} (timeout {timeout:g}s)", flush=True)
    while True:
        done = ckpt_lib.read_done_marker(model_dir)  # read first: it follows the final checkpoint
        path = ckpt_lib.latest(paths.checkpoints)
        if path and path != last_path:
            try:
                _restore(model, splits, path)
            except (FileNotFoundError, tf.errors.NotFoundError, ValueError) as e:
                logging.warning("checkpoint %s could not be read yet (%s); retrying", path, e)
                time.sleep(poll)
                continue
            results = evaluate_test(model, config, splits)
            step = ckpt_lib.step_of(path)
            record = {"checkpoint": path, "global_step": step, "test": results, "time": time.time()}
            if chief:
                tf.io.gfile.makedirs(model_dir)
                with tf.io.gfile.GFile(paths.eval_stream, "a") as f:
                    f.write(json.dumps(summary_lib.to_jsonable(record)) + "\n")
                logs_lib.write_evaluation(writer, results, step or 0)
            print(f"evaluated {os.path.basename(path)}: {results}", flush=True)
            last_path, last_results, evaluated = path, results, evaluated + 1
            waiting_since = time.monotonic()
            continue
        if done is not None:
            break
        if time.monotonic() - waiting_since > timeout:
            print(
                f"continuous_evaluate: no new checkpoint in {paths.checkpoints} for {timeout:g}s "
                f"and no {ckpt_lib.DONE_MARKER} marker: giving up after {evaluated} evaluation(s).",
                flush=True,
            )
            return EXIT_NO_CHECKPOINT
        time.sleep(poll)
    summary = _base_summary(config, "continuous_evaluate", model_dir, strategy)
    summary.update(
        {
            "checkpoint": last_path,
            "global_step": ckpt_lib.step_of(last_path or ""),
            "evaluations": evaluated,
            "test": last_results,
            "wall_seconds": time.perf_counter() - started,
            "summary_path": paths.eval_stream,
        }
    )
    status, line = _check_bar(config, last_results)
    _finish(summary, line)
    return status


def predict(config: Any, model_dir: str, started: float) -> int:
    paths, strategy, splits, model, path = _restored_model(config, model_dir)
    inputs = _test_inputs(config, splits)
    inputs.pop("y", None)
    if not data_lib.is_arrays(splits.test):
        inputs["x"] = inputs["x"].map(lambda x, y: x)
    predictions = model.predict(**inputs, verbose=0)
    if tfk.distribute.is_chief(strategy):
        tf.io.gfile.makedirs(model_dir)
        with tf.io.gfile.GFile(paths.predictions, "wb") as f:
            np.save(f, np.asarray(predictions))
    summary = _base_summary(config, "predict", model_dir, strategy)
    summary.update(
        {
            "checkpoint": path,
            "global_step": ckpt_lib.step_of(path),
            "predictions": f"{paths.predictions} (shape {np.shape(predictions)})",
            "wall_seconds": time.perf_counter() - started,
        }
    )
    _finish(summary, None)
    return EXIT_OK


def export(config: Any, model_dir: str, started: float) -> int:
    paths, strategy, splits, model, path = _restored_model(config, model_dir)
    export_dir = export_model(model, paths, strategy)
    summary = _base_summary(config, "export", model_dir, strategy)
    summary.update(
        {
            "checkpoint": path,
            "global_step": ckpt_lib.step_of(path),
            "export_dir": export_dir,
            "wall_seconds": time.perf_counter() - started,
        }
    )
    _finish(summary, None)
    return EXIT_OK
