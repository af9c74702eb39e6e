"""--resume continues only the input it began with: a changed input is refused before any
judging, since its units would no longer match the finished ones (tests/pipelines/
test_faults.py kills real runs and resumes them)."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def _line(i: int) -> str:
    return json.dumps({"id": f"p{i}", "prompt": f"What is {i} plus {i}?",
                       "response_a": f"{2 * i}.", "response_b": f"Maybe {i}."}) + "\n"


def test_resume_over_a_changed_input_is_refused(tmp_path, embedded_model):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    first = inputs / "part-0.jsonl"
    first.write_text("".join(_line(i) for i in range(3)))
    args = ["--input", str(inputs), "--output", str(out), "--dry-run", "--order", "ab"]
    done = run_cli("judge", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    finished = sorted(p.name for p in (out / "verdicts").glob("unit-*.parquet"))

    unchanged = run_cli("judge", *args, "--resume")
    assert unchanged.returncode == 0, unchanged.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["this_run"]["pairs"] == 0

    with first.open("a") as f:  # appended to: its byte-range units move
        f.write(_line(3))
    appended = run_cli("judge", *args, "--resume")
    assert appended.returncode == 2
    assert "the input's files changed since the run began" in appended.stderr
    assert "Traceback" not in appended.stderr

    first.write_text("".join(_line(i) for i in range(3)))  # restored
    (inputs / "part-1.jsonl").write_text(_line(4))  # a file added
    added = run_cli("judge", *args, "--resume")
    assert added.returncode == 2 and "the input's files changed" in added.stderr
    assert sorted(p.name for p in (out / "verdicts").glob("unit-*.parquet")) == finished, \
        "a refused resume writes nothing"
