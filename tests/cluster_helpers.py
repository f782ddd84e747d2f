"""Starts a loopback MultiWorkerMirroredStrategy cluster of worker subprocesses.

Each worker runs `python WORKER ARGS...` with its TF_CONFIG (workers on
127.0.0.1, free ports) and writes its output to `<log_dir>/worker_<i><tag>.log`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import portpicker


def launch(
    worker: str, args: list[str], log_dir: Path, num_workers: int = 2, tag: str = ""
) -> list[subprocess.Popen]:
    """Starts `num_workers` workers of one cluster; worker 0 is the chief."""
    ports = [portpicker.pick_unused_port() for _ in range(num_workers)]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(num_workers):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
        env["TF_CONFIG"] = json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}
        )
        with open(log_path(log_dir, index, tag), "w") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, worker, *args], env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
    return procs


def log_path(log_dir: Path, index: int, tag: str = "") -> Path:
    return Path(log_dir) / f"worker_{index}{tag}.log"


def wait(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    """Every worker's exit status; kills them all when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [proc.returncode for proc in procs]


def finish(procs: list[subprocess.Popen], log_dir: Path, timeout: float, tag: str = "") -> None:
    """Waits for every worker (`wait`) and fails, with the worker's log tail, unless
    all of them exited 0."""
    for index, code in enumerate(wait(procs, timeout)):
        assert code == 0, (
            f"worker {index} exited {code}:\n" + log_path(log_dir, index, tag).read_text()[-3000:]
        )


def run(worker: str, args: list[str], log_dir: Path, timeout: float, num_workers: int = 2) -> None:
    """One cluster from start to end (`launch`, then `finish`)."""
    finish(launch(worker, args, log_dir, num_workers), log_dir, timeout)


def wait_for_file(path: Path, procs: list[subprocess.Popen], timeout: float) -> None:
    """Waits until `path` exists; fails when a worker ends first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        ended = [p.returncode for p in procs if p.poll() is not None]
        assert not ended, f"a worker ended (status {ended}) before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.05)
