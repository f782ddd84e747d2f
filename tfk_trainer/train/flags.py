"""The command-line flags of `tfk-train`, and how they override the config.

`--config=path/to/file.py` names an ml_collections config file (executed to
get its `get_config()`; only that path is read), `--config=<name>` (no
directory, `.py` optional) a config shipped in `tfk_trainer/configs` when no
such file exists, and `--config.a.b=value` overrides one key. ml_collections parses override values literally by the
key's type: nothing on the command line is ever evaluated as code.

Flags that duplicate a config key (`--strategy`, `--tpu`, `--seed`,
`--steps_per_execution`, `--mixed_precision`, `--continuous_eval_timeout`)
override it when given on the command line; otherwise the config decides.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import ml_collections
import tensorflow as tf
from absl import flags
from ml_collections import config_flags

from tfk_trainer import compat, distribute
from tfk_trainer import configs as shipped_configs
from tfk_trainer.train import config as config_lib

FLAGS = flags.FLAGS

# Flag name -> the config key it overrides when given.
FLAG_TO_CONFIG = {
    "strategy": "runtime.strategy",
    "tpu": "runtime.tpu",
    "seed": "runtime.seed",
    "steps_per_execution": "train.steps_per_execution",
    "mixed_precision": "runtime.mixed_precision",
    "continuous_eval_timeout": "eval.continuous_timeout",
}

CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Path to an ml_collections config file defining get_config(), or the name of a shipped "
    f"config ({', '.join(shipped_configs.names())}); override keys with "
    "--config.section.key=value (e.g. --config.train.epochs=3).",
    lock_config=True,
)
flags.DEFINE_string(
    "model_dir", None, "Where checkpoints, logs, the export and the summaries are written."
)
flags.DEFINE_enum(
    "mode",
    "train_and_evaluate",
    list(config_lib.MODES),
    "train: fit, checkpoint, export. train_and_evaluate: also evaluate the test split at "
    "the end (the default). evaluate: the latest checkpoint on the test split. "
    "continuous_evaluate: every new checkpoint until training is done. predict: "
    "model_dir/predictions.npy for the test split. export: the latest checkpoint as a "
    "SavedModel in model_dir/export.",
)
flags.DEFINE_enum(
    "strategy",
    "default",
    list(distribute.NAMES),
    "tf.distribute strategy (tfk.distribute.resolve); overrides runtime.strategy when given.",
)
flags.DEFINE_string(
    "tpu", None, 'For --strategy=tpu: "local", a TPU name or grpc://host:port (runtime.tpu).'
)
flags.DEFINE_integer("seed", None, "Random seed (runtime.seed).", lower_bound=0)
flags.DEFINE_integer(
    "steps_per_execution",
    None,
    "Train steps per tf.function call (train.steps_per_execution).",
    lower_bound=1,
)
flags.DEFINE_enum(
    "mixed_precision",
    "none",
    list(config_lib.MIXED_PRECISION),
    "Keras dtype policy; overrides runtime.mixed_precision when given.",
)
flags.DEFINE_float(
    "continuous_eval_timeout",
    None,
    "continuous_evaluate: seconds to wait for a new checkpoint before giving up "
    "(eval.continuous_timeout).",
    lower_bound=0.0,
)
flags.DEFINE_boolean(
    "print_config",
    False,
    "Print the resolved config (every key as section.key = value, after the overrides "
    "and the checks) and exit 0 without training; --model_dir is then not needed.",
)
flags.DEFINE_boolean(
    "force_unlock",
    False,
    "Train modes: take over the lease of --model_dir (model_dir/LEASE) even if another "
    "trainer seems to hold it. Use only when you know that trainer is gone.",
)
flags.DEFINE_float(
    "lease_timeout",
    300.0,
    "Train modes: seconds after which a lease that was not refreshed is stale (taken over "
    "by the next trainer). The holder refreshes it every quarter of this.",
    lower_bound=1.0,
)
flags.mark_flags_as_required(["config"])
flags.register_multi_flags_validator(
    ["model_dir", "print_config"],
    lambda values: values["print_config"] or values["model_dir"] is not None,
    message="flag --model_dir must have a value other than None (only --print_config "
    "runs without it).",
)

NAMES = (
    "config",
    "model_dir",
    "mode",
    "print_config",
    "force_unlock",
    "lease_timeout",
    *FLAG_TO_CONFIG,
)


def show_in_help() -> None:
    """Lists these flags under --helpshort of the running program (absl shows the key
    flags of the main module, which is the console script or tools/train.py)."""
    for name in NAMES:
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])


class UsageError(Exception):
    """A flag or override is wrong; the message says which and what is accepted."""


def _override_paths(argv: list[str]) -> list[tuple[str, str]]:
    """`(argument, dotted key)` for every --config.<key> override in argv."""
    out = []
    for arg in argv[1:]:
        if arg == "--":
            break
        for prefix in ("--config.", "-config."):
            if arg.startswith(prefix):
                out.append((arg, arg[len(prefix) :].split("=", 1)[0]))
    return out


def _explain_override(argv: list[str], config: Any) -> str | None:
    """Names the override whose key the config lacks, with what it has there."""
    import difflib

    for arg, path in _override_paths(argv):
        node, walked = config, []
        for part in path.split("."):
            if not hasattr(node, "keys"):
                return (
                    f"{arg.split('=', 1)[0]}: '{'.'.join(walked)}' is a value "
                    f"({type(node).__name__}), not a section; it has no key '{part}'."
                )
            keys = list(node.keys())
            if part not in keys:
                where = "'" + ".".join(walked) + "'" if walked else "the config"
                close = difflib.get_close_matches(part, keys, n=1)
                hint = f' Did you mean "{".".join([*walked, close[0]])}"?' if close else ""
                listing = f" Keys in {where}: {sorted(keys)}." if keys else ""
                if not close and len(walked) == 1:
                    elsewhere = [
                        f"{section}.{part}"
                        for section in config.keys()
                        if hasattr(config[section], "keys") and part in config[section]
                    ]
                    if elsewhere:
                        hint = f' Did you mean "{elsewhere[0]}"?'

                return f"{arg.split('=', 1)[0]}: the config has no key '{path}'.{hint}{listing}"
            node = node[part]
            walked.append(part)
    return None


def _shipped_config_path(value: str) -> str:
    """`value` itself when it is a file (or has a directory part), else the file of the
    shipped config it names; ValueError listing the shipped names when there is none.

    A `path:argument` value (ml_collections passes the argument to get_config) keeps
    its argument.
    """
    name, colon, argument = value.partition(":")
    if not name or "/" in name or os.sep in name or tf.io.gfile.exists(name):
        return value
    return shipped_configs.path(name) + colon + argument


def resolve_config_names(argv: list[str]) -> list[str]:
    """argv with a `--config=<name>` of a shipped config replaced by its file's path."""
    out = list(argv)
    for i, arg in enumerate(out[1:], start=1):
        if arg == "--":
            break
        for prefix in ("--config=", "-config="):
            if arg.startswith(prefix):
                out[i] = prefix + _shipped_config_path(arg[len(prefix) :])
        if arg in ("--config", "-config") and i + 1 < len(out):
            out[i + 1] = _shipped_config_path(out[i + 1])
    return out


