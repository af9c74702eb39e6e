"""No input can stop a job or vanish: the corpus of tests/pipelines/hostile_inputs.py
through `magistrate judge` (the real CPU engine), `render` and `estimate`, which must give
every record the same answer; and the files that are wrong as a whole, refused."""

from __future__ import annotations

import json

import pytest

from magistrate.pipelines.sources import locate
from magistrate.pipelines.summary import verdict_dataset, verdict_files

from tests.conftest import invoke_cli, run_cli
from tests.pipelines.hostile_inputs import Expect, write_corpus, write_refusals


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile") / "in"
    return folder, write_corpus(folder)


@pytest.fixture(scope="module")
def judged(corpus, tmp_path_factory, tiny_model, shared_ray):
    folder, expects = corpus
    out = tmp_path_factory.mktemp("hostile-out") / "out"
    result = run_cli("judge", "--input", str(folder), "--output", str(out), "--order", "ab", "--model", tiny_model,
                     "--max-model-len", "2048", "--gpu-memory-utilization", "0.2", env=shared_ray.join())
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Traceback" not in result.stderr
    loc = locate(str(out))  # read under one schema: the files' passthrough columns differ
    rows = verdict_dataset(loc, verdict_files(loc)).to_table().to_pylist()
    return rows, json.loads((out / "summary.json").read_text()), out


def _find(rows: list[dict], expect: Expect) -> dict:
    if expect.id is not None:
        found = [r for r in rows if r["id"] == expect.id]
    elif expect.error:
        found = [r for r in rows if (r.get("error") or "").startswith(f"{expect.place}: ")]
    else:
        found = [r for r in rows if r.get("prompt") == expect.checks["prompt"]]
    assert len(found) == 1, (expect, [r["id"] for r in found])
    return found[0]


@pytest.mark.engine
def test_one_judge_run_takes_every_record_and_names_every_problem(judged, corpus):
    rows, summary, _ = judged
    _, expects = corpus
    assert len(rows) == len(expects), "one row per input record"
    assert len({r["id"] for r in rows}) == len(rows), "every id once"
    for expect in expects:
        row = _find(rows, expect)
        if expect.error:
            assert row["winner"] == "error", (expect, row["error"])
            assert expect.error in row["error"] and row["error"].startswith(f"{expect.place}: "), \
                (expect, row["error"])
            assert row["written_off"] is False, "bad input is data, not a failure"
        else:
            assert row["winner"] in {"A", "B", "tie"}, (expect, row["error"])
        for column, value in (expect.checks or {}).items():
            assert row[column] == value, (expect, column, row[column])
    errors = sum(1 for e in expects if e.error)
    assert summary["errors"] == errors and summary["complete"] is True
    assert sum(summary["error_causes"].values()) == errors
    assert summary["error_causes"]["row group N could not be read"] == 2
    assert summary["error_causes"]["JSON nested too deeply"] == 1


def test_every_record_gets_its_answer_when_read(corpus):
    """The corpus as the readers prepare it, no engine: the same answers the judge run must
    give (a judged record is one with no problem), one row per record, every id once."""
    from magistrate.pipelines.prepare import read_prepared

    folder, expects = corpus
    rows = [r | {"error": r["_invalid"]} for r in read_prepared(str(folder))]
    assert len(rows) == len(expects), "one row per input record"
    assert len({r["id"] for r in rows}) == len(rows), "every id once"
    for expect in expects:
        row = _find(rows, expect)
        if expect.error:
            assert expect.error in (row["error"] or "") and row["error"].startswith(f"{expect.place}: "), \
                (expect, row["error"])
        else:
            assert row["error"] is None, (expect, row["error"])
        for column, value in (expect.checks or {}).items():
            assert row[column] == value, (expect, column, row[column])


def _answers(rows: list[dict]) -> dict[str, str | None]:
    return {r["id"]: r.get("error") for r in rows}


@pytest.mark.engine
def test_render_gives_every_record_the_same_answer(judged, corpus):
    rows, _, _ = judged
    folder, _ = corpus
    result = invoke_cli("render", "--input", str(folder), "--order", "ab")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    # splitlines(), not split("\n"): render escapes U+2028 and NEL, so even Python's
    # splitter (which takes them for line ends) reads one record per line.
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert _answers(records) == _answers(rows)
    u2028 = next(r for r in records if r["id"] == "u2028")
    assert "one\u2028two\u0085three" in u2028["messages"][-1]["content"]


@pytest.mark.engine
def test_estimate_gives_every_record_the_same_answer(judged, corpus, embedded_model):
    rows, _, _ = judged
    folder, _ = corpus
    result = invoke_cli("estimate", str(folder), "--model", embedded_model, "--order", "ab", "--sample", "0",
                        "--json")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    estimate = json.loads(result.stdout)
    assert estimate["rows"] == len(rows)
    errors = {r["id"]: r["error"] for r in rows if r["winner"] == "error"}
    assert {e["id"]: e["error"] for e in estimate["error_rows"]} == errors
    assert estimate["error_rows_in_sample"] == len(errors)
    # Numeric-looking CSV answers are counted as the text they are, not as nothing.
    assert estimate["prompt_tokens"] > 0


@pytest.mark.parametrize("command", ["judge", "render"])
def test_a_file_wrong_as_a_whole_is_refused_naming_it(tmp_path, command):
    for path, says in write_refusals(tmp_path / "bad"):
        args = (["judge", "--input", str(path), "--output", str(tmp_path / f"out-{path.stem}"), "--dry-run"]
                if command == "judge" else ["render", "--input", str(path)])
        result = invoke_cli(*args)
        assert result.returncode == 2, (path, result.stderr[-2000:])
        assert path.name in result.stderr and says in result.stderr, (path, result.stderr[-2000:])
        assert "Traceback" not in result.stderr
        if command == "judge":
            assert not (tmp_path / f"out-{path.stem}" / "verdicts").exists(), "nothing judged"


def test_a_50_mb_field_is_refused_before_anything_reads_it_as_a_prompt():
    from magistrate.pipelines.prepare import prepare_batch
    from magistrate.pipelines.reading import Rows

    line = json.dumps({"id": "fifty", "prompt": "p" * (50 * 2**20), "response_a": "a", "response_b": "b"})
    rows = Rows("big.jsonl", None, [line], ["line 1 of big.jsonl"], [None])
    (row,) = prepare_batch(rows, {}, "standard").to_pylist()
    assert row["_invalid"] == ("line 1 of big.jsonl: prompt is 52,428,800 characters, over the limit "
                               "of 1,000,000 (--max-field-chars)")
