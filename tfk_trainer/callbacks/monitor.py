"""The one `mode="auto"` rule: whether a monitored log key should go up or down.

`EarlyStopping`, `ReduceLROnPlateau`, `ModelCheckpoint` and Keras's own
monitor callbacks run in a tfk `fit` (through `keras_compat`) all ask
`monitor_direction`, so a key such as `val_iou` cannot be maximised by one
callback and minimised by another.

The rule is Keras 3's (`MonitorCallback._set_monitor_op`), extended only
where Keras gives up:

1. `loss` (or `val_loss`) minimises;
2. a model metric whose log name is the key (without `val_`) and that
   declares a direction (every built-in Keras metric does) gives it;
3. otherwise the name decides: a name ending in `loss` minimises, then
   names holding an accuracy-like token (`acc`, `auc`, `precision`,
   `recall`, `iou`, ...) maximise, then error-like ones (`mae`, `mse`,
   `error`, `crossentropy`, ...) minimise;
4. otherwise there is no answer, and the callback raises a `ValueError`
   asking for `mode="min"` or `mode="max"` (Keras raises there too).

Step 3 is tfk's: Keras raises for such names when it cannot find the metric
object (a custom metric function, a metric logged by a callback).
"""

from __future__ import annotations

from typing import Any

from tfk_trainer import compat

MODES = ("auto", "min", "max")

# Names whose direction `mode="auto"` infers when no metric object tells it.
_MAX_NAME_TOKENS = (
    "acc",
    "auc",
    "precision",
    "recall",
    "f1",
    "fbeta",
    "fmeasure",
    "iou",
    "r2",
    "pearson",
    "concordance",
    "cosine_similarity",
)
_MIN_NAME_TOKENS = (
    "loss",
    "error",
    "mse",
    "mae",
    "mape",
    "msle",
    "crossentropy",
    "hinge",
    "kl_divergence",
    "poisson",
    "logcosh",
)


def monitor_direction(monitor: str, model: Any) -> str | None:
    """`"min"` or `"max"`: what `mode="auto"` means for the log key `monitor`.

    Args:
        monitor: The monitored log key, e.g. `"val_iou"`.
        model: The model whose metric objects are consulted (a tfk model or
            anything listing `metrics`); `None` consults names only.

    Returns:
        `"min"`, `"max"`, or `None` when neither the metric object nor the
        name tells (the caller raises, naming `mode`).
    """
    name = str(monitor).removeprefix("val_")
    if name == "loss":
        return "min"
    for log_name, metric in _named_metrics(model):
        direction = compat.metric_direction(metric) if log_name == name else None
        if direction in ("up", "down"):
            return "max" if direction == "up" else "min"
    lowered = name.lower()
    if lowered.endswith("loss"):
        return "min"
    if any(token in lowered for token in _MAX_NAME_TOKENS):
        return "max"
    if any(token in lowered for token in _MIN_NAME_TOKENS):
        return "min"
    return None


def resolve_mode(mode: str, monitor: str, model: Any, owner: str) -> str:
    """`mode` as `"min"` or `"max"`; `"auto"` through `monitor_direction`.

    Raises:
        ValueError: `mode="auto"` and the direction of `monitor` cannot be
            told; the message asks for an explicit `mode`.
    """
    if mode in ("min", "max"):
        return mode
    direction = monitor_direction(monitor, model)
    if direction is None:
        raise ValueError(
            f"{owner} callback received monitor={monitor!r}, but cannot determine whether "
            "that metric should be maximized or minimized. Pass `mode='max'` to monitor the "
            "highest value, or `mode='min'` for the lowest."
        )
    return direction


def _named_metrics(model: Any) -> list[tuple[str, Any]]:
    """(log name, metric object) pairs for the model's metrics."""
    pairs: list[tuple[str, Any]] = []
    if model is None:
        return pairs
    # tfk_trainer's Model: every metric under the name it is logged as.
    by_name = getattr(model, "metrics_by_name", None)
    if isinstance(by_name, dict):
        pairs.extend(by_name.items())
    # A model that is not built lists no metrics (an empty list, no error). Any
    # other failure to list them is raised: skipping them would let mode="auto"
    # guess the direction from the name alone, possibly the wrong way.
    try:
        metrics = list(getattr(model, "metrics", None) or [])
    except Exception as e:
        raise RuntimeError(
            f'mode="auto" reads the model\'s metrics to choose a direction, and listing '
            f"them failed: {type(e).__name__}: {e}. Pass mode='min' or mode='max'."
        ) from e
    for metric in metrics:
        # Keras models group compiled metrics in containers with a `metrics` list.
        nested = getattr(metric, "metrics", None)
        for m in nested if isinstance(nested, (list, tuple)) else [metric]:
            if hasattr(m, "name"):
                pairs.append((m.name, m))
    return pairs
