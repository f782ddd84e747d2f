"""`TensorBoard`'s constructor checks: each argument refused with its name and what is accepted.

Kept out of the callback so its `__init__` reads as the list of settings.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def _parse_profile_batch(profile_batch: Any) -> tuple[int, int]:
    """`(start, stop)` optimizer steps, 1-indexed; `(0, 0)` disables profiling."""
    value = profile_batch
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            value = tuple(int(p) for p in parts)
        except ValueError:
            value = None
        if value is not None and len(value) == 1:
            value = value[0]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        start = stop = int(value)
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        start, stop = int(value[0]), int(value[1])
    else:
        start, stop = -1, -1
    if start < 0 or stop < start or (start == 0) != (stop == 0):
        raise ValueError(
            "`profile_batch` must be a non-negative int (one step; 0 disables profiling) or "
            "a pair `(start, stop)` of positive optimizer steps with start <= stop; "
            f"received {profile_batch!r}."
        )
    return start, stop


def check_epoch_axis(epoch_axis: Any) -> str:
    """`epoch_axis`, checked: "epoch" or "step"."""
    if epoch_axis not in ("epoch", "step"):
        raise ValueError(
            '`epoch_axis` must be "epoch" (epoch scalars at the epoch index, as Keras) or '
            f'"step" (at the optimizer step count); received {epoch_axis!r}.'
        )
    return epoch_axis


def check_histogram_freq(histogram_freq: Any) -> int:
    """`histogram_freq`, checked: a non-negative int (bools refused)."""
    if (
        isinstance(histogram_freq, bool)
        or not isinstance(histogram_freq, (int, np.integer))
        or histogram_freq < 0
    ):
        raise ValueError(
            f"`histogram_freq` must be a non-negative int; received {histogram_freq!r}."
        )
    return int(histogram_freq)


def check_update_freq(update_freq: Any) -> str | int:
    """`update_freq`, checked: "epoch", or an int >= 1 ("batch" is 1)."""
    if update_freq == "batch":
        update_freq = 1
    if update_freq != "epoch" and (
        isinstance(update_freq, bool)
        or not isinstance(update_freq, (int, np.integer))
        or update_freq < 1
    ):
        raise ValueError(
            '`update_freq` must be "epoch", "batch" or a positive int (log every N '
            f"optimizer steps); received {update_freq!r}."
        )
    return update_freq if update_freq == "epoch" else int(update_freq)


def warn_embeddings(embeddings_freq: Any, embeddings_metadata: Any) -> None:
    """Warns (at the user's `TensorBoard(...)` call) that embeddings are not written."""
    if embeddings_freq or embeddings_metadata is not None:
        warnings.warn(
            "TensorBoard(embeddings_freq=..., embeddings_metadata=...) is accepted for "
            "Keras compatibility, but the embedding projector is not supported; no "
            "embeddings are written.",
            stacklevel=3,
        )
