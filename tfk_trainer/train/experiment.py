"""Builds the model from a resolved config and runs one mode.

The `model_dir` layout is described in `tfk_trainer.train.paths`.

This module checks a run before it starts (`precheck`), runs the train modes
and dispatches the others; the parts live in `train/paths.py` (the layout), `train/building.py`, `train/fitting.py`, `train/export_model.py`,
`train/modes.py` and `train/reporting.py` (exit statuses, summaries).
"""

from __future__ import annotations

import os
import time
from typing import Any

import tensorflow as tf

import tfk_trainer as tfk
from tfk_trainer import paths as paths_lib
from tfk_trainer.train import checkpoints as ckpt_lib
from tfk_trainer.train import logs as logs_lib
from tfk_trainer.train import summary as summary_lib
from tfk_trainer.train.building import (
    _restore,
    build_model,
    evaluate_test,
    load_data,
    make_optimizer,
    setup_runtime,
)
from tfk_trainer.train.config import TRAIN_MODES, to_dict
from tfk_trainer.train.export_model import export_model
from tfk_trainer.train.fitting import _fit_arguments, _train_callbacks
from tfk_trainer.train.modes import continuous_evaluate, evaluate, export, predict
from tfk_trainer.train.paths import Paths, _read_json
from tfk_trainer.train.reporting import (
    EXIT_BELOW_BAR,
    EXIT_OK,
    EXIT_USAGE,
    _base_summary,
    _check_bar,
    _finish,
)
from tfk_trainer.train.validation import ConfigError

# The binary's surface (main.py and tests use these through this module).
__all__ = [
    "EXIT_BELOW_BAR",
    "EXIT_OK",
    "EXIT_USAGE",
    "Paths",
    "build_model",
    "continuous_evaluate",
    "evaluate",
    "evaluate_test",
    "export",
    "export_model",
    "load_data",
    "make_optimizer",
    "precheck",
    "predict",
    "run",
    "setup_runtime",
    "train",
]

# -- checks before anything runs ---------------------------------------------


def _config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _config_differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def _training_part(config: Any) -> dict[str, Any]:
    """The keys that decide what training produces (a finished run is compared on them)."""
    config = config if isinstance(config, dict) else to_dict(config)
    return {
        "model": config.get("model"),
        "data": config.get("data"),
        "train": config.get("train"),
        "seed": (config.get("runtime") or {}).get("seed"),
    }


def precheck(config: Any, model_dir: str, mode: str) -> None:
    """Mode-specific checks that need no data or TensorFlow work; raises ConfigError."""
    paths = Paths(model_dir)
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise ConfigError([f"--model_dir {model_dir!r} exists and is not a directory."])
    # Every mode writes there (checkpoints, results, predictions): fail now, not
    # after the data is loaded or an epoch is trained.
    problem = paths_lib.creatable_problem(model_dir)
    if problem is not None:
        raise ConfigError(
            [f"--model_dir {model_dir!r} cannot be created or written: {problem[1]}."]
        )
    if mode in TRAIN_MODES:
        done = ckpt_lib.read_done_marker(model_dir)
        if done and done.get("config") is not None:
            diffs = _config_differences(_training_part(done["config"]), _training_part(config))
            if diffs:
                raise ConfigError(
                    [
                        f"--model_dir {model_dir!r} holds a finished training run with a "
                        f"different config ({'; '.join(diffs[:5])}). Use a new --model_dir, or "
                        "delete this one to start over."
                    ]
                )
        previous = _read_json(paths.config)
        if os.path.isdir(paths.backup) and previous is not None:
            diffs = _config_differences(previous.get("model"), to_dict(config)["model"], "model.")
            if diffs:
                raise ConfigError(
                    [
                        f"--model_dir {model_dir!r} holds an interrupted run (backup/) of a "
                        f"different model ({'; '.join(diffs[:5])}), which cannot resume. Rerun "
                        "with the same model config, or use a new --model_dir."
                    ]
                )
    elif mode != "continuous_evaluate" and ckpt_lib.latest(paths.checkpoints) is None:
        raise ConfigError(
            [
                f"--mode={mode} needs a checkpoint, and {paths.checkpoints!r} has none. Train "
                "first (--mode=train or train_and_evaluate with the same --model_dir)."
            ]
        )


# -- modes -------------------------------------------------------------------


