"""`Model.summary`'s table and the parameter counts behind it and `count_params`."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf


def _readable_size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1024:
            return f"{nbytes:.2f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.2f} PB"


def _unique(variables: list) -> list:
    seen: dict[int, Any] = {}
    for v in variables:
        seen.setdefault(id(v), v)
    return list(seen.values())


def param_count(variables: list) -> tuple[int, float]:
    """(number of scalars, bytes) of unique variables."""
    count, nbytes = 0, 0.0
    for v in _unique(variables):
        n = int(np.prod(v.shape)) if v.shape is not None else 0
        count += n
        nbytes += n * tf.as_dtype(v.dtype).size
    return count, nbytes


def table(model: Any, width: int, show_trainable: bool) -> str:
    """`Model.summary`'s text: one row per Keras layer, variables outside layers, totals."""
    layers = model.layers
    rows = []
    in_layers: set[int] = set()
    for layer in layers:
        variables = list(layer.weights)
        in_layers.update(id(v) for v in variables)
        try:
            shape = str(tuple(layer.output.shape))
        except (AttributeError, ValueError):
            shape = "?"
        row = [f"{layer.name} ({type(layer).__name__})", shape, f"{param_count(variables)[0]:,}"]
        if show_trainable:
            row.append("Y" if layer.trainable else "N")
        rows.append(row)
    others = [v for v in model.variables if id(v) not in in_layers]
    if others:
        row = [
            f"(variables outside Keras layers: {len(others)})",
            "?",
            f"{param_count(others)[0]:,}",
        ]
        if show_trainable:
            row.append("-")
        rows.append(row)
    headers = ["Layer (type)", "Output Shape", "Param #"] + (
        ["Trainable"] if show_trainable else []
    )
    if not rows:
        rows.append(["(no Keras layers)", "", "0"] + ["-"] * show_trainable)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    widths[0] += max(0, width - (sum(widths) + 3 * len(widths) + 1))

    def line(cells: list[str]) -> str:
        parts = [cells[0].ljust(widths[0]), cells[1].ljust(widths[1])]
        parts += [c.rjust(w) for c, w in zip(cells[2:], widths[2:])]
        return "│ " + " │ ".join(parts) + " │"

    rule = "─" * (sum(widths) + 3 * len(widths) + 1)
    out = [f'Model: "{model.name}"', rule, line(headers), rule]
    out += [line(r) for r in rows]
    out.append(rule)
    total, total_bytes = param_count(model.variables)
    trainable, trainable_bytes = param_count(model.trainable_variables)
    frozen, frozen_bytes = param_count(model.non_trainable_variables)
    out.append(f" Total params: {total:,} ({_readable_size(total_bytes)})")
    out.append(f" Trainable params: {trainable:,} ({_readable_size(trainable_bytes)})")
    out.append(f" Non-trainable params: {frozen:,} ({_readable_size(frozen_bytes)})")
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and getattr(optimizer, "built", False):
        count, nbytes = param_count(list(optimizer.variables))
        out.append(f" Optimizer params: {count:,} ({_readable_size(nbytes)})")
    return "\n".join(out)
