"""Float32 tolerances shared by the tests.

The same float32 maths batched differently (a batch of 7 rows vs the whole
array in one matmul, a sum over replicas vs over one device) rounds
differently, and by how much depends on the kernels oneDNN and Eigen pick for
the CPU's instruction set. A relative tolerance alone flips on values near
zero (6e-8 apart is 2.6e-6 relative at 0.023), so every comparison of
differently computed float32 results carries an absolute tolerance too.
Results that must be bit-identical (a resumed run, folded executions) are
compared with `assert_array_equal` instead.
"""

RTOL = 1e-5
ATOL = 1e-6
ATOL_MULTI = 1e-5  # multi-replica runs sum gradients in a different order


def assert_history_equal(ref, got, rtol: float = RTOL, atol: float = ATOL) -> None:
    """Two `History` objects log the same keys, epochs and values."""
    import numpy as np

    assert list(got.history) == list(ref.history)
    assert got.epoch == ref.epoch
    for key, values in ref.history.items():
        assert len(got.history[key]) == len(values), key
        np.testing.assert_allclose(got.history[key], values, rtol=rtol, atol=atol, err_msg=key)


def assert_dict_close(got: dict, expected: dict, rtol: float = RTOL, atol: float = ATOL) -> None:
    """Two logs dicts have the same keys and close values."""
    import numpy as np

    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=rtol, atol=atol, err_msg=key)
