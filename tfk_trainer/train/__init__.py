"""`tfk-train`: the training binary, driven by ml_collections configs.

    tfk-train --config=fashion_mnist_mlp --model_dir=/tmp/run \
        --config.train.epochs=3 --mode=train_and_evaluate

`--config` takes a config file's path or the name of a config shipped in
`tfk_trainer.configs`; `--print_config` prints the resolved config and exits.

Modules, one job each:

- `config`: the config schema and `base_config(model=..., data=...)`, used by config files;
- `models`, `data`: the built-in models and datasets (see `tfk_trainer.registry`);
- `validation`: checks and completes a config before anything runs;
- `flags`: the command-line flags and how they override the config;
- `checkpoints`: checkpoints in `model_dir/checkpoints` and the "training done" marker;
- `experiment`: builds the model and runs a mode (train, evaluate, ...);
- `summary`: JSON results and the printed summary;
- `logs`: HParams and the test-split run in model_dir/logs (one optimizer-step axis);
- `main`: the absl entry point (`tools/train.py`, console script `tfk-train`).
"""
