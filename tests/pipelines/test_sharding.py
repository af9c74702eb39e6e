"""Every input is cut into units of about --unit-rows, whatever its layout (issue 30):
one Parquet row group of any size, a CSV file of any size with quoted newlines, JSONL
with uneven lines. Each unit holds between 0.5 and 2 times --unit-rows (the last of a file
may hold fewer), and every row is in exactly one unit, in input order. Plus the reading
findings of the issue: non-UTF-8 text nested in columns, lines too long to hold, a
passthrough column that would be overwritten, and the duplicate-id pass's limits."""

from __future__ import annotations

import csv
import json
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from magistrate.pipelines.prepare import prepare_unit, read_prepared
from magistrate.pipelines.reading import line_cap, read_unit
from magistrate.pipelines.sharding import STAGED, shard, staged_names
from magistrate.pipelines.sources import locate


def _cut(path, unit_rows, tmp_path, **kw):
    src, staging = locate(str(path)), locate(str(tmp_path / "staging"))
    return src, staging, shard(src, [src.path], unit_rows, staging, **kw)


def _sizes_ok(units, unit_rows):
    rows = [u.rows for u in units]
    assert all(0.5 * unit_rows <= r <= 2 * unit_rows for r in rows[:-1]), rows
    assert 0 < rows[-1] <= 2 * unit_rows, rows


def _ids(src, staging, units, column="id"):
    ids = []
    for unit in units:
        rows = read_unit(src, unit, staging)
        assert rows.num_rows == unit.rows
        ids += rows.columns.column(column).to_pylist() if rows.columns is not None else [
            json.loads(line)[column] for line in rows.lines]
    return ids


def test_a_one_row_group_parquet_file_is_cut_into_unit_sized_pieces(tmp_path):
    rows = 100_000
    path = tmp_path / "one.parquet"
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(rows)], "prompt": ["q"] * rows,
                             "response_a": ["a"] * rows, "response_b": ["b"] * rows}), path)
    assert pq.ParquetFile(path).metadata.num_row_groups == 1  # pyarrow's default layout
    src, staging, units = _cut(path, 2048, tmp_path)
    assert 40 <= len(units) <= 60, len(units)
    _sizes_ok(units, 2048)
    assert _ids(src, staging, units) == [f"p{i}" for i in range(rows)]
    # Cut again (a resume): the same units, from the staged pieces' manifests.
    assert shard(src, [src.path], 2048, staging) == units


def test_row_groups_of_any_size_give_units_of_about_unit_rows(tmp_path):
    sizes = [10, 5000, 300, 300, 300, 1700, 9000, 1]
    path = tmp_path / "mixed.parquet"
    with pq.ParquetWriter(path, pa.schema([("id", pa.string())])) as writer:
        first = 0
        for n in sizes:
            writer.write_table(pa.table({"id": [f"r{first + i}" for i in range(n)]}))
            first += n
    assert pq.ParquetFile(path).metadata.num_row_groups == len(sizes)
    src, staging, units = _cut(path, 1000, tmp_path)
    _sizes_ok(units, 1000)
    assert _ids(src, staging, units) == [f"r{i}" for i in range(sum(sizes))]
    assert any(u.staged for u in units) and any(not u.staged for u in units)


def _write_csv(path, rows: int, ragged_at: set[int] = frozenset()):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "prompt", "response_a", "response_b"])
        for i in range(rows):
            if i in ragged_at:
                f.write(f"c{i},only two\n")
                continue
            writer.writerow([f"c{i}", f"Line one of {i}\nline two, \"quoted\"", f"A {i}\n\nend", f"B {i}"])


def test_a_csv_file_over_a_mib_with_quoted_newlines_is_cut_into_units(tmp_path):
    path = tmp_path / "pairs.csv"
    _write_csv(path, 30_000, ragged_at={4095, 4096, 29_999})
    assert path.stat().st_size > 1 << 20
    src, staging, units = _cut(path, 2048, tmp_path)
    assert 12 <= len(units) <= 18, len(units)
    _sizes_ok(units, 2048)
    tables = [prepare_unit(src, u, {}, "standard", staging=staging) for u in units]
    ids = [i for t in tables for i in t.column("id").to_pylist()]
    assert len(ids) == 30_000 and len(set(ids)) == 30_000
    table = pa.concat_tables(tables)
    problems = table.column("_invalid").to_pylist()
    # The ragged rows keep their places (records 4095, 4096, 29999: rows 4096.. of the file).
    assert [i for i, p in enumerate(problems) if p] == [4095, 4096, 29_999]
    assert problems[4096].startswith("row 4097 of pairs.csv: the row has 2 fields, the header 4"), problems[4096]
    assert table.column("prompt")[0].as_py() == 'Line one of 0\nline two, "quoted"'
    assert table.column("id")[5000].as_py() == "c5000"


