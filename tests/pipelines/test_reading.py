"""The batch readers, one defect at a time: each file is read the way every command reads
it (prepare.read_prepared), and each bad record is an error row in its place, never an
exception (issue 16)."""

from __future__ import annotations

import io
import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from magistrate.pairs import parse_line
from magistrate.pipelines.prepare import read_prepared
from magistrate.pipelines.sources import locate
from magistrate.pipelines.units import publish, unit_files

HEADER = "id,prompt,response_a,response_b"


def _errors(path) -> list[str | None]:
    return [r["_invalid"] for r in read_prepared(str(path))]


@pytest.mark.parametrize("column", ["text", "_where", "_read_problem", "_invalid"])
@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_column_named_like_the_readers_own_is_just_a_column(tmp_path, kind, column):
    path = tmp_path / f"a.{kind}"
    table = pa.table({"id": ["q1"], "prompt": ["Hi?"], "response_a": ["a"], "response_b": ["b"],
                      column: ["a note"]})
    if kind == "csv":
        path.write_text(f"{HEADER},{column}\nq1,Hi?,a,b,a note\n")
    else:
        pq.write_table(table, path)
    (row,) = read_prepared(str(path))
    assert row["_invalid"] is None
    # `_invalid` is the prepared table's own column: the input's keeps its data beside it.
    assert row["input__invalid" if column == "_invalid" else column] == "a note"


def test_csv_bytes_that_are_not_utf8_are_an_error_row_naming_the_column(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(f"{HEADER}\nq1,caf\xe9?,a,b\nq2,ok?,a,b\n".encode("latin-1"))
    rows = list(read_prepared(str(path)))
    assert rows[0]["_invalid"].startswith("row 1 of a.csv: column 'prompt' is not valid UTF-8 (byte 0xe9")
    assert rows[0]["prompt"] == "caf\\xe9?", "kept escaped, not replaced"
    assert rows[1]["_invalid"] is None and rows[1]["prompt"] == "ok?"


def test_ragged_csv_rows_are_error_rows_in_their_places(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(f"{HEADER}\nq1,\"two\nlines\",a,b\nq2,Hi?,a\nq3,Hi?,a,b,extra\nq4,ok?,a,b\n")
    errors = _errors(path)
    assert errors[0] is None and errors[3] is None
    assert errors[1].startswith("row 2 of a.csv: the row has 3 fields, the header 4 ('q2,Hi?,a')")
    assert errors[2].startswith("row 3 of a.csv: the row has 5 fields, the header 4")


def test_a_ragged_csv_row_past_the_first_block_is_one_error_row(tmp_path):
    path = tmp_path / "a.csv"
    pad = "x" * 1000
    good = [f"q{i},Say {i} {pad}?,a,b\n" for i in range(1500)]  # ~1.5 MB: past Arrow's 1 MiB block
    path.write_text(HEADER + "\n" + "".join(good[:1200]) + "bad,only,three\n" + "".join(good[1200:]))
    rows = list(read_prepared(str(path)))
    assert len(rows) == 1501
    assert [i for i, r in enumerate(rows) if r["_invalid"]] == [1200]
    assert rows[1200]["_invalid"].startswith("row 1201 of a.csv: the row has 3 fields")
    assert rows[1201]["id"] == "q1200"


def test_a_lone_surrogate_in_a_json_key_is_a_problem():
    record, problem = parse_line('{"\\ud800": 1, "prompt": "p"}')
    assert record == {} and problem == "a JSON object key holds a lone surrogate (U+D800) at character 1: not valid Unicode"
    assert parse_line('{"x": {"\\udfff": 1}}')[1].startswith("a JSON object key holds a lone surrogate (U+DFFF)")


def test_parquet_string_bytes_that_are_not_utf8_are_an_error_row(tmp_path):
    path = tmp_path / "a.parquet"
    prompts = pa.array([b"caf\xe9?", b"ok?"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"id": ["q1", "q2"], "prompt": prompts, "response_a": ["a", "a"],
                             "response_b": ["b", "b"], "note": prompts}), path)
    rows = list(read_prepared(str(path)))
    assert rows[0]["_invalid"].startswith("row 1 of a.parquet: column 'prompt' is not valid UTF-8 (byte 0xe9")
    assert rows[1]["_invalid"] is None and rows[1]["note"] == "ok?"


@pytest.mark.parametrize("value, text", [({}, "{}"), ([{}], "[{}]"), ({"a": {}}, '{"a": {}}')])
def test_a_passthrough_value_parquet_cannot_hold_keeps_its_json_text(tmp_path, value, text):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"id": "e", "prompt": "Hi?", "response_a": "a", "response_b": "b", "meta": value}) + "\n")
    (row,) = read_prepared(str(path))
    assert row["_invalid"] is None and row["meta"] == text


def test_publish_writes_a_column_parquet_cannot_hold_as_its_text(tmp_path):
    """The write-off path publishes whatever the unit's rows hold: it must not fail on them."""
    out = locate(str(tmp_path / "out"))
    table = pa.table({"id": ["x", "y"], "meta": pa.array([{}, None], pa.struct([])),
                      "written_off": [True, True]})
    publish(out, "unit-test", table, planned_rows=2, metadata={"run_id": "r"})
    assert unit_files(out)["unit-test"].whole
    written = pq.read_table(tmp_path / "out" / "verdicts" / "unit-test.parquet")
    assert written.column("meta").to_pylist() == ["{}", None]


def test_rows_that_cannot_be_judged_get_ids_by_place(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.jsonl").write_text(
            "{not json\n" + '{"note": 1}\n{"note": 1}\n{"prompt": ""}\n{"prompt": ""}\n'
            + json.dumps({"prompt": "Same?", "response_a": "a", "response_b": "b"}) + "\n")
    rows = list(read_prepared(str(tmp_path)))
    broken = [r["id"] for r in rows if r["_invalid"]]
    assert len(broken) == 10 and len(set(broken)) == 10
    # A valid row keeps the content-derived id: identical pairs still share it.
    assert Counter(r["id"] for r in rows if not r["_invalid"]).most_common(1)[0][1] == 2


def test_limit_counts_the_rows_of_units_whose_size_is_an_estimate(tmp_path):
    """--limit on JSONL (units cut by bytes, row counts estimated) reads the units to cut
    the last one: once a crash (the reader's record had no row count)."""
    from magistrate.pipelines.sharding import plan_units
    from magistrate.pipelines.units import apply_limit

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": "Q?", "response_a": "a", "response_b": "b"}) + "\n"
                            for i in range(5)))
    loc = locate(str(path))
    units = plan_units(loc, [loc.path])
    assert not units[0].rows_exact
    (kept,) = apply_limit(loc, units, 2)
    assert kept.max_rows == 2 and len(list(read_prepared(str(path), limit=2))) == 2
