"""Builds the model from a resolved config and runs one mode.

The `model_dir` layout is described in `tfk_trainer.train.paths`.

This module checks a run before it starts (`precheck`), runs the train modes
and dispatches the others; the parts live in `train/paths.py` (the layout), `train/building.py`, `train/fitting.py`, `train/export_model.py`,
`train/modes.py` and `train/reporting.py` (exit statuses, summaries).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

import tfk_trainer as tfk
from tfk_trainer import paths as paths_lib
from tfk_trainer.train import checkpoints as ckpt_lib
from tfk_trainer.train import lease as lease_lib
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
from tfk_trainer.train.config import TRAIN_MODES, flatten, to_dict
from tfk_trainer.train.export_model import export_model
from tfk_trainer.train.fitting import _fit_arguments, _train_callbacks
from tfk_trainer.train.modes import continuous_evaluate, evaluate, export, predict
from tfk_trainer.train.paths import Paths, _read_json
from tfk_trainer.train.reporting import (
    EXIT_BELOW_BAR,
    EXIT_CRASH,
    EXIT_LOCKED,
    EXIT_NO_CHECKPOINT,
    EXIT_OK,
    EXIT_PREEMPTED,
    EXIT_USAGE,
    _base_summary,
    _check_bar,
    _finish,
)
from tfk_trainer.train.validation import ConfigError

# The binary's surface (main.py and tests use these through this module).
__all__ = [
    "EXIT_BELOW_BAR",
    "EXIT_CRASH",
    "EXIT_LOCKED",
    "EXIT_NO_CHECKPOINT",
    "EXIT_OK",
    "EXIT_PREEMPTED",
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


# Config keys whose change alters the model's or the optimizer's variables: a run
# cannot resume from state written with other values (the restore would fail late,
# or, for the optimizer, silently start from fresh slots).
STATE_KEYS = (
    "model.",  # every model key
    "data.name",
    "data.input_shape",
    "data.num_classes",
    "data.vocab_size",
    "train.optimizer",
)


def _state_differences(old: Any, new: Any) -> list[str]:
    """`key: old -> new` for each STATE_KEYS key that differs between two configs."""
    old_flat, new_flat = flatten(old or {}), flatten(new)
    keys = sorted(
        k for k in set(old_flat) | set(new_flat) if k.startswith(STATE_KEYS) or k in STATE_KEYS
    )
    missing = object()
    return [
        f"{k}: {old_flat.get(k, missing)!r} -> {new_flat.get(k, missing)!r}".replace(
            repr(missing), "(absent)"
        )
        for k in keys
        if old_flat.get(k, missing) != new_flat.get(k, missing)
    ]


def _resumable_state(paths: Paths) -> str | None:
    """What in `model_dir` a train mode would resume from (None: nothing)."""
    if tf.io.gfile.isdir(paths.backup) and tf.io.gfile.listdir(paths.backup):
        return "an interrupted run (backup/)"
    if ckpt_lib.read_marker(paths.model_dir, ckpt_lib.FIT_DONE_MARKER) is not None:
        return f"a trained run ({ckpt_lib.FIT_DONE_MARKER})"
    if ckpt_lib.latest(paths.checkpoints) is not None:
        return "checkpoints (checkpoints/)"
    return None


def precheck(config: Any, model_dir: str, mode: str, force_unlock: bool = False) -> None:
    """Mode-specific checks that need no data or TensorFlow work, before anything is
    written; raises ConfigError (or `lease.LeaseHeld` when another trainer holds
    `model_dir`)."""
    paths = Paths(model_dir)
    if tf.io.gfile.exists(model_dir) and not tf.io.gfile.isdir(model_dir):
        raise ConfigError([f"--model_dir {model_dir!r} exists and is not a directory."])
    # Every mode writes there (checkpoints, results, predictions): fail now, not
    # after the data is loaded or an epoch is trained.
    problem = paths_lib.creatable_problem(model_dir)
    if problem is not None:
        raise ConfigError(
            [f"--model_dir {model_dir!r} cannot be created or written: {problem[1]}."]
        )
    if mode in TRAIN_MODES:
        lease_lib.check_free(model_dir, force=force_unlock)
        for marker in (ckpt_lib.DONE_MARKER, ckpt_lib.FIT_DONE_MARKER):
            done = ckpt_lib.read_marker(model_dir, marker)
            if done and done.get("config") is not None:
                diffs = _config_differences(_training_part(done["config"]), _training_part(config))
                if diffs:
                    raise ConfigError(
                        [
                            f"--model_dir {model_dir!r} holds a finished training run "
                            f"({marker}) with a different config ({'; '.join(diffs[:5])}). Use "
                            "a new --model_dir, or delete this one to start over."
                        ]
                    )
        state = _resumable_state(paths)
        previous = _read_json(paths.config)
        if state is not None and previous is not None:
            diffs = _state_differences(previous, config)
            if diffs:
                raise ConfigError(
                    [
                        f"--model_dir {model_dir!r} holds {state} whose model or optimizer "
                        f"state differs from this config ({'; '.join(diffs)}), so it cannot "
                        f"resume. Rerun with the config in {paths.config!r}, or use a new "
                        "--model_dir. Nothing was changed."
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


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM (preemption) outside `fit` ends the run with `Preempted` (exit 143).

    Inside `fit`, BackupAndRestore installs its own handler (save, then exit 143) and
    puts this one back when fit ends. What is already saved is kept: a SIGTERM before
    FIT_DONE resumes from the backup, after it from the final checkpoint."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise tfk.callbacks.Preempted(
            "SIGTERM received after training's last backup; what is saved is kept: "
            "rerun the same command to finish (it does not train again)."
        )

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def train(
    config: Any,
    model_dir: str,
    mode: str,
    started: float,
    force_unlock: bool = False,
    lease_timeout: float = lease_lib.DEFAULT_TIMEOUT,
) -> int:
    """Trains (or, when a finished run is found, reloads), exports, evaluates the test
    split for `train_and_evaluate`, and writes the summary and the done marker.

    The window after `fit` is safe to kill: the backup is kept until TRAINING_DONE
    is written, and FIT_DONE (written once the final checkpoint is saved) makes a
    rerun restore that checkpoint and do only the export, evaluation and summary."""
    with _sigterm_exits():
        paths = Paths(model_dir)
        strategy = setup_runtime(config)
        chief = tfk.distribute.is_chief(strategy)
        splits = load_data(config)
        print(
            f"data {config.data.name!r}: input shape {tuple(splits.input_shape)}, "
            f"{splits.num_classes} classes; model {config.model.name!r}; {mode} in {model_dir}",
            flush=True,
        )
        model = build_model(config, splits, strategy)
        # Taken (and model_dir created) only once the data loaded and the model
        # compiled, so a config that fails there (an unknown loss, a model key its
        # builder rejects) leaves nothing.
        lease = lease_lib.Lease(model_dir, lease_timeout) if chief else None
        if lease is not None:
            lease.acquire(force=force_unlock)
        try:
            return _train_leased(config, paths, mode, started, strategy, chief, splits, model)
        finally:
            if lease is not None:
                lease.release()


def _train_leased(
    config: Any,
    paths: Paths,
    mode: str,
    started: float,
    strategy: Any,
    chief: bool,
    splits: Any,
    model: tfk.Model,
) -> int:
    """`train` once this trainer holds the lease of model_dir."""
    model_dir = paths.model_dir
    done = ckpt_lib.read_done_marker(model_dir)
    already_done = bool(done) and ckpt_lib.latest(paths.checkpoints) is not None
    fit_done = None if already_done else ckpt_lib.read_marker(model_dir, ckpt_lib.FIT_DONE_MARKER)
    fit_checkpoint = _fit_checkpoint(paths, fit_done)
    summary_lib.write_json(paths.config, to_dict(config), strategy)
    if not already_done:
        ckpt_lib.remove_done_marker(model_dir, strategy)
    saver = ckpt_lib.CheckpointSaver(
        paths.checkpoints, config.train.checkpoint_every_steps, config.train.checkpoints_to_keep
    )
    saver.set_model(model)
    if already_done:
        fitted = _reload_finished(model, splits, paths, done)
    elif fit_checkpoint is not None:
        fitted = _reload_fitted(model, splits, paths, fit_done, fit_checkpoint)
    else:
        fitted = _fit(config, paths, model, splits, saver, chief)
        fit_checkpoint = saver.save()
        ckpt_lib.write_marker(
            model_dir,
            ckpt_lib.FIT_DONE_MARKER,
            summary_lib.to_jsonable(
                {
                    "checkpoint": fit_checkpoint,
                    "global_step": int(model.optimizer.iterations.numpy()),
                    **fitted,
                    "config": to_dict(config),
                }
            ),
            strategy,
        )
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
    # Only now is the backup no longer needed (nor FIT_DONE: TRAINING_DONE replaces it).
    if chief:
        if tf.io.gfile.isdir(paths.backup):
            tf.io.gfile.rmtree(paths.backup)
        ckpt_lib.remove_marker(model_dir, ckpt_lib.FIT_DONE_MARKER, strategy)
    _finish(summary, line)
    return status


def _fit_checkpoint(paths: Paths, fit_done: dict[str, Any] | None) -> str | None:
    """The final checkpoint of a finished `fit` (FIT_DONE), if it can be read back."""
    if not fit_done or fit_done.get("global_step") is None:
        return None
    path = paths_lib.join(paths.checkpoints, f"ckpt-{int(fit_done['global_step'])}")
    if tf.io.gfile.exists(path + ".index"):
        return path
    print(
        f"{ckpt_lib.FIT_DONE_MARKER} names {path!r}, which is missing: resuming from the "
        "backup instead.",
        flush=True,
    )
    return None


def _reload_fitted(
    model: tfk.Model, splits: Any, paths: Paths, fit_done: dict[str, Any], path: str
) -> dict[str, Any]:
    """`fit` finished in an earlier run that stopped before TRAINING_DONE: restores its
    final checkpoint (with the optimizer) instead of training again."""
    print(
        f"Training in {paths.model_dir} finished fitting (step {fit_done.get('global_step')}) "
        "but stopped before completing; restoring its final checkpoint and finishing "
        "(export, evaluation, summary) without training again.",
        flush=True,
    )
    _restore(model, splits, path, include_optimizer=True)
    return {
        "history": fit_done.get("history") or {},
        "train_seconds": 0.0,  # this run trained nothing
        "original_train_seconds": fit_done.get("original_train_seconds"),
        "initial_step": int(model.optimizer.iterations.numpy()),
    }


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


def run(
    mode: str,
    config: Any,
    model_dir: str,
    started: float,
    force_unlock: bool = False,
    lease_timeout: float = lease_lib.DEFAULT_TIMEOUT,
) -> int:
    """Runs `mode`; returns the exit status (see `reporting`)."""
    if mode in TRAIN_MODES:
        return train(config, model_dir, mode, started, force_unlock, lease_timeout)
    runner = {
        "evaluate": evaluate,
        "continuous_evaluate": continuous_evaluate,
        "predict": predict,
        "export": export,
    }[mode]
    return runner(config, model_dir, started)
