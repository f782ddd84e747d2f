"""Batch logs read lazily from the device, and logged values as Python numbers.

A leaf module: the driver (engine/loop.py) builds `LazyLogs`, the callbacks
read them, and neither has to import the other for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any


class LazyLogs(Mapping):
    """Batch logs whose keys are known and whose values are read on first access.

    `read` returns a dict of device tensors; it runs at most once, and only
    when a value is looked up, so `logs or {}`, `len(logs)` and `"loss" in
    logs` stay free.
    """

    def __init__(self, keys: Iterable[str], read: Callable[[], Mapping[str, Any]]):
        self._keys = list(keys)
        self._read = read
        self._values: dict[str, float] | None = None

    def _materialize(self) -> dict[str, float]:
        if self._values is None:
            raw = self._read()
            self._values = {k: to_python(raw[k]) for k in self._keys if k in raw}
            self._keys = [k for k in self._keys if k in raw]  # only what was logged
            for k in raw:
                if k not in self._values:
                    self._values[k] = to_python(raw[k])
                    self._keys.append(k)
        return self._values

    @property
    def materialized(self) -> bool:
        return self._values is not None

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys:
            raise KeyError(key)
        return self._materialize()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._keys))

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def copy(self) -> dict[str, Any]:
        return dict(self._materialize())

    def __repr__(self) -> str:
        return repr(self._materialize())


def to_python(value: Any) -> Any:
    """A logged value as Python: a tensor or one-element array becomes its number
    (what Keras's callbacks and `History` hold); anything else is returned as is."""
    if hasattr(value, "numpy"):
        value = value.numpy()
    if hasattr(value, "item") and getattr(value, "size", 2) == 1:
        return value.item()
    return value