def test_render_and_estimate_read_a_csv_with_quoted_newlines_over_a_mib(tmp_path):
    """Arrow's block reader without newlines_in_values stopped past its first MiB ("CSV
    parser got out of sync with chunker"): render exited 2 with nothing rendered."""
    from magistrate.pipelines.estimate import count_rows

    path = tmp_path / "pairs.csv"
    _write_csv(path, 16_000)
    assert path.stat().st_size > 1 << 20
    rows = list(read_prepared(str(path)))
    assert [r["id"] for r in rows] == [f"c{i}" for i in range(16_000)]
    assert not any(r["_invalid"] for r in rows)
    assert count_rows(str(path)) == 16_000


def test_jsonl_with_long_first_records_gives_units_of_about_unit_rows(tmp_path):
    path = tmp_path / "uneven.jsonl"
    with open(path, "w") as f:
        for i in range(30_000):
            text = "x" * (20_000 if i < 300 else 150)
            f.write(json.dumps({"id": f"j{i}", "prompt": text, "response_a": "a", "response_b": "b"}) + "\n")
            if i % 1000 == 7:
                f.write("\n")  # blank lines are not rows
    src, staging, units = _cut(path, 2048, tmp_path)
    assert 12 <= len(units) <= 17, [u.rows for u in units]
    _sizes_ok(units, 2048)
    assert _ids(src, staging, units) == [f"j{i}" for i in range(30_000)]


def test_jsonl_units_are_the_same_whichever_way_the_file_is_scanned(tmp_path, monkeypatch):
    """A big file is scanned in parts (in parallel); the cut does not depend on where the
    parts begin, CR and CRLF line ends included."""
    import magistrate.pipelines.reading as reading

    path = tmp_path / "ends.jsonl"
    lines = [json.dumps({"id": f"k{i}", "prompt": "p", "response_a": "a", "response_b": "b"}) for i in range(5000)]
    ends = ["\n", "\r\n", "\r"]
    path.write_bytes("".join(line + ends[i % 3] for i, line in enumerate(lines)).encode())
    _, _, whole = _cut(path, 300, tmp_path)
    monkeypatch.setattr(reading, "_JSON_PART", 4099)  # parts that begin inside lines and CRLFs
    monkeypatch.setattr(reading, "_SCAN", 517)
    src, staging, parts = _cut(path, 300, tmp_path)
    assert _ids(src, staging, parts) == [f"k{i}" for i in range(5000)]
    _sizes_ok(parts, 300)
    assert [u.rows for u in whole] == [300] * 16 + [200]


def test_non_utf8_text_nested_in_a_column_is_an_error_row_naming_it(tmp_path):
    """Only top-level string columns were checked: one bad byte in a chat message raised in
    to_pylist() and failed the unit (and the duplicate-id pass, render, estimate and the
    write-off), naming no file and no row."""
    messages = pa.list_(pa.struct([("role", pa.binary()), ("content", pa.binary())]))
    prompt = pa.array([[{"role": b"user", "content": b"fine"}], [{"role": b"user", "content": b"caf\xe9"}],
                       [{"role": b"user", "content": b"also fine"}]], messages)
    text_messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    table = pa.table({"id": ["n0", "n1", "n2"], "prompt": prompt.view(text_messages), "response_a": ["a"] * 3,
                      "response_b": ["b"] * 3})
    path = tmp_path / "nested.parquet"
    pq.write_table(table, path)
    rows = list(read_prepared(str(path)))
    assert [r["id"] for r in rows] == ["n0", "n1", "n2"]
    assert rows[1]["_invalid"].startswith(
        "row 2 of nested.parquet: column 'prompt' holds text that is not valid UTF-8 (byte 0xe9"), rows[1]["_invalid"]
    assert rows[0]["_invalid"] is None and rows[2]["_invalid"] is None
    assert rows[2]["prompt_messages"] == [{"role": "user", "content": "also fine"}]


