"""Callbacks: Keras's hooks, dispatched by our own `CallbackList`."""

from tfk_trainer.callbacks.base import Callback, CallbackList, LazyLogs
from tfk_trainer.callbacks.checkpoint import (
    PREEMPTED_EXIT_CODE,
    BackupAndRestore,
    ModelCheckpoint,
    Preempted,
)
from tfk_trainer.callbacks.history import History
from tfk_trainer.callbacks.progbar import ProgbarLogger
from tfk_trainer.callbacks.standard import (
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ReduceLROnPlateau,
    TerminateOnNaN,
)
from tfk_trainer.callbacks.tensorboard import TensorBoard

__all__ = [
    "BackupAndRestore",
    "ModelCheckpoint",
    "PREEMPTED_EXIT_CODE",
    "Preempted",
    "Callback",
    "CallbackList",
    "History",
    "LazyLogs",
    "ProgbarLogger",
    "CSVLogger",
    "EarlyStopping",
    "LambdaCallback",
    "LearningRateScheduler",
    "ReduceLROnPlateau",
    "TerminateOnNaN",
    "TensorBoard",
]
