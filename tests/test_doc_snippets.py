"""Every snippet in README.md and docs/*.md runs as written.

* Each ```python block is run on its own, in a fresh subprocess whose working
  directory is an empty temporary folder (snippets that write `runs/...`
  write there). A block may opt out only with the marker comment
  `# doc-test: skip (<why>)` as its first line, for what truly needs a TPU,
  a cluster or the network; the opt-outs are counted against `ALLOWED_SKIPS`.
* The commands in ```bash blocks (and inline `tfk-train ...` /
  `tools/main_job.sh ...` examples) use only flags the binary defines and
  config keys the config has.
* The README's example of extra arguments to `tools/main_job.sh` succeeds
  (exit status 0) when run the way `tools/main_job.sh` runs the binary.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from binary_helpers import ENV, REPO, TRAIN

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SKIP_MARKER = re.compile(r"^#\s*doc-test:\s*skip\s*\((.+)\)\s*$")
# Blocks allowed to opt out (path name -> how many). None today: every block runs.
ALLOWED_SKIPS: dict[str, int] = {}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.S | re.M)
SNIPPET_TIMEOUT = 300


def _blocks(language: str) -> list[tuple[str, int, str]]:
    """(file name, line number of the fence, code) for every block in `language`."""
    found = []
    for path in DOCS:
        text = path.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) == language:
                line = text.count("\n", 0, match.start()) + 1
                found.append((str(path.relative_to(REPO)), line, match.group(2)))
    return found


def _skip_reason(code: str) -> str | None:
    first = code.lstrip("\n").split("\n", 1)[0].strip()
    match = SKIP_MARKER.match(first)
    return match.group(1) if match else None


PYTHON_BLOCKS = _blocks("python")
BASH_BLOCKS = _blocks("bash")


def test_there_are_snippets_and_the_opt_outs_are_counted():
    assert len(PYTHON_BLOCKS) >= 5, PYTHON_BLOCKS
    skipped: dict[str, int] = {}
    for name, _, code in PYTHON_BLOCKS:
        if _skip_reason(code):
            skipped[name] = skipped.get(name, 0) + 1
    assert skipped == ALLOWED_SKIPS


@pytest.mark.timeout(SNIPPET_TIMEOUT + 30)
@pytest.mark.parametrize(
    "name,line,code", PYTHON_BLOCKS, ids=[f"{n}:{line}" for n, line, _ in PYTHON_BLOCKS]
)
def test_python_snippet_runs(name: str, line: int, code: str, tmp_path: Path):
    if _skip_reason(code):
        return  # counted in test_there_are_snippets_and_the_opt_outs_are_counted
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(REPO), ENV.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=SNIPPET_TIMEOUT,
    )
    assert result.returncode == 0, f"{name}:{line} failed:\n{result.stdout[-4000:]}"


# -- commands ---------------------------------------------------------------------

_COMMAND = re.compile(r"(?:tfk-train|tools/train\.py|tools/main_job\.sh)\b[^`\n]*")
_CONFIG_FILE = re.compile(r"--config=(configs/\w+\.py)")
_FLAG = re.compile(r"(?<![\w-])--([a-z_]+)(?:\.([a-z_.]+))?(?==|\s|$|\])")


def _commands() -> list[tuple[str, str]]:
    """(file name, command text) for each binary invocation in bash blocks and
    inline code spans."""
    commands = []
    for name, _, code in BASH_BLOCKS:
        code = code.replace("\\\n", " ")  # continuation lines: one command
        commands += [(name, m.group(0)) for m in _COMMAND.finditer(code)]
    for path in DOCS:
        for span in re.findall(r"`([^`\n]+)`", path.read_text()):
            if span.startswith(("tfk-train ", "bash tools/main_job.sh ", "MODEL_DIR=")):
                commands += [
                    (str(path.relative_to(REPO)), m.group(0)) for m in _COMMAND.finditer(span)
                ]
    return commands


def test_commands_use_flags_and_config_keys_that_exist():
    from absl import flags

    from tfk_trainer.train import flags as flags_lib
    from tfk_trainer.train.config import base_config

    defined = set(flags_lib.FLAGS) | set(flags.FLAGS)
    config = base_config(model="mlp", data="fashion_mnist")
    commands = _commands()
    assert len(commands) >= 5, commands
    checked = 0
    for name, command in commands:
        for config_file in _CONFIG_FILE.findall(command):
            assert (REPO / config_file).is_file(), f"{name}: no {config_file}: {command}"
        for flag, key in _FLAG.findall(command):
            if flag == "config" and key:
                section, _, leaf = key.partition(".")
                assert section in config and leaf in config[section], f"{name}: {command}"
            else:
                assert flag in defined, f"{name}: --{flag} is not a flag of tfk-train: {command}"
            checked += 1
    assert checked >= 10


def test_the_readme_main_job_example_succeeds(tmp_path: Path):
    """The extra arguments the README shows for `tools/main_job.sh`, passed the way
    the script passes them (`tfk-train --config=configs/fashion_mnist_mlp.py
    --model_dir=$MODEL_DIR "$@"`), exit 0."""
    readme = (REPO / "README.md").read_text()
    examples = re.findall(r"`MODEL_DIR=\S+ bash tools/main_job\.sh ([^`]+)`", readme)
    assert examples, "the README shows no main_job.sh example with extra arguments"
    main_job = (REPO / "tools" / "main_job.sh").read_text()
    assert "--config=configs/fashion_mnist_mlp.py" in main_job and '"$@"' in main_job
    for extra in examples:
        argv = [
            sys.executable,
            TRAIN,
            "--config=configs/fashion_mnist_mlp.py",
            f"--model_dir={tmp_path / 'run'}",
            *extra.split(),
        ]
        result = subprocess.run(
            argv,
            cwd=REPO,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"{extra}: exit {result.returncode}\n{result.stdout[-4000:]}"