@pytest.mark.parametrize("groups", [1, 3], ids=["in-place", "staged"])
def test_a_dictionary_column_with_a_bad_byte_names_the_column(tmp_path, groups):
    """A pandas `category` column: its values sit in a dictionary that was not checked.
    Each row holding the bad value is an error row naming the column, in its place (or,
    where Arrow refuses the row group's dictionary page as a whole, every row of that row
    group); the other row groups, and the other columns, are read."""
    n = 3000
    bad_values = pa.array([b"math", b"\xffbad"]).view(pa.string())
    good_values = pa.array(["math", "art"])
    path = tmp_path / "category.parquet"
    schema = pa.schema([("id", pa.string()), ("prompt", pa.string()), ("response_a", pa.string()),
                        ("response_b", pa.string()), ("topic", pa.dictionary(pa.int32(), pa.string()))])
    with pq.ParquetWriter(path, schema) as writer:
        for g in range(groups):
            values = bad_values if g == groups - 1 else good_values
            writer.write_table(pa.table({
                "id": [f"d{g}-{i}" for i in range(n)], "prompt": ["p"] * n, "response_a": ["a"] * n,
                "response_b": ["b"] * n,
                "topic": pa.DictionaryArray.from_arrays(pa.array([i % 2 for i in range(n)], pa.int32()), values)},
                schema=schema))
    src, staging, units = _cut(path, 1000 if groups == 3 else 4000, tmp_path)
    assert any(u.staged for u in units) == (groups == 3)
    table = pa.concat_tables([prepare_unit(src, u, {}, "standard", staging=staging) for u in units])
    assert table.column("id").to_pylist() == [f"d{g}-{i}" for g in range(groups) for i in range(n)]
    problems = table.column("_invalid").to_pylist()
    assert all(p is None for p in problems[:(groups - 1) * n])
    last = problems[(groups - 1) * n:]
    # Rows holding the bad value are error rows naming the column; so may the others of its
    # row group be, when Arrow refuses the dictionary page as a whole.
    assert all(p is not None and "column 'topic'" in p and "UTF" in p for p in last[1::2]), last[1]
    assert all(p is None or "column 'topic'" in p for p in last[::2])
    assert last[-1].startswith(f"row {groups * n} of category.parquet: column 'topic'")


def test_a_line_too_long_to_hold_is_an_error_row_read_past(tmp_path):
    """A JSONL line was held whole (about 5x its size in memory) before --max-field-chars
    was checked. Past the line cap it is read past in pieces and never held."""
    path = tmp_path / "huge.jsonl"
    ok = json.dumps({"id": "small", "prompt": "p", "response_a": "a", "response_b": "b"})
    with open(path, "w") as f:
        f.write(ok + "\n")
        f.write('{"id": "huge", "prompt": "' + "y" * (40 << 20) + '", "response_a": "a", "response_b": "b"}\n')
        f.write(ok.replace("small", "after") + "\n")
    src, staging, (unit,) = _cut(path, 2048, tmp_path)
    tracemalloc.start()
    try:
        table = prepare_unit(src, unit, {}, "standard", max_chars=1000, staging=staging)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < line_cap(1000) + (4 << 20) < 40 << 20, peak  # the 40 MiB line was never held
    assert table.column("id").to_pylist()[::2] == ["small", "after"]
    problem = table.column("_invalid")[1].as_py()
    assert problem.startswith("line 2 of huge.jsonl: the line is 41,943,10"), problem
    assert "over the 16,793,216-byte limit" in problem


def test_a_passthrough_column_renamed_never_overwrites_an_input_column(tmp_path):
    """An output fed back in: its `p_a` is kept as `input_p_a`, which overwrote the input's
    own `input_p_a` (0.9 became 0.1)."""
    path = tmp_path / "again.jsonl"
    path.write_text(json.dumps({"id": "x", "prompt": "p", "response_a": "a", "response_b": "b",
                                "p_a": 0.1, "input_p_a": 0.9}) + "\n")
    (row,) = read_prepared(str(path))
    assert row["input_p_a"] == 0.9 and row["input_input_p_a"] == 0.1


def test_staged_pieces_belong_to_the_output(tmp_path):
    """_staged/ holds magistrate's own files: not output (no --resume/--overwrite asked
    for), removed by --overwrite unless this run cut them, never a foreign file."""
    from magistrate.pipelines.commit import clear, contents

    path = tmp_path / "pairs.csv"
    _write_csv(path, 50)
    out = locate(str(tmp_path / "out"))
    units = shard(locate(str(path)), [str(path)], 20, out)
    found = contents(out)
    assert [u.rows for u in units] == [20, 20, 10]
    assert len(found.own) == 4 and not found.foreign  # 3 pieces and their part's manifest
    assert not found.holds_output()
    (tmp_path / "out" / STAGED / "notes.txt").write_text("mine")
    assert contents(out).foreign == [f"{STAGED}/notes.txt"]
    (tmp_path / "out" / STAGED / "notes.txt").unlink()
    assert clear(out, contents(out), keep=staged_names(units)) == 0  # this run's
    assert clear(out, contents(out)) == 4
    assert not (tmp_path / "out" / STAGED).exists()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_the_same_unit_ids_on_every_cut(tmp_path, fmt):
    path = tmp_path / f"pairs.{fmt}"
    if fmt == "csv":
        _write_csv(path, 5000)
    else:
        pq.write_table(pa.table({"id": [f"q{i}" for i in range(5000)]}), path)
    first = [u.unit_id for u in shard(locate(str(path)), [str(path)], 1000, locate(str(tmp_path / "a")))]
    again = [u.unit_id for u in shard(locate(str(path)), [str(path)], 1000, locate(str(tmp_path / "b")))]
    assert first == again and len(set(first)) == len(first) == 5


