"""`tfk-train`: the absl entry point (also `tools/train.py`).

    tfk-train --config=configs/fashion_mnist_mlp.py --model_dir=/tmp/run \
        [--mode=train_and_evaluate] [--config.train.epochs=3] [--strategy=mirrored]
    tfk-train --config=fashion_mnist_mlp --print_config   # the resolved config, no run

Exit status (docs/binary.md): 0 success; 1 crashed (an uncaught exception);
2 bad flags or config (nothing ran); 3 test accuracy below eval.min_accuracy;
4 continuous_evaluate saw no new checkpoint within eval.continuous_timeout;
5 --model_dir is leased by another live trainer; 143 preempted by SIGTERM
(what was done is saved: rerun the same command).
"""

from __future__ import annotations

import os
import sys
import time

import tensorflow as tf
from absl import app, logging

from tfk_trainer.train import experiment
from tfk_trainer.train import flags as flags_lib
from tfk_trainer.train import lease as lease_lib
from tfk_trainer.train.config import format_config
from tfk_trainer.train.validation import ConfigError, resolve

FLAGS = flags_lib.FLAGS


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(f"tfk-train: error: unexpected arguments {argv[1:]}", file=sys.stderr)
        return experiment.EXIT_USAGE
    started = time.perf_counter()
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TF's INFO lines (saver details) are noise here
        tf.get_logger().setLevel("WARNING")
    mode, model_dir = FLAGS.mode, os.path.expanduser(FLAGS.model_dir or "")
    try:
        if not model_dir and not FLAGS.print_config:
            raise ConfigError(["--model_dir must not be empty."])
        applied = flags_lib.apply_overrides(flags_lib.CONFIG.value)
        for key, value in applied.items():
            print(f"flag overrides config: {key} = {value!r}")
        config = resolve(flags_lib.CONFIG.value)
        if FLAGS.print_config:  # nothing else runs: no model_dir is read or written
            print(format_config(config), flush=True)
            return experiment.EXIT_OK
        experiment.precheck(config, model_dir, mode, force_unlock=FLAGS.force_unlock)
        return experiment.run(
            mode,
            config,
            model_dir,
            started,
            force_unlock=FLAGS.force_unlock,
            lease_timeout=FLAGS.lease_timeout,
        )
    except ConfigError as e:
        print(f"tfk-train: error: {e}", file=sys.stderr)
        return experiment.EXIT_USAGE
    except lease_lib.LeaseHeld as e:
        print(f"tfk-train: error: {e}", file=sys.stderr)
        return experiment.EXIT_LOCKED


def run() -> None:
    """Console-script entry point."""
    flags_lib.show_in_help()
    app.run(main, flags_parser=flags_lib.parse)


if __name__ == "__main__":
    run()
