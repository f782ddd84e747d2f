"""Checks and completes a config before anything runs.

`resolve(config)` returns a new, locked ConfigDict with every key of the
schema (missing keys take their defaults), or raises `ConfigError` listing
every problem, each naming the key and what it accepts: unknown sections
or keys (with a suggestion), wrong types, values out of range, unknown
model/dataset names (with the registered names), and dataset problems such
as a missing file. Nothing is evaluated: values are only compared.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

import ml_collections
from absl import logging
from ml_collections import config_dict

from tfk_trainer import registry
from tfk_trainer.train import config as config_lib
from tfk_trainer.train.config import Field


class ConfigError(ValueError):
    """The config (or a flag) is invalid; the message lists each problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


def _type_name(value: Any) -> str:
    return type(value).__name__


def _suggest(key: str, accepted: list[str]) -> str:
    close = difflib.get_close_matches(key, accepted, n=1)
    return f' Did you mean "{close[0]}"?' if close else ""


def _check_type(path: str, value: Any, types: tuple[type, ...], nullable: bool) -> str | None:
    if value is None:
        return None if nullable else f"{path} must not be None."
    if bool in types:
        ok = isinstance(value, bool)
    elif int in types:
        ok = isinstance(value, tuple(types)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tuple(types))
    if ok:
        return None
    names = " or ".join(t.__name__ for t in types) + (" or None" if nullable else "")
    return f"{path} must be {names}; received {value!r} ({_type_name(value)})."


def _non_finite(path: str, value: Any) -> str | None:
    """NaN or inf where a number is meant. Bounds cannot catch them (every comparison
    with NaN is False: `eval.min_accuracy=nan` would always pass, a NaN
    `eval.continuous_timeout` never expire), so they are rejected by name."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path} must be a finite number; received {value!r}."
    return None


def _check_field(path: str, value: Any, field: Field) -> list[str]:
    problem = _check_type(path, value, field.types, field.nullable)
    if problem:
        return [problem]
    if value is None:
        return []
    problem = _non_finite(path, value)
    if problem:
        return [problem]
    problems = []
    if field.choices is not None and value not in field.choices:
        problems.append(f"{path} must be one of {list(field.choices)}; received {value!r}.")
    if field.minimum is not None and value < field.minimum:
        problems.append(f"{path} must be >= {field.minimum:g}; received {value!r}.")
    if field.maximum is not None:
        too_big = value >= field.maximum if field.exclusive_max else value > field.maximum
        if too_big:
            bound = "<" if field.exclusive_max else "<="
            problems.append(f"{path} must be {bound} {field.maximum:g}; received {value!r}.")
    if path == "train.metrics" and (not value or not all(isinstance(v, str) for v in value)):
        problems.append(
            f"train.metrics must be a non-empty list of metric names; received {value!r}."
        )
    return problems


def _like_default(path: str, value: Any, default: Any) -> list[str]:
    """Type check of an entry-specific key against the type of its default."""
    if default is None:
        return []
    if isinstance(default, bool):
        types: tuple[type, ...] = (bool,)
    elif isinstance(default, int):
        types = (int,)
    elif isinstance(default, float):
        types = (int, float)
    elif isinstance(default, (tuple, list)):
        types = (tuple, list)
    else:
        types = (type(default),)
    problem = _check_type(path, value, types, nullable=False) or _non_finite(path, value)
    if problem:
        return [problem]
    if isinstance(default, (tuple, list)) and default and isinstance(value, (tuple, list)):
        element = default[0]
        for i, item in enumerate(value):
            problem = _like_default(f"{path}[{i}]", item, element)
            if problem:
                return problem
    return []


def _section_dict(config: Any, section: str, problems: list[str]) -> dict[str, Any] | None:
    if section not in config:
        problems.append(
            f"the config has no '{section}' section (needed: {list(config_lib.SECTIONS)}); "
            "start from tfk_trainer.train.config.base_config()."
        )
        return None
    value = config[section]
    if not isinstance(value, (ml_collections.ConfigDict, dict)):
        problems.append(f"'{section}' must be a ConfigDict section; received {_type_name(value)}.")
        return None
    out = {}
    for key in value.keys():
        item = value[key]
        if isinstance(item, config_dict.FieldReference):
            item = item.get()
        out[key] = item
    return out


def _keys_of_other_entries(section: str) -> set[str]:
    names, get = (
        (registry.model_names, registry.get_model)
        if section == "model"
        else (registry.dataset_names, registry.get_dataset)
    )
    return {key for name in names() for key in get(name).defaults}


def _resolve_entry_section(
    section: str, values: dict[str, Any], entry: registry.Entry | None, problems: list[str]
) -> dict[str, Any]:
    """model/data: `name`, the common keys (data), and the entry's own keys."""
    fixed = config_lib.fixed_fields(section)
    resolved: dict[str, Any] = {"name": values.get("name")}
    for key, field in fixed.items():
        value = values.get(key, field.default)
        problems.extend(_check_field(f"{section}.{key}", value, field))
        resolved[key] = value
    if entry is None:
        resolved.update({k: v for k, v in values.items() if k not in resolved})
        return resolved
    defaults = dict(entry.defaults)
    for key, default in defaults.items():
        value = values.get(key, default)
        problems.extend(_like_default(f"{section}.{key}", value, default))
        resolved[key] = value
    accepted = ["name", *fixed, *defaults]
    for key in values:
        if key in accepted:
            continue
        if key in _keys_of_other_entries(section):
            # A key of another model/dataset (the name was switched by an override): unused.
            logging.warning(
                "%s.%s is not used by %s %r; ignoring it.", section, key, section, values["name"]
            )
            continue
        if defaults:
            problems.append(
                f"unknown key '{section}.{key}' for {section} {values.get('name')!r}."
                f"{_suggest(key, accepted)} Accepted keys: {sorted(accepted)}."
            )
        resolved[key] = values[key]  # an entry without declared defaults reads what it likes
    return resolved


