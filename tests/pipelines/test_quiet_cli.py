"""What a user's terminal shows for `make demo`'s command: a few lines, the summary table
last, nothing of vLLM's engine start or shutdown (it is in the engine's log file), no
traceback; and, output being a pipe here as under CI or `ray job submit`, progress as
plain lines. The tiny random-weight judge runs the same code path as the embedded one."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import EXAMPLES, MAGISTRATE, REPO


@pytest.mark.engine
def test_demo_command_prints_few_lines_with_the_table_last(tiny_model, tmp_path):
    done = subprocess.run(
        [*MAGISTRATE, "judge", "--input", str(EXAMPLES / "llmbar-demo.jsonl"), "--output", str(tmp_path / "out"),
         "--model", tiny_model],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900, cwd=REPO,
        env={**os.environ, "RAY_ADDRESS": "local"},  # one pipe: the order the user sees
    )
    text = done.stdout
    assert done.returncode == 0, text[-3000:]
    lines = text.rstrip("\n").split("\n")
    assert len(lines) <= 40, f"{len(lines)} lines:\n{text}"
    for noise in ("Traceback", "EngineDeadError", "[shutdown]", "Loading safetensors", " INFO "):
        assert noise not in text, f"{noise!r} in:\n{text}"
    assert "\r" not in text, "a carriage return on a pipe"
    assert any(line.startswith("magistrate: starting the judge engine(s)...") for line in lines), text
    table = lines.index(next(line for line in lines if line.startswith("verdicts: ")))
    assert all(line.startswith("  ") for line in lines[table + 1:]), f"something after the table:\n{text}"
    assert lines[-1].split()[:2] == ["output", "complete"], text
