"""The binary's up-front checks, in process: model keys and `--model_dir`.

`tests/test_error_catalogue.py` runs the binary for one case of each
(`binary-model-dropout-out-of-range`, `binary-model-dir-not-writable`); these
cover the rest of the built-in models' checks, the `check=` hook of
`register_model`, and the model_dir probe, without a subprocess per case.
"""

from __future__ import annotations

import os
import re

import pytest

from tfk_trainer import registry
from tfk_trainer.train import checkpoints as ckpt_lib
from tfk_trainer.train import experiment
from tfk_trainer.train.config import base_config
from tfk_trainer.train.validation import ConfigError, resolve


def _problems(model: str, **keys) -> list[str]:
    config = base_config(model=model, data="synthetic")
    for key, value in keys.items():
        setattr(config.model, key, value)
    try:
        resolve(config)
    except ConfigError as e:
        return e.problems
    return []


@pytest.mark.parametrize("model", ["mlp", "resnet", "transformer"])
def test_builtin_defaults_pass(model):
    assert _problems(model) == []


@pytest.mark.parametrize(
    "model, keys, expected",
    [
        ("mlp", {"dropout": 1.0}, r"model\.dropout must be in \[0, 1\).*received 1\.0"),
        ("mlp", {"dropout": -0.1}, r"model\.dropout must be in \[0, 1\)"),
        ("mlp", {"hidden_units": (8, 0)}, r"model\.hidden_units must be .*positive ints"),
        ("mlp", {"activation": "relux"}, r"model\.activation 'relux' is not a Keras activation"),
        ("resnet", {"stage_filters": ()}, r"model\.stage_filters must be a non-empty tuple"),
        ("resnet", {"blocks_per_stage": 0}, r"model\.blocks_per_stage must be an int >= 1"),
        ("resnet", {"l2": -1.0}, r"model\.l2 must be >= 0"),
        ("resnet", {"dropout": 1.5}, r"model\.dropout must be in \[0, 1\)"),
        ("transformer", {"num_heads": 0}, r"model\.num_heads must be an int >= 1; received 0"),
        ("transformer", {"vocab_size": -1}, r"model\.vocab_size must be an int >= 0"),
        (
            "transformer",
            {"embed_dim": 10, "num_heads": 3},
            r"model\.embed_dim \(10\) must be divisible by model\.num_heads \(3\)",
        ),
        ("transformer", {"dropout": 1.0}, r"model\.dropout must be in \[0, 1\)"),
    ],
)
def test_builtin_model_checks_name_the_key(model, keys, expected):
    problems = _problems(model, **keys)
    assert len(problems) == 1 and re.search(expected, problems[0]), problems


def test_all_model_problems_are_listed_together():
    problems = _problems("mlp", dropout=1.5, activation="relux", hidden_units=(0,))
    assert [p.split(" ")[0] for p in problems] == [
        "model.hidden_units",
        "model.dropout",
        "model.activation",
    ]


def test_a_wrong_type_is_reported_without_running_the_check():
    """The check sees only well-typed values: a string width is a type error."""
    problems = _problems("mlp", hidden_units=("wide",))
    assert len(problems) == 1 and "model.hidden_units[0] must be int" in problems[0], problems


def test_user_model_check_hook(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))

    def check(config):
        return (
            [] if config.width % 2 == 0 else [f"model.width must be even; received {config.width}."]
        )

    @registry.register_model("even_net", defaults={"width": 8}, check=check)
    def even_net(config, input_shape, num_classes):  # pragma: no cover - never built
        raise AssertionError

    assert _problems("even_net") == []
    assert _problems("even_net", width=3) == ["model.width must be even; received 3."]


def test_a_check_that_raises_is_reported(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))

    def check(config):
        raise RuntimeError("boom")

    @registry.register_model("raising_check_net", defaults={"width": 8}, check=check)
    def net(config, input_shape, num_classes):  # pragma: no cover - never built
        raise AssertionError

    assert _problems("raising_check_net") == [
        "model.name 'raising_check_net': its check raised RuntimeError: boom"
    ]


# -- --model_dir ----------------------------------------------------------------------


def _precheck(model_dir: str, mode: str = "train") -> None:
    experiment.precheck(resolve(base_config(model="mlp", data="synthetic")), model_dir, mode)


@pytest.mark.parametrize("mode", ["train", "train_and_evaluate", "evaluate", "predict"])
def test_model_dir_below_a_file_is_a_config_error(tmp_path, mode):
    (tmp_path / "afile").write_text("x")
    model_dir = str(tmp_path / "afile" / "sub" / "run")
    with pytest.raises(ConfigError, match=r"--model_dir '[^']*afile/sub/run' cannot be created"):
        _precheck(model_dir, mode)
    assert ckpt_lib.read_done_marker(model_dir) is None  # not a NotADirectoryError


def test_read_only_model_dir_is_a_config_error(tmp_path, monkeypatch):
    """os.access mocked: root (these tests may run as root) ignores permission bits."""
    from tfk_trainer import paths

    monkeypatch.setattr(paths.os, "access", lambda path, mode: False)
    with pytest.raises(
        ConfigError, match=r"cannot be created or written: '[^']*' is not a writable"
    ):
        _precheck(str(tmp_path / "run"))


def test_new_and_existing_model_dirs_pass_and_nothing_is_created(tmp_path):
    _precheck(str(tmp_path))
    _precheck(str(tmp_path / "new" / "run"))
    assert not os.path.exists(tmp_path / "new")


# -- NaN and inf -------------------------------------------------------------------


def _all_problems(config) -> list[str]:
    try:
        resolve(config)
    except ConfigError as e:
        return e.problems
    return []


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize(
    "section, key",
    [
        ("train", "learning_rate"),
        ("train", "weight_decay"),
        ("train", "clipnorm"),
        ("eval", "min_accuracy"),
        ("eval", "continuous_timeout"),
        ("eval", "poll_interval"),
        ("data", "validation_split"),
        ("model", "dropout"),
    ],
)
def test_non_finite_numbers_are_rejected_naming_the_key(section, key, value):
    """Bounds alone let NaN through (every comparison with NaN is False): a NaN
    learning rate trained NaN and exited 0, a NaN timeout never expired."""
    config = base_config(model="mlp", data="synthetic")
    config[section][key] = value
    assert _all_problems(config) == [
        f"{section}.{key} must be a finite number; received {value!r}."
    ]


def test_non_finite_number_inside_a_tuple_key_is_rejected(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))

    @registry.register_model("float_tuple_net", defaults={"scales": (1.0, 2.0)})
    def net(config, input_shape, num_classes):  # pragma: no cover - never built
        raise AssertionError

    config = base_config(model="float_tuple_net", data="synthetic")
    config.model.scales = (1.0, float("nan"))
    assert _all_problems(config) == ["model.scales[1] must be a finite number; received nan."]
