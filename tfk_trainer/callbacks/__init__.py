"""Callbacks: Keras's hooks, dispatched by our own `CallbackList`."""

from tfk_trainer.callbacks.base import Callback, CallbackList, LazyLogs
from tfk_trainer.callbacks.history import History
from tfk_trainer.callbacks.progbar import ProgbarLogger

__all__ = ["Callback", "CallbackList", "History", "LazyLogs", "ProgbarLogger"]
