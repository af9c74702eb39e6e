"""--resume continues only the input it began with: a changed input is refused before any
judging, since its units would no longer match the finished ones (tests/pipelines/
test_faults.py kills real runs and resumes them). The runs join the session's Ray head
(tests/conftest.py `shared_ray`)."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def _line(i: int) -> str:
    return json.dumps({"id": f"p{i}", "prompt": f"What is {i} plus {i}?",
                       "response_a": f"{2 * i}.", "response_b": f"Maybe {i}."}) + "\n"


def test_resume_over_a_changed_input_is_refused(tmp_path, embedded_model, shared_ray):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    first = inputs / "part-0.jsonl"
    first.write_text("".join(_line(i) for i in range(3)))
    args = ["--input", str(inputs), "--output", str(out), "--dry-run", "--order", "ab"]
    done = run_cli("judge", *args, env=shared_ray.join())
    assert done.returncode == 0, done.stderr[-3000:]
    finished = sorted(p.name for p in (out / "verdicts").glob("unit-*.parquet"))

    unchanged = run_cli("judge", *args, "--resume", env=shared_ray.join())
    assert unchanged.returncode == 0, unchanged.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["this_run"]["pairs"] == 0

    with first.open("a") as f:  # appended to: its byte-range units move
        f.write(_line(3))
    appended = run_cli("judge", *args, "--resume", env=shared_ray.join())
    assert appended.returncode == 2
    assert "the input changed since the run began (" in appended.stderr and "part-0.jsonl changed: size" in appended.stderr
    assert "Traceback" not in appended.stderr

    first.write_text("".join(_line(i) for i in range(3)))  # restored
    (inputs / "part-1.jsonl").write_text(_line(4))  # a file added
    added = run_cli("judge", *args, "--resume", env=shared_ray.join())
    assert added.returncode == 2 and "part-1.jsonl added" in added.stderr
    assert sorted(p.name for p in (out / "verdicts").glob("unit-*.parquet")) == finished, \
        "a refused resume writes nothing"


def test_resume_over_the_same_bytes_in_another_order_is_refused(tmp_path, embedded_model, shared_ray):
    """The resume check hashed each file's path and size only: a re-shuffled JSONL file, a
    record edited to the same length, or a Parquet file rewritten with the same layout was
    resumed as if unchanged (exit 0, _SUCCESS, 281 ids twice and 298 missing of 1,200).
    Each file's content identity (size, mtime_ns, inode; ETag on S3) is recorded instead."""
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    lines = [_line(i) for i in range(40)]
    jsonl = inputs / "pairs.jsonl"
    jsonl.write_text("".join(lines))
    table = pa.table({"id": [f"q{i}" for i in range(30)], "prompt": ["p"] * 30, "response_a": ["a"] * 30,
                      "response_b": ["b"] * 30})
    pq.write_table(table, inputs / "pairs.parquet")
    args = ["--input", str(inputs), "--output", str(out), "--dry-run", "--order", "ab", "--unit-rows", "10"]
    done = run_cli("judge", *args, env=shared_ray.join())
    assert done.returncode == 0, done.stderr[-3000:]
    before = {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    random.Random(0).shuffle(lines)
    jsonl.write_text("".join(lines))  # the same bytes, in another order
    shuffled = run_cli("judge", *args, "--resume", env=shared_ray.join())
    assert shuffled.returncode == 2, shuffled.stdout[-2000:]
    assert "pairs.jsonl changed: mtime_ns" in shuffled.stderr and "Traceback" not in shuffled.stderr

    jsonl.write_text("".join(lines).replace("What is 7 plus", "What is 8 plus"))  # same length
    edited = run_cli("judge", *args, "--resume", env=shared_ray.join())
    assert edited.returncode == 2 and "pairs.jsonl changed: mtime_ns" in edited.stderr

    pq.write_table(table.take(list(range(29, -1, -1))), inputs / "pairs.parquet")  # same layout, rewritten
    rewritten = run_cli("judge", *args, "--resume", env=shared_ray.join())
    assert rewritten.returncode == 2 and "pairs.parquet changed: " in rewritten.stderr, rewritten.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before, "nothing touched"


def test_resume_judges_a_damaged_unit_file_again(tmp_path, embedded_model, shared_ray):
    from tests.pipelines.test_commit import _damage

    src, out = tmp_path / "pairs.jsonl", tmp_path / "out"
    src.write_text("".join(_line(i) for i in range(30)))
    args = ["--input", str(src), "--output", str(out), "--dry-run", "--order", "ab", "--unit-rows", "10"]
    assert run_cli("judge", *args, env=shared_ray.join()).returncode == 0
    victim = sorted((out / "verdicts").glob("unit-*.parquet"))[1]
    _damage(victim)
    again = run_cli("judge", *args, "--resume", env=shared_ray.join())
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["this_run"]["units"] == 1 and summary["complete"] and summary["damaged_units"] == []
    assert "(2 already done)" in again.stderr
    # A resumed run checks id by id (magistrate verify) before it commits.
    assert summary["verify"]["complete"] and summary["verify"]["input_rows"] == 30
    assert summary["verify"]["output_rows"] == 30
