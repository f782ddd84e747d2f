"""Keras's standard callbacks, written for our engine.

`EarlyStopping`, `ReduceLROnPlateau`, `LearningRateScheduler`, `CSVLogger`,
`TerminateOnNaN` and `LambdaCallback` take Keras 3's constructor arguments
and follow its semantics (the stopping epoch, the learning rates, the CSV
text and the restored weights equal a Keras-trained model's with Keras's own
classes). Differences are deliberate and confined to failing earlier and
more clearly:

* constructor arguments are validated (`patience < 0`, `factor >= 1`, an
  unknown `mode`, ... raise `ValueError`/`TypeError` naming the argument;
  Keras warns and falls back to "auto" for an unknown mode);
* a learning rate that is a `LearningRateSchedule` cannot be set, so
  `LearningRateScheduler` and `ReduceLROnPlateau` raise a `TypeError` at
  `on_train_begin` instead of at the first epoch that would set it;
* `mode="auto"` resolves the direction from the metric object (Keras's rule)
  and otherwise from the name ("acc", "auc", "precision", ... maximise;
  "loss", "error", "mse", ... minimise) before giving up: the one rule in
  `callbacks/monitor.py`, which `ModelCheckpoint` and Keras's own monitor
  callbacks follow too;
* `LearningRateScheduler` decides between `schedule(epoch, lr)` and
  `schedule(epoch)` from the signature, so a `TypeError` raised inside a
  schedule is not mistaken for the one-argument form.

Only `TerminateOnNaN` and the hooks given to `LambdaCallback` are batch-level
readers: the others never cause a per-execution read of the logs.

The classes live in one module per family (`callbacks/early_stopping.py`,
`callbacks/learning_rate.py`, `callbacks/csv_logger.py`, `callbacks/misc.py`,
with their shared checks in `callbacks/monitored.py`); this module re-exports
them so `tfk_trainer.callbacks.standard` keeps naming Keras's standard set.
"""

from tfk_trainer.callbacks.csv_logger import CSVLogger
from tfk_trainer.callbacks.early_stopping import EarlyStopping
from tfk_trainer.callbacks.learning_rate import LearningRateScheduler, ReduceLROnPlateau
from tfk_trainer.callbacks.misc import LambdaCallback, TerminateOnNaN

__all__ = [
    "CSVLogger",
    "EarlyStopping",
    "LambdaCallback",
    "LearningRateScheduler",
    "ReduceLROnPlateau",
    "TerminateOnNaN",
]
