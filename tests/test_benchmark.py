"""Smoke test of `tools/benchmark.py`: it runs, prints its table and exits 0.

No timing is asserted: the numbers depend on the machine and its load. The
benchmark itself checks that every runner did the same number of optimizer
steps, so a run that exits 0 with no failed runner has done the same work in
tfk, Keras and the reference loop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = ROOT / "tools" / "benchmark.py"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARK), *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_quick_tiny_run_prints_the_table(tmp_path):
    output = tmp_path / "bench.json"
    proc = _run(
        "--quick",
        "--rounds=1",
        "--steps=5",
        "--workloads=tiny_mlp",
        "--inputs=numpy",
        "--strategies=default",
        "--memory=none",
        f"--output={output}",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "| workload | input | spe | mode |" in out
    assert "tfk/keras (median)" in out and "tfk/ref (median)" in out
    for mode in ("fit", "evaluate", "predict"):
        assert f"| tiny_mlp | numpy | 1 | {mode} | default | off |" in out, out
    assert "| tiny_mlp | numpy | 128 | fit | default | off |" in out
    assert "Targets:" in out

    results = json.loads(output.read_text())
    rows = results["rows"]
    assert {r["config"]["mode"] for r in rows} == {"fit", "evaluate", "predict"}
    for row in rows:
        # Every runner ran (the optimizer-step checks live in the benchmark).
        assert row["errors"] == {}, row["errors"]
        assert row["steps"] % row["config"]["spe"] == 0
        for kind in ("tfk", "keras", "ref"):
            assert len(row["times_s"][kind]) == 1
            assert row["samples_per_s"][kind] > 0
    assert {t["target"] for t in results["meta"]["targets"]} >= {
        "every fit row: tfk >= 1.0x Keras fit",
        "peak memory: tfk <= Keras",
    }


def test_memory_child_reports_a_peak():
    spec = json.dumps(
        {
            "config": {
                "workload": "tiny_mlp",
                "input": "numpy",
                "spe": 1,
                "mode": "fit",
                "strategy": "default",
                "jit": "off",
                "steps": None,
            },
            "runner": "tfk",
            "steps": 4,
        }
    )
    proc = _run(f"--memory_child={spec}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY_RESULT "))
    result = json.loads(line[len("MEMORY_RESULT ") :])
    assert "error" not in result, result
    assert result["peak_mb"] > 0


def test_rejects_unknown_flag_values():
    proc = _run("--workloads=nope")
    assert proc.returncode != 0
    assert "unknown value" in proc.stderr


def test_cold_start_runs_each_runner_in_a_fresh_process(tmp_path):
    output = tmp_path / "cold.json"
    proc = _run("--cold", "--cold_cases=mlp", "--cold_rounds=1", f"--output={output}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| case | imports s (tfk / keras) |" in proc.stdout
    assert "| mlp |" in proc.stdout
    (row,) = json.loads(output.read_text())["cold"]
    assert row["errors"] == {}
    for kind in ("tfk", "keras"):
        (run,) = row["runs"][kind]  # one fresh process (the child checks its step count)
        marks = run["marks"]
        assert 0 < marks["import"]["wall"] < marks["first_step"]["wall"] <= marks["fit_end"]["wall"]
        assert marks["first_step"]["cpu"] > 0
    assert row["ratios"]["tfk"]["first_step"] > 0


def test_cold_rejects_unknown_cases():
    proc = _run("--cold", "--cold_cases=nope")
    assert proc.returncode != 0
    assert "unknown value" in proc.stderr
