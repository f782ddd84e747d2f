"""Registries of models and datasets that training configs refer to by name.

    from tfk_trainer import registry

    @registry.register_model("tiny_cnn", defaults={"filters": 8})
    def tiny_cnn(config, input_shape, num_classes):
        ...  # returns a keras.Model; config is the config's `model` section

    @registry.register_dataset("my_data", defaults={"path": ""})
    def my_data(config):
        ...  # returns tfk_trainer.train.data.Splits; config is the `data` section

A config file may hold such registrations: `tfk-train --config=my_config.py`
executes the file, so `config.model.name = "tiny_cnn"` then works.

`defaults` (optional) lists the section keys the function reads, with their
default values: the binary fills in the keys a config leaves out, checks the
types of those it sets, and rejects keys that are neither common nor listed.
`check` (optional) is called with the section (`model` or `data`) before
any data is loaded or training starts, once the section's keys have the
right types, and returns a list of problems, each naming its key (e.g.
"model.dropout must be in [0, 1); received 1.5.", or a missing file): the
binary reports them with the other config errors and exits with status 2,
instead of failing inside the builder after the data is loaded.

The built-in entries ("mlp", "resnet", "transformer"; "fashion_mnist",
"npz", "synthetic", "tfds", "tfrecord") are registered on first use of the
registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Entry",
    "register_model",
    "register_dataset",
    "get_model",
    "get_dataset",
    "model_names",
    "dataset_names",
]

_BUILTIN_MODULES = ("tfk_trainer.train.models", "tfk_trainer.train.data")


@dataclass(frozen=True)
class Entry:
    """A registered model builder or dataset loader."""

    name: str
    fn: Callable[..., Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[Any], list[str]] | None = None


_MODELS: dict[str, Entry] = {}
_DATASETS: dict[str, Entry] = {}
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def _same_definition(a: Callable, b: Callable) -> bool:
    """True when `b` is `a` re-created by executing the same source again (a config file
    loaded twice), which replaces the entry instead of being a name clash."""
    code_a, code_b = getattr(a, "__code__", None), getattr(b, "__code__", None)
    return (
        code_a is not None
        and code_b is not None
        and getattr(a, "__qualname__", None) == getattr(b, "__qualname__", None)
        and code_a.co_filename == code_b.co_filename
    )


def _register(
    table: dict[str, Entry],
    kind: str,
    name: str,
    defaults: Mapping[str, Any] | None,
    check: Callable[[Any], list[str]] | None,
) -> Callable[[Callable], Callable]:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"A {kind} name must be an identifier-like string; received {name!r}.")
    defaults = dict(defaults or {})
    if "name" in defaults:
        raise ValueError(f"The defaults of {kind} {name!r} must not set 'name' (it is reserved).")

    def decorator(fn: Callable) -> Callable:
        if not callable(fn):
            raise TypeError(f"register_{kind}({name!r}) decorates a function; received {fn!r}.")
        existing = table.get(name)
        if existing is not None and not _same_definition(existing.fn, fn):
            raise ValueError(
                f"A {kind} named {name!r} is already registered (by "
                f"{getattr(existing.fn, '__module__', '?')}.{getattr(existing.fn, '__qualname__', '?')}); "
                "choose another name."
            )
        table[name] = Entry(name, fn, defaults, check)
        return fn

    return decorator


def register_model(
    name: str,
    *,
    defaults: Mapping[str, Any] | None = None,
    check: Callable[[Any], list[str]] | None = None,
) -> Callable[[Callable], Callable]:
    """Registers `fn(config, input_shape, num_classes) -> keras.Model` under `name`.

    `config` is the config's `model` section, `input_shape` the shape of one
    example (no batch dimension), `num_classes` the number of labels.
    `check(config) -> list[str]` (optional) validates the section's values
    up front; see the module docstring.
    """
    _load_builtins()
    return _register(_MODELS, "model", name, defaults, check)


def register_dataset(
    name: str,
    *,
    defaults: Mapping[str, Any] | None = None,
    check: Callable[[Any], list[str]] | None = None,
) -> Callable[[Callable], Callable]:
    """Registers `fn(config) -> tfk_trainer.train.data.Splits` under `name`.

    `config` is the config's `data` section.
    """
    _load_builtins()
    return _register(_DATASETS, "dataset", name, defaults, check)


def _get(table: dict[str, Entry], kind: str, name: str) -> Entry:
    _load_builtins()
    if name not in table:
        raise KeyError(f"Unknown {kind} {name!r}; registered {kind}s: {sorted(table)}.")
    return table[name]


def get_model(name: str) -> Entry:
    return _get(_MODELS, "model", name)


def get_dataset(name: str) -> Entry:
    return _get(_DATASETS, "dataset", name)


def model_names() -> list[str]:
    _load_builtins()
    return sorted(_MODELS)


def dataset_names() -> list[str]:
    _load_builtins()
    return sorted(_DATASETS)