def test_a_dictionary_page_arrow_refuses_costs_its_row_group_not_the_unit(tmp_path):
    topic = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0]), pa.array([b"math", b"\xffbad"]).view(pa.string()))
    path = tmp_path / "refused.parquet"
    pq.write_table(pa.table({"id": ["t0", "t1", "t2"], "prompt": ["p"] * 3, "response_a": ["a"] * 3,
                             "response_b": ["b"] * 3, "topic": topic}), path)
    rows = list(read_prepared(str(path)))
    assert [r["id"] for r in rows] == ["t0", "t1", "t2"]  # the ids were read: the other columns are
    assert all(r["_invalid"].endswith("column 'topic' could not be read (Invalid UTF8 payload); "
                                      "save the file as UTF-8") for r in rows), rows[0]["_invalid"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_single_file_is_judged_as_wide_as_the_pool(tmp_path, embedded_model, kind, shared_ray):
    """A dry run (the real path through Ray Data and the actors, no engine) of one file:
    a 30k-row Parquet file of one row group, or a 30k-row CSV file over 1 MiB with quoted
    newlines, in about rows / --unit-rows units, judged by both actors of a pool of 2,
    every id once. Then --resume finds it complete and cuts nothing again. (Larger files'
    pace is benchmarks/sharding.py's: 200k rows, docs/performance.md.)"""
    from tests.conftest import run_cli

    rows = 30_000
    path = tmp_path / "in" / f"pairs.{kind}"
    path.parent.mkdir()
    if kind == "parquet":
        pq.write_table(pa.table({"id": [f"p{i}" for i in range(rows)],
                                 "prompt": [f"Question {i}: what is {i} plus {i}?" for i in range(rows)],
                                 "response_a": [f"It is {2 * i}." for i in range(rows)],
                                 "response_b": [f"Maybe {i}." for i in range(rows)]}), path)
    else:
        _write_csv(path, rows)
    (path.parent / "_old").mkdir()
    (path.parent / "_old" / "pairs.jsonl").write_text("{}\n")  # skipped, and said so
    out = tmp_path / "out"
    # One order: the pool's width is what is checked, not the rendering of both orders.
    args = ["judge", "--input", str(path.parent), "--output", str(out), "--dry-run", "--replicas", "2",
            "--unit-rows", "2048", "--batch-size", "512", "--order", "ab"]
    done = run_cli(*args, env=shared_ray.join())
    assert done.returncode == 0, done.stderr[-3000:]
    said = done.stdout + done.stderr
    expected_units = round(rows / 2048)
    assert (f"1 input file(s) (1 hidden or underscore file skipped" in said), said[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert abs(summary["units"] - expected_units) <= 2, summary["units"]
    assert summary["this_run"]["actors"] == 2, summary["this_run"]
    assert summary["complete"] and summary["rows_written"] == rows
    ids = pq.read_table(out / "verdicts", columns=["id"]).column("id").to_pylist()
    assert len(ids) == rows and len(set(ids)) == rows
    manifests = {p.name: p.stat().st_mtime_ns for p in (out / STAGED).glob("*.json")}
    assert len(manifests) == 1  # one part: the row group, or the CSV file
    again = run_cli(*args, "--resume", env=shared_ray.join())
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in (out / STAGED).glob("*.json")} == manifests  # not cut again
    assert f"({summary['units']} already done)" in again.stdout + again.stderr


def test_the_duplicate_id_pass_prepares_rows_as_the_actors_do(tmp_path, embedded_model, shared_ray):
    """A row's derived id depends on whether it has a problem; the duplicate-id pass used
    the default --max-field-chars while the actors used the user's, so two identical id-less
    pairs over 1M characters passed the check as two place ids and were judged as one id twice."""
    from tests.conftest import run_cli

    path = tmp_path / "pairs.jsonl"
    record = json.dumps({"prompt": "p" * 1_200_000, "response_a": "a", "response_b": "b"})
    path.write_text(record + "\n" + record + "\n")
    done = run_cli("judge", "--input", str(path), "--output", str(tmp_path / "out"), "--dry-run",
                   "--max-field-chars", "2000000", env=shared_ray.join())
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "duplicate ids in the input: 'sha256-" in done.stderr and "(2 times)" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "out" / "verdicts").exists()
