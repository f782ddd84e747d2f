"""Long runs: repeated fit/evaluate/predict must not grow memory or threads.

Short in CI (TFK_SOAK_ITERATIONS, default 30); run longer with e.g.
`TFK_SOAK_ITERATIONS=500 pytest tests/test_soak.py`.
"""

import gc
import os
import resource
import threading

import keras
import numpy as np
import pytest

import tfk_trainer as tfk

ITERATIONS = int(os.environ.get("TFK_SOAK_ITERATIONS", "30"))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


class Batches(tfk.data.PyDataset):
    def __init__(self, x, y, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y = x, y

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.x[i * 16 : (i + 1) * 16], self.y[i * 16 : (i + 1) * 16]


@pytest.mark.timeout(600)
def test_repeated_fit_evaluate_predict_do_not_leak():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.integers(0, 3, 64)
    keras.utils.set_random_seed(0)
    model = tfk.Model(
        keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)]
        )
    )
    model.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=2,
    )

    def one_round():
        model.fit(x, y, batch_size=16, epochs=1, validation_split=0.25, verbose=0)
        model.fit(Batches(x, y, workers=2), epochs=1, verbose=0)
        model.evaluate(x, y, batch_size=16, verbose=0)
        model.predict(x, batch_size=16, verbose=0)
        model.train_on_batch(x[:16], y[:16])

    for _ in range(3):  # warm up: traces, caches, allocator pools
        one_round()
    gc.collect()
    rss_before, threads_before = _rss_mb(), threading.active_count()
    for _ in range(ITERATIONS):
        one_round()
    gc.collect()
    rss_after, threads_after = _rss_mb(), threading.active_count()
    growth = rss_after - rss_before
    print(
        f"soak: {ITERATIONS} rounds, RSS {rss_before:.1f} -> {rss_after:.1f} MB ({growth:+.1f}), threads {threads_before} -> {threads_after}"
    )
    # TF may start a pool thread lazily; what must not happen is one per round.
    assert threads_after <= threads_before + 2
    assert not [t for t in threading.enumerate() if t.name.startswith("tfk_pydataset")]
    # A leak of one dataset or function per round would cost far more than this.
    assert growth < max(40.0, 0.5 * ITERATIONS)
    assert model._executor.train.tracing_count() <= 2
