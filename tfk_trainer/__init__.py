"""tfk_trainer: the Keras Model training API, natively on TensorFlow.

import tfk_trainer as tfk
model = tfk.Model(keras_network)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
              metrics=["accuracy"], steps_per_execution=16)
model.fit(x, y, epochs=3, validation_split=0.1)
"""

# First, before TensorFlow is imported: the `tfk-train` binary hides TF's start-up lines.
from tfk_trainer.train import startup as _startup

_startup.quiet_for_binary()

from tfk_trainer import callbacks, data, datasets, distribute  # noqa: E402
from tfk_trainer import registry as registry  # noqa: E402  (models/datasets by name)
from tfk_trainer.data.functions import DatasetFunction  # noqa: E402
from tfk_trainer.engine.loop import PeerUnavailableError  # noqa: E402
from tfk_trainer.model import Model, Sequential  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "DatasetFunction",
    "Model",
    "PeerUnavailableError",
    "Sequential",
    "callbacks",
    "data",
    "datasets",
    "distribute",
    "__version__",
]