def train(config: Any, model_dir: str, mode: str, started: float) -> int:
    """Trains (or, when a finished run is found, reloads), exports, evaluates the test
    split for `train_and_evaluate`, and writes the summary and the done marker."""
    paths = Paths(model_dir)
    strategy = setup_runtime(config)
    chief = tfk.distribute.is_chief(strategy)
    done = ckpt_lib.read_done_marker(model_dir)
    already_done = bool(done) and ckpt_lib.latest(paths.checkpoints) is not None
    splits = load_data(config)
    print(
        f"data {config.data.name!r}: input shape {tuple(splits.input_shape)}, "
        f"{splits.num_classes} classes; model {config.model.name!r}; {mode} in {model_dir}",
        flush=True,
    )
    model = build_model(config, splits, strategy)
    # Written only once the data loaded and the model compiled, so a config that
    # fails there (an unknown loss, a model key its builder rejects) leaves nothing.
    if chief:
        tf.io.gfile.makedirs(model_dir)
    summary_lib.write_json(paths.config, to_dict(config), strategy)
    if not already_done:
        ckpt_lib.remove_done_marker(model_dir, strategy)
    saver = ckpt_lib.CheckpointSaver(
        paths.checkpoints, config.train.checkpoint_every_steps, config.train.checkpoints_to_keep
    )
    saver.set_model(model)
    if already_done:
        fitted = _reload_finished(model, splits, paths, done)
    else:
        fitted = _fit(config, paths, model, splits, saver, chief)
    checkpoint = saver.save()
    saver.close()
    export_dir = export_model(model, paths, strategy)
    test = evaluate_test(model, config, splits) if mode == "train_and_evaluate" else None
    global_step = int(model.optimizer.iterations.numpy())
    if test is not None and chief and not already_done:
        writer = logs_lib.evaluation_writer(paths.logs)
        logs_lib.write_evaluation(writer, test, global_step)
        writer.close()
    summary = _base_summary(config, mode, model_dir, strategy)
    summary.update(
        {
            "global_step": global_step,
            "resumed_from_step": fitted["initial_step"],
            "already_complete": already_done,
            **_train_summary(config, fitted, test, started),
            "checkpoint": checkpoint,
            "export_dir": export_dir,
            "summary_path": paths.summary,
        }
    )
    status, line = _check_bar(config, test)
    summary["passed"] = status == EXIT_OK
    summary_lib.write_json(paths.summary, summary, strategy)
    ckpt_lib.write_done_marker(
        model_dir,
        {"checkpoint": checkpoint, "global_step": global_step, "config": to_dict(config)},
        strategy,
    )
    _finish(summary, line)
    return status


def _reload_finished(model: tfk.Model, splits: Any, paths: Paths, done: Any) -> dict[str, Any]:
    """A finished run found in `model_dir`: restores its last checkpoint (with the
    optimizer) instead of training again; its history and times come from summary.json."""
    print(
        f"Training in {paths.model_dir} is already complete (step {done.get('global_step')}); "
        "not training again. Delete the directory (or use another) to start over."
    )
    _restore(model, splits, ckpt_lib.latest(paths.checkpoints), include_optimizer=True)
    initial_step = int(model.optimizer.iterations.numpy())
    previous = _read_json(paths.summary) or {}
    return {
        "history": previous.get("history") or {},
        "train_seconds": 0.0,  # this run trained nothing
        "original_train_seconds": previous.get(
            "original_train_seconds", previous.get("train_seconds")
        ),
        "initial_step": initial_step,
    }


def _fit(
    config: Any, paths: Paths, model: tfk.Model, splits: Any, saver: Any, chief: bool
) -> dict[str, Any]:
    """Fits with the binary's callbacks (resuming from the backup if there is one)."""
    if chief:
        logs_lib.write_hparams(paths.logs, config)
    fit_kwargs, has_validation = _fit_arguments(config, splits)
    fit_kwargs["callbacks"] = _train_callbacks(config, paths, model, saver, has_validation)
    fit_started = time.perf_counter()
    history = model.fit(**fit_kwargs).history
    train_seconds = time.perf_counter() - fit_started
    return {
        "history": history,
        "train_seconds": train_seconds,
        "original_train_seconds": train_seconds,
        "initial_step": saver.initial_step,
    }


def _train_summary(
    config: Any, fitted: dict[str, Any], test: dict[str, Any] | None, started: float
) -> dict[str, Any]:
    """The training part of summary.json (from `epochs` to `wall_seconds`, in the order
    the file has always had): history, test results, settings and times."""
    history = fitted["history"]
    return {
        "epochs": config.train.epochs,
        "epochs_run": len(next(iter(history.values()), [])),
        "batch_size": config.train.batch_size,
        "steps_per_execution": config.train.steps_per_execution,
        "history": summary_lib.to_jsonable(history),
        "final_train": {k: v[-1] for k, v in summary_lib.to_jsonable(history).items() if v},
        "test": test,
        "test_accuracy": summary_lib.accuracy_of(test) if test else None,
        "min_accuracy": config.eval.min_accuracy,
        "train_seconds": fitted["train_seconds"],  # this run's fit (0 when already complete)
        "original_train_seconds": fitted["original_train_seconds"],  # the run that trained
        "wall_seconds": time.perf_counter() - started,
    }


def run(mode: str, config: Any, model_dir: str, started: float) -> int:
    if mode in TRAIN_MODES:
        return train(config, model_dir, mode, started)
    runner = {
        "evaluate": evaluate,
        "continuous_evaluate": continuous_evaluate,
        "predict": predict,
        "export": export,
    }[mode]
    return runner(config, model_dir, started)
