"""The configs shipped with `tfk-train`: `--config=<name>` runs `<name>.py` from here.

These modules are the one copy of the shipped configs; the repository's
top-level `configs/<name>.py` files only re-export them, so that
`--config=configs/<name>.py` keeps working in a checkout while an installed
wheel (which has no `configs/` directory) still finds every config by name.
"""

from __future__ import annotations

import difflib
import os

DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def names() -> list[str]:
    """The shipped config names, sorted (the file names without `.py`)."""
    return sorted(
        entry[: -len(".py")]
        for entry in os.listdir(DIRECTORY)
        if entry.endswith(".py") and not entry.startswith("_")
    )


def path(name: str) -> str:
    """The file of the shipped config `name`; ValueError listing the names when unknown."""
    stem = name[: -len(".py")] if name.endswith(".py") else name
    shipped = names()
    if stem not in shipped:
        close = difflib.get_close_matches(stem, shipped, n=1)
        hint = f' Did you mean "{close[0]}"?' if close else ""
        raise ValueError(
            f"--config={name}: no such config file, and no shipped config is named "
            f"{stem!r}.{hint} Shipped configs: {', '.join(shipped)}. Pass one of these names "
            "or the path of a config file."
        )
    return os.path.join(DIRECTORY, stem + ".py")
