"""The config schema of `tfk-train`, and `base_config` for config files.

A config file defines `get_config()` returning an `ml_collections.ConfigDict`
with five sections:

- `model`: `name` (a registered model) and that model's own keys;
- `data`: `name` (a registered dataset), the common keys below and that
  dataset's own keys;
- `train`, `eval`, `runtime`: the fixed keys below.

Start from `base_config(model="mlp", data="fashion_mnist")`, which holds
every key with its default, then change what differs:

    from tfk_trainer.train.config import base_config

    def get_config():
        config = base_config(model="mlp", data="fashion_mnist")
        config.train.epochs = 5
        return config
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_collections
from ml_collections import config_dict

from tfk_trainer import distribute, registry

SECTIONS = ("model", "data", "train", "eval", "runtime")
MODES = ("train", "evaluate", "train_and_evaluate", "continuous_evaluate", "predict", "export")
TRAIN_MODES = ("train", "train_and_evaluate")
MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adagrad", "nadam", "adamax", "lion")
LR_SCHEDULES = ("constant", "cosine")
STATIC_REMAINDERS = ("drop", "wrap")
JIT_COMPILE = ("auto", "true", "false")
VERBOSE = ("auto", "0", "1", "2")


@dataclass(frozen=True)
class Field:
    """One fixed config key: its default, accepted types, and bounds or choices."""

    default: Any
    types: tuple[type, ...]
    help: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None  # exclusive when `exclusive_max`
    exclusive_max: bool = False
    nullable: bool = False  # None accepted (a placeholder)


_INT, _FLOAT, _STR, _BOOL, _SEQ = (int,), (int, float), (str,), (bool,), (tuple, list)

# Keys every `data` section has, whatever the dataset.
DATA_COMMON = {
    "validation_split": Field(
        0.1,
        _FLOAT,
        "fraction of the training arrays held out for validation",
        minimum=0.0,
        maximum=1.0,
        exclusive_max=True,
    ),
    "max_train_samples": Field(
        0, _INT, "use only the first N training examples (0: all)", minimum=0
    ),
    "max_test_samples": Field(0, _INT, "use only the first N test examples (0: all)", minimum=0),
}

FIXED: dict[str, dict[str, Field]] = {
    "train": {
        "epochs": Field(5, _INT, "training epochs", minimum=1),
        "batch_size": Field(128, _INT, "global training batch size", minimum=1),
        "steps_per_execution": Field(16, _INT, "train steps per tf.function call", minimum=1),
        "steps_per_epoch": Field(
            0, _INT, "cap on steps per epoch (0: one pass over the data)", minimum=0
        ),
        "shuffle": Field(True, _BOOL, "shuffle the training data every epoch"),
        "optimizer": Field("adam", _STR, "optimizer name", choices=OPTIMIZERS),
        "learning_rate": Field(1e-3, _FLOAT, "peak learning rate", minimum=0.0),
        "lr_schedule": Field("constant", _STR, "learning-rate schedule", choices=LR_SCHEDULES),
        "weight_decay": Field(0.0, _FLOAT, "decoupled weight decay (adamw, sgd, ...)", minimum=0.0),
        "clipnorm": Field(0.0, _FLOAT, "global gradient-norm clipping (0: off)", minimum=0.0),
        "loss": Field("sparse_categorical_crossentropy", _STR, "Keras loss name"),
        "metrics": Field(("accuracy",), _SEQ, "Keras metric names"),
        "checkpoint_every_steps": Field(
            0, _INT, "save to model_dir/checkpoints every N steps (0: every epoch)", minimum=0
        ),
        "checkpoints_to_keep": Field(
            5, _INT, "checkpoints kept in model_dir/checkpoints", minimum=1
        ),
        "backup_every_steps": Field(
            0, _INT, "back up to model_dir/backup every N steps (0: every epoch)", minimum=0
        ),
        "tensorboard_every_steps": Field(
            0,
            _INT,
            "batch scalars every N steps in model_dir/logs (0: epoch scalars only)",
            minimum=0,
        ),
        "early_stopping_patience": Field(
            0, _INT, "stop after N epochs without val_loss improvement (0: off)", minimum=0
        ),
    },
    "eval": {
        "batch_size": Field(512, _INT, "evaluation/prediction batch size", minimum=1),
        "steps": Field(0, _INT, "cap on evaluation steps (0: the whole test split)", minimum=0),
        "min_accuracy": Field(
            0.0,
            _FLOAT,
            "exit non-zero when the test accuracy is below this",
            minimum=0.0,
            maximum=1.0,
        ),
        "continuous_timeout": Field(
            3600.0,
            _FLOAT,
            "continuous_evaluate: give up after N s without a new checkpoint",
            minimum=0.0,
        ),
        "poll_interval": Field(
            5.0, _FLOAT, "continuous_evaluate: seconds between polls", minimum=0.0
        ),
    },
    "runtime": {
        "strategy": Field(
            "default", _STR, "tfk.distribute.resolve name", choices=tuple(distribute.NAMES)
        ),
        "tpu": Field("", _STR, 'TPU for strategy "tpu": "local", a name or grpc://host:port'),
        "seed": Field(0, _INT, "seed for keras.utils.set_random_seed", minimum=0),
        "mixed_precision": Field("none", _STR, "Keras dtype policy", choices=MIXED_PRECISION),
        "static_shapes": Field(
            None, _BOOL, "every batch the same shape (None: on under TPUStrategy)", nullable=True
        ),
        "static_remainder": Field(
            "drop", _STR, "static shapes: last batch", choices=STATIC_REMAINDERS
        ),
        "jit_compile": Field("auto", _STR, "XLA compilation", choices=JIT_COMPILE),
        "deterministic": Field(False, _BOOL, "enable TF op determinism (exact resume)"),
        "verbose": Field(
            "auto", _STR, "progress output: auto (bar on a terminal), 0, 1, 2", choices=VERBOSE
        ),
    },
}


def fixed_fields(section: str) -> dict[str, Field]:
    """The schema keys of a section (for model/data: the keys every entry has)."""
    if section == "data":
        return dict(DATA_COMMON)
    return dict(FIXED.get(section, {}))


def _field_value(field: Field) -> Any:
    if field.nullable and field.default is None:
        return config_dict.placeholder(field.types[0])
    return field.default


def base_config(model: str = "mlp", data: str = "fashion_mnist") -> ml_collections.ConfigDict:
    """Every key with its default, for the registered model and dataset named."""
    model_entry = registry.get_model(model)
    data_entry = registry.get_dataset(data)
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict({"name": model, **dict(model_entry.defaults)})
    data_section = {"name": data}
    data_section.update({k: f.default for k, f in DATA_COMMON.items()})
    data_section.update(dict(data_entry.defaults))
    config.data = ml_collections.ConfigDict(data_section)
    for section in ("train", "eval", "runtime"):
        config[section] = ml_collections.ConfigDict(
            {k: _field_value(f) for k, f in fixed_fields(section).items()}
        )
    return config


def to_dict(config: Any) -> Any:
    """A plain, JSON-able copy of a ConfigDict (tuples become lists)."""
    if isinstance(config, (ml_collections.ConfigDict, dict)):
        items = config.items() if isinstance(config, dict) else config.items()
        return {str(k): to_dict(v) for k, v in items}
    if isinstance(config, (tuple, list)):
        return [to_dict(v) for v in config]
    if isinstance(config, config_dict.FieldReference):
        return to_dict(config.get())
    return config


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """`{"train.learning_rate": 0.001, ...}`: every leaf of the config under its dotted key.

    One flat namespace is what `--print_config` prints and what TensorBoard's HParams
    tab compares runs on; the dotted keys are the ones `--config.<key>=` overrides.
    """
    out: dict[str, Any] = {}
    for key, value in (to_dict(config) if prefix == "" else config).items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def format_config(config: Any) -> str:
    """The resolved config as `section.key = value` lines (Python literals), one per key."""
    return "\n".join(f"{key} = {value!r}" for key, value in flatten(config).items())
