#!/bin/sh
# Stand-in coverage tool: `bazel coverage` is not supported offline.
echo "coverage tools are stubbed (tools/coverage_stub); bazel coverage is unsupported" >&2
exit 1
