"""A small Transformer encoder on synthetic token sequences (benchmarks, smoke tests).

    .venv/bin/tfk-train --config=synthetic_transformer --model_dir=/tmp/synth_tfm

No data to download: the sequences are deterministic random token ids, labelled by
their first token (so the task is learnable).
"""

from tfk_trainer.train.config import base_config

VOCAB_SIZE = 1000
SEQUENCE_LENGTH = 32


def get_config():
    config = base_config(model="transformer", data="synthetic")
    config.model.vocab_size = VOCAB_SIZE
    config.model.embed_dim = 64
    config.model.num_heads = 4
    config.model.ff_dim = 128
    config.model.num_layers = 2
    config.data.input_shape = (SEQUENCE_LENGTH,)
    config.data.dtype = "int32"
    config.data.vocab_size = VOCAB_SIZE
    config.data.num_classes = 4
    config.data.num_train = 8192
    config.data.num_test = 1024
    config.train.epochs = 3
    config.train.batch_size = 64
    config.train.steps_per_execution = 16
    return config