def parse(argv: list[str]) -> list[str]:
    """absl's flag parsing, with clear messages for bad overrides (exit status 2)."""
    try:
        argv = resolve_config_names(argv)
    except ValueError as e:
        _fail(str(e))
    sys.argv = argv  # ml_collections reads the config's overrides from sys.argv
    try:
        remaining = FLAGS(argv)
    except flags.Error as e:
        _fail(str(e))
    except Exception as e:  # noqa: BLE001 - ml_collections raises plain errors
        message = _explain_override(argv, _config_without_overrides(argv))
        if message is None:
            message = f"{_config_arg(argv)}: loading the config failed: {type(e).__name__}: {e}"
        _fail(message)
    config = CONFIG.value
    if not isinstance(config, ml_collections.ConfigDict):
        error = compat.config_load_error(config)
        if error:  # ml_collections defers a file it could not read to first use
            _fail(f"{_config_arg(argv)}: could not read the config file: {error}")
        _fail(
            f"{_config_arg(argv)}: get_config() must return an ml_collections.ConfigDict; it "
            f"returned {type(config).__name__}."
        )
    return remaining


def _config_arg(argv: list[str]) -> str:
    for arg in argv[1:]:
        if arg.startswith(("--config=", "-config=")):
            return arg
    return "--config"


def _config_without_overrides(argv: list[str]) -> Any:
    """The config as its file defines it (argv parsed again without the overrides)."""
    overrides = {arg for arg, _ in _override_paths(argv)}
    stripped = [a for a in argv if a not in overrides]
    saved = sys.argv
    sys.argv = stripped  # ml_collections reads the overrides from sys.argv
    try:
        FLAGS(stripped)
        return CONFIG.value
    except Exception:  # noqa: BLE001 - the file itself is broken: the caller reports that
        return None
    finally:
        sys.argv = saved


def _fail(message: str) -> None:
    print(f"tfk-train: error: {message}", file=sys.stderr)
    print("Pass --helpshort or --helpfull to see the flags.", file=sys.stderr)
    sys.exit(2)


def apply_overrides(config: Any) -> dict[str, Any]:
    """Copies the duplicated flags given on the command line into `config`.

    Returns `{config key: value}` of what was applied.
    """
    applied = {}
    for name, path in FLAG_TO_CONFIG.items():
        if not FLAGS[name].present:
            continue
        section, key = path.split(".")
        value = FLAGS[name].value
        if section in config:
            with config.unlocked():
                config[section][key] = value
        applied[path] = value
    return applied
