"""Runs pytest on one test module for a Bazel py_test (see tests/BUILD).

Usage (Bazel passes the module as the first argument; more arguments go to pytest,
e.g. `bazel test //tests:test_weights --test_arg=-k --test_arg=sparse`):

    pytest_main.py tests/test_weights.py [pytest args...]

The working directory is the runfiles root, where pyproject.toml (pytest's
configuration) and tests/conftest.py (4 logical CPUs, seeding) are found just as in
a checkout. Exits with pytest's status, which Bazel turns into pass or fail.
"""

import os
import sys

import pytest


def main(argv: list[str]) -> int:
    sys.dont_write_bytecode = True  # no __pycache__ in the runfiles tree
    if not argv:
        print("usage: pytest_main.py TEST_FILE [pytest args...]", file=sys.stderr)
        return 2
    args = [
        *argv,
        "-p",
        "no:cacheprovider",  # no .pytest_cache in the runfiles tree
        "-o",
        "console_output_style=classic",
        "-rfEs",  # list failures, errors and skips at the end of the log
    ]
    # Bazel collects per-test-case results from this JUnit XML file (test.xml).
    xml = os.environ.get("XML_OUTPUT_FILE")
    if xml:
        args.append(f"--junitxml={xml}")
    # pytest's tmp_path under Bazel's per-test temporary directory.
    tmp = os.environ.get("TEST_TMPDIR")
    if tmp:
        args.append(f"--basetemp={os.path.join(tmp, 'pytest')}")
    return int(pytest.main(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
