"""Inputs without Ray or an engine: formats, presets, column mapping, globs, units."""

from __future__ import annotations

import json
import uuid

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from magistrate.pipelines.prepare import read_prepared
from magistrate.pipelines import sources
from magistrate.pipelines.sources import InputError, Location, list_input_files, locate
from magistrate.pipelines.reading import read_unit
from magistrate.pipelines.sharding import plan_units
from magistrate.pipelines.units import apply_limit


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
    ids = [json.loads(t)["id"] for u in units for t in read_unit(loc, u).lines]
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
    limited = apply_limit(loc, units, 6)
    assert [u.max_rows for u in limited] == [-1, 2]
    assert limited[0].unit_id == units[0].unit_id and limited[1].unit_id != units[1].unit_id


# --- which files an input names (issue 30, finding 5) ---------------------------------

GLOB_BUCKET = "magistrate-sources-test"
PAIR = json.dumps({"prompt": "p", "response_a": "a", "response_b": "b"}) + "\n"


@pytest.fixture(params=["local", "s3"])
def tree(request, tmp_path, monkeypatch):
    """(root uri, put(name, text), endpoint): an empty folder, local or on S3 (moto)."""
    if request.param == "local":
        def put(name, text=PAIR):
            path = tmp_path / "in" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return str(tmp_path / "in"), put, None
    from tests.conftest import s3_client

    moto_url, aws_env = request.getfixturevalue("moto_url"), request.getfixturevalue("aws_env")
    for key, value in aws_env.items():
        monkeypatch.setenv(key, value)
    client = s3_client(moto_url)
    client.create_bucket(Bucket=GLOB_BUCKET)
    prefix = f"{uuid.uuid4().hex[:8]}/in"

    def put(name, text=PAIR):
        client.put_object(Bucket=GLOB_BUCKET, Key=f"{prefix}/{name}", Body=text.encode())
    return f"s3://{GLOB_BUCKET}/{prefix}", put, moto_url


def _names(root: str, endpoint, pattern: str) -> list[str]:
    """The files an input lists, relative to the root, and how many were skipped."""
    loc = locate(f"{root}/{pattern}" if pattern else root, endpoint)
    base = locate(root, endpoint).path
    return [f[len(base) + 1:] for f in list_input_files(loc)]


def test_a_glob_matches_path_components(tree):
    """`*`, `?` and `[...]` never cross `/`; `**` spans any number of folders, none included."""
    root, put, endpoint = tree
    for name in ("a.jsonl", "b.jsonl", "old/a.jsonl", "old/deeper/c.jsonl", "2024/01/d.jsonl", "notes.txt"):
        put(name)
    assert _names(root, endpoint, "*.jsonl") == ["a.jsonl", "b.jsonl"]
    assert _names(root, endpoint, "?.jsonl") == ["a.jsonl", "b.jsonl"]
    assert _names(root, endpoint, "[a].jsonl") == ["a.jsonl"]
    assert _names(root, endpoint, "*/a.jsonl") == ["old/a.jsonl"]
    assert _names(root, endpoint, "*/*/*.jsonl") == ["2024/01/d.jsonl", "old/deeper/c.jsonl"]
    assert _names(root, endpoint, "**/*.jsonl") == ["2024/01/d.jsonl", "a.jsonl", "b.jsonl", "old/a.jsonl",
                                                    "old/deeper/c.jsonl"]
    assert _names(root, endpoint, "old/**/*.jsonl") == ["old/a.jsonl", "old/deeper/c.jsonl"]
    assert _names(root, endpoint, "**/c.jsonl") == ["old/deeper/c.jsonl"]
    assert _names(root, endpoint, "**") == ["2024/01/d.jsonl", "a.jsonl", "b.jsonl", "old/a.jsonl",
                                            "old/deeper/c.jsonl"]
    with pytest.raises(InputError, match="no .parquet, .jsonl, .json or .csv files"):
        _names(root, endpoint, "*/*.parquet")