def _run_check(section: str, entry: registry.Entry, values: dict[str, Any]) -> list[str]:
    """An entry's `check` on its section; a check that raises is reported, not a crash."""
    try:
        found = entry.check(ml_collections.ConfigDict(values))
    except Exception as e:  # noqa: BLE001 - user code: report it with the other problems
        return [f"{section}.name {entry.name!r}: its check raised {type(e).__name__}: {e}"]
    return [str(p) for p in found or []]


def _unknown_sections(config: Any) -> list[str]:
    """One problem per top-level key that is not a known section."""
    return [
        f"unknown config section '{key}'.{_suggest(key, list(config_lib.SECTIONS))} "
        f"Accepted sections: {list(config_lib.SECTIONS)}."
        for key in config.keys()
        if key not in config_lib.SECTIONS
    ]


# model / data: the registered entry named by `name`, and how to list the names.
_REGISTERED = {
    "model": (registry.get_model, registry.model_names),
    "data": (registry.get_dataset, registry.dataset_names),
}


def _resolve_registered(section: str, values: dict[str, Any], problems: list[str]) -> Any:
    """A model/data section: its registered name first, then its keys."""
    get, names = _REGISTERED[section]
    name = values.get("name")
    entry = None
    if not isinstance(name, str) or name not in names():
        kind = "model" if section == "model" else "dataset"
        problems.append(
            f"{section}.name {name!r} is not a registered {kind}; registered {kind}s: "
            f"{names()} (register your own with @tfk_trainer.registry.register_{kind})."
        )
    else:
        entry = get(name)
    return _resolve_entry_section(section, values, entry, problems)


def _resolve_fixed(section: str, values: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """A train/eval/runtime section: every field (defaults filled in), checked."""
    fields = config_lib.fixed_fields(section)
    out = {}
    for key, field in fields.items():
        value = values.get(key, field.default)
        problems.extend(_check_field(f"{section}.{key}", value, field))
        out[key] = value
    for key in values:
        if key not in fields:
            problems.append(
                f"unknown key '{section}.{key}'.{_suggest(key, list(fields))} "
                f"Accepted keys: {sorted(fields)}."
            )
    return out


def _runtime_combinations(runtime: dict[str, Any]) -> list[str]:
    """Runtime settings that are fine alone but not together."""
    problems = []
    if runtime["tpu"] and runtime["strategy"] not in ("tpu", "auto"):
        problems.append(
            f"runtime.tpu is set ({runtime['tpu']!r}) but runtime.strategy is "
            f"{runtime['strategy']!r}; use strategy 'tpu' (or 'auto'), or leave tpu empty."
        )
    if runtime["mixed_precision"] == "mixed_float16" and runtime["strategy"] == "tpu":
        problems.append(
            "runtime.mixed_precision 'mixed_float16' is for GPUs; TPUs use 'mixed_bfloat16'."
        )
    return problems


def _entry_checks(resolved: dict[str, Any], problems: list[str]) -> None:
    """The entries' own checks (values, files), once their sections' keys and types are
    fine; their problems are appended to `problems`."""
    for section, (get, names) in _REGISTERED.items():
        values = resolved.get(section)
        section_ok = values is not None and not any(
            p.startswith((f"{section}.", f"unknown key '{section}.")) for p in problems
        )
        if section_ok and values["name"] in names():
            entry = get(values["name"])
            if entry.check is not None:
                problems.extend(_run_check(section, entry, values))


def resolve(config: Any) -> ml_collections.ConfigDict:
    """The complete, checked config; raises `ConfigError` listing every problem."""
    if not isinstance(config, (ml_collections.ConfigDict, dict)):
        raise ConfigError(
            [
                f"get_config() must return an ml_collections.ConfigDict; it returned {_type_name(config)}."
            ]
        )
    problems = _unknown_sections(config)
    sections = {s: _section_dict(config, s, problems) for s in config_lib.SECTIONS}
    resolved: dict[str, Any] = {}
    for section in _REGISTERED:
        if sections[section] is not None:
            resolved[section] = _resolve_registered(section, sections[section], problems)
    for section in ("train", "eval", "runtime"):
        if sections[section] is not None:
            resolved[section] = _resolve_fixed(section, sections[section], problems)
    if not problems:
        problems.extend(_runtime_combinations(resolved["runtime"]))
    _entry_checks(resolved, problems)
    if problems:
        raise ConfigError(problems)

    out = ml_collections.ConfigDict(resolved)
    out.lock()
    return out
