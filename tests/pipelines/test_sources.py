"""Inputs without Ray or an engine: formats, presets, column mapping, globs, units."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from magistrate.pipelines.prepare import read_prepared
from magistrate.pipelines.sources import InputError, locate
from magistrate.pipelines.reading import read_unit
from magistrate.pipelines.units import apply_limit, plan_units


def test_rewardbench_preset_maps_chosen_to_a(tmp_path):
    path = tmp_path / "rb.parquet"
    pq.write_table(pa.table({"prompt": ["q"], "chosen": ["good"], "rejected": ["bad"],
                             "subset": ["alpacaeval-easy"]}), path)
    (row,) = read_prepared(str(path))
    assert (row["response_a"], row["response_b"], row["label"]) == ("good", "bad", "A")
    assert row["subset"] == "alpacaeval-easy" and row["id"].startswith("sha256-")


def test_llmbar_preset_and_labels_from_csv(tmp_path):
    path = tmp_path / "llmbar.csv"
    pcsv.write_csv(pa.table({"input": ["q1", "q2"], "output_1": ["a1", "a2"],
                             "output_2": ["b1", "b2"], "label": [1, 2]}), path)
    rows = list(read_prepared(str(path)))
    assert [(r["prompt"], r["response_a"], r["label"]) for r in rows] == [("q1", "a1", "A"), ("q2", "a2", "B")]


def test_column_mapping_and_its_errors(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"q": "why", "r1": "x", "r2": "y", "cat": "c"}) + "\n")
    (row,) = read_prepared(str(path), columns="prompt=q,response_a=r1,response_b=r2,subset=cat")
    assert (row["prompt"], row["response_a"], row["response_b"], row["subset"]) == ("why", "x", "y", "c")
    with pytest.raises(InputError, match="no column for prompt"):
        list(read_prepared(str(path)))
    with pytest.raises(InputError, match="not one of"):
        list(read_prepared(str(path), columns="question=q"))


def test_directory_and_glob_inputs(tmp_path):
    for i in range(3):
        (tmp_path / f"part-{i}.jsonl").write_text(
            json.dumps({"id": f"r{i}", "prompt": "p", "response_a": "a", "response_b": "b"}) + "\n")
    (tmp_path / "notes.txt").write_text("ignored")
    assert sorted(r["id"] for r in read_prepared(str(tmp_path))) == ["r0", "r1", "r2"]
    assert [r["id"] for r in read_prepared(str(tmp_path / "part-[12].jsonl"))] == ["r1", "r2"]
    with pytest.raises(InputError, match="no such file"):
        list(read_prepared(str(tmp_path / "missing.jsonl")))


def test_malformed_lines_and_mixed_prompts_are_rows_not_failures(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([
        json.dumps({"id": "s", "prompt": "plain", "response_a": "a", "response_b": "b"}),
        "{not json",
        json.dumps({"id": "m", "prompt": [{"role": "user", "content": "hi"}], "response_a": "a", "response_b": "b"}),
    ]) + "\n")
    rows = {r["id"]: r for r in read_prepared(str(path))}
    assert len(rows) == 3
    bad = next(r for i, r in rows.items() if i not in ("s", "m"))
    assert "not valid JSON" in bad["_invalid"] and "{not json" in bad["_invalid"]
    assert rows["m"]["prompt_messages"] == [{"role": "user", "content": "hi"}] and rows["m"]["_invalid"] is None
    assert rows["s"]["prompt_messages"] is None


@pytest.mark.parametrize("unit_rows", [1, 50, 700, 100_000])
def test_jsonl_units_hold_every_line_exactly_once(tmp_path, unit_rows):
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"id": i, "prompt": "q" * (i % 211), "response_a": "a",
                                        "response_b": "b"}) + "\n" for i in range(3000)))
    loc = locate(str(path))
    units = plan_units(loc, [loc.path], unit_rows)
    ids = [json.loads(t)["id"] for u in units for t in read_unit(loc.filesystem, u).lines]
    assert ids == list(range(3000))
    assert len({u.unit_id for u in units}) == len(units)
    assert [u.unit_id for u in plan_units(loc, [loc.path], unit_rows)] == [u.unit_id for u in units]


def test_limit_cuts_the_last_unit_under_its_own_id(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": [str(i) for i in range(10)], "prompt": ["q"] * 10,
                             "response_a": ["a"] * 10, "response_b": ["b"] * 10}), path, row_group_size=4)
    loc = locate(str(path))
    units = plan_units(loc, [loc.path], 4)
    assert [u.rows for u in units] == [4, 4, 2]
    limited = apply_limit(loc.filesystem, units, 6)
    assert [u.max_rows for u in limited] == [-1, 2]
    assert limited[0].unit_id == units[0].unit_id and limited[1].unit_id != units[1].unit_id