def test_hidden_and_underscore_names_below_the_root_are_skipped_and_counted(tree):
    root, put, endpoint = tree
    for name in ("part-0.jsonl", "sub/part-1.jsonl", ".git/objects/x.json", ".git/config", "_archive/old.jsonl",
                 "sub/_tmp/t.jsonl", ".hidden.jsonl", "_part.jsonl",
                 # an earlier run's output: its summary is not pairs; its verdicts may be
                 "prev/summary.json", "prev/_SUCCESS", "prev/_run.json", "prev/verdicts/u-1.parquet",
                 # a summary.json that is not a magistrate output's is just a file
                 "mine/summary.json"):
        put(name)
    listing = sources.list_input(locate(root, endpoint))
    base = locate(root, endpoint).path
    assert [f[len(base) + 1:] for f in listing.files] == [
        "mine/summary.json", "part-0.jsonl", "prev/verdicts/u-1.parquet", "sub/part-1.jsonl"]
    # .git/objects/x.json, _archive/old.jsonl, sub/_tmp/t.jsonl, .hidden.jsonl, _part.jsonl,
    # prev/_run.json and prev/summary.json: data files a reader would have taken
    assert listing.skipped == 7
    assert "7" in listing.skipped_note
    # in a glob, a component below the fixed prefix is skipped too (unless the pattern names it)
    glob = sources.list_input(locate(f"{root}/**/*.jsonl", endpoint))
    assert [f[len(base) + 1:] for f in glob.files] == ["part-0.jsonl", "sub/part-1.jsonl"]
    assert glob.skipped == 4
    assert _names(root, endpoint, "_archive/*.jsonl") == ["_archive/old.jsonl"]
    assert _names(root, endpoint, "_*.jsonl") == ["_part.jsonl"]
    assert _names(root, endpoint, ".git/*/*.json") == [".git/objects/x.json"]
    # a file named on its own is read whatever its name; so is a root below a hidden folder
    assert _names(root, endpoint, "_part.jsonl") == ["_part.jsonl"]
    assert _names(root, endpoint, "_archive") == ["_archive/old.jsonl"]


def test_nothing_but_skipped_files_says_so(tree):
    root, put, endpoint = tree
    put("_old/a.jsonl")
    put(".cache/b.jsonl")
    with pytest.raises(InputError, match=r"no .parquet, .jsonl, .json or .csv files found.*2 .*skipped"):
        list_input_files(locate(root, endpoint))
    with pytest.raises(InputError, match=r"no such file"):
        list_input_files(locate(f"{root}/missing", endpoint))


class _Listings:
    """A filesystem that records the folders listed, and whether recursively."""

    def __init__(self, fs):
        self.fs, self.selectors = fs, []

    def get_file_info(self, what):
        if isinstance(what, pa.fs.FileSelector):
            self.selectors.append((what.base_dir, what.recursive))
        return self.fs.get_file_info(what)


def test_a_glob_lists_from_its_longest_fixed_prefix(tmp_path):
    for name in ("data/a.jsonl", "data/old/a.jsonl", "data/old/deeper/b.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(PAIR)

    def listed(pattern):
        spy = _Listings(pa.fs.LocalFileSystem())
        files = list_input_files(Location(pattern, spy, f"{tmp_path}/{pattern}"))
        return spy.selectors, [f[len(str(tmp_path)) + 1:] for f in files]

    assert listed("data/*.jsonl") == ([(f"{tmp_path}/data", False)], ["data/a.jsonl"])
    assert listed("data/old/**/*.jsonl") == ([(f"{tmp_path}/data/old", True)],
                                             ["data/old/a.jsonl", "data/old/deeper/b.jsonl"])
    assert listed("data/*/a.jsonl") == ([(f"{tmp_path}/data", True)], ["data/old/a.jsonl"])
