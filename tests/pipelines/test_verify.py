"""`magistrate verify OUTPUT` (issue 31): the output holds each input id exactly once,
checked id by id in a distributed group-by (pipelines/verify.py), as a user runs it.

The 100k-row output is written the way a run writes one (units cut by the job's own
planning, one Parquet row group staged in the output's `_staged/`, each unit published
whole with its footer), without Ray or an engine. The plants keep every footer consistent
with the plan, so the reconciliation a run commits on sees nothing: only the id-level
check can."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from magistrate.cli.analysis import verify_text
from magistrate.pipelines.sources import locate
from tests.conftest import EXAMPLES, invoke_cli, run_cli

def _input(path, rows: int) -> str:
    """One Parquet file, one row group (as pandas writes it): staged pieces."""
    path.parent.mkdir(parents=True)
    ids = [f"p{i}" for i in range(rows)]
    pq.write_table(pa.table({"id": ids, "prompt": [f"What is {i} plus {i}?" for i in range(rows)],
                             "response_a": [f"{2 * i}." for i in range(rows)],
                             "response_b": [f"{i}." for i in range(rows)]}), path)
    return str(path)


def _output(src: str, out) -> list:
    """An output as a finished run leaves it; returns its units."""
    from magistrate.pipelines.commit import commit, write_run_file
    from magistrate.pipelines.judge_job import JobSettings, cut_units, plan_input
    from magistrate.pipelines.prepare import prepare_unit
    from magistrate.pipelines.units import publish

    settings = JobSettings(input=src, output=str(out), dry_run=True)
    loc = locate(str(out))
    planned = cut_units(settings, plan_input(settings), loc)
    for unit in planned.units:
        table = prepare_unit(planned.src, unit, planned.mapping, planned.preset, staging=loc)
        table = table.select(["id", "prompt", "response_a", "response_b"])
        table = table.append_column("winner", pa.array(["tie"] * table.num_rows))
        publish(loc, unit.unit_id, table, planned_rows=table.num_rows,
                metadata={"unit": unit.as_row(), "run_id": "test"})
    write_run_file(settings, loc, "test-model", planned.identities)
    commit(loc, {"complete": True})
    return planned.units


def _republish(loc, unit_id: str, table: pa.Table) -> None:
    """A unit file replaced with a footer that agrees with its rows, as a torn or mixed-up
    write by a run whose plan said the same count would leave it."""
    from magistrate.pipelines.units import publish, unit_path

    record = json.loads(pq.read_schema(unit_path(loc, unit_id)).metadata[b"magistrate"])
    table = table.replace_schema_metadata(None)
    publish(loc, unit_id, table, planned_rows=table.num_rows,
            metadata={k: v for k, v in record.items() if k not in ("rows", "written_off")})


def _plant(out, units) -> dict:
    """In one unit, a row dropped and a row of another unit copied in; in another, a row's
    id changed to one the input lacks. Each file keeps its planned row count."""
    from magistrate.pipelines.units import unit_path

    loc = locate(str(out))
    first, second, third = (u.unit_id for u in units[:3])
    copied_from = pq.read_table(unit_path(loc, first))
    target = pq.read_table(unit_path(loc, second))
    dropped = target.column("id")[5].as_py()
    duplicated = copied_from.column("id")[7].as_py()
    keep = pc.not_equal(target.column("id"), dropped)
    _republish(loc, second, pa.concat_tables([target.filter(keep), copied_from.slice(7, 1)]))
    other = pq.read_table(unit_path(loc, third))
    renamed = other.column("id")[0].as_py()
    ids = other.column("id").to_pylist()
    ids[0] = "not-in-the-input"
    _republish(loc, third, other.set_column(0, "id", pa.array(ids)))
    return {"duplicate": duplicated, "missing": sorted([dropped, renamed]), "extra": "not-in-the-input"}


# 100k rows: Ray Data's distributed group-by; 6k (under duplicate_ids.IN_DRIVER_ROWS):
# counted in the verify process, without Ray.
@pytest.mark.parametrize("rows", [100_000, 6_000])
def test_verify_finds_a_planted_duplicate_and_missing_id(tmp_path, shared_ray, rows):
    from magistrate.pipelines.commit import reconcile
    from magistrate.pipelines.duplicate_ids import IN_DRIVER_ROWS
    from magistrate.pipelines.units import unit_files

    assert (rows > IN_DRIVER_ROWS) == (rows == 100_000)
    src = _input(tmp_path / "in" / "pairs.parquet", rows)
    out = tmp_path / "out"
    units = _output(src, out)
    assert len(units) >= rows // 2048 and any(u.staged for u in units)

    clean = run_cli("verify", str(out), env=shared_ray.join())
    assert clean.returncode == 0, clean.stdout + clean.stderr[-3000:]
    assert f"{rows:,}" in clean.stdout and "exactly once" in clean.stdout

    planted = _plant(out, units)
    # The footers agree with the plan: a run's reconciliation would commit this output.
    assert reconcile(units, unit_files(locate(str(out)))).complete

    found = run_cli("verify", str(out), "--json", env=shared_ray.join())
    assert found.returncode == 3, found.stdout + found.stderr[-3000:]
    report = json.loads(found.stdout)
    assert report["complete"] is False
    assert report["ids_checked"] == rows + 1  # the input's ids and the one only the output has
    assert report["duplicates"] == {"count": 1, "examples": [[planted["duplicate"], 2]]}
    assert report["missing"] == {"count": 2, "examples": planted["missing"]}
    assert report["extra"] == {"count": 1, "examples": [planted["extra"]]}

    # One line says so, last (Ray may have warned on stderr before it).
    errors = [line for line in found.stderr.splitlines() if "magistrate: error:" in line]
    assert len(errors) == 1 and found.stderr.strip().splitlines()[-1] == errors[0], found.stderr
    told = verify_text(report)  # what `magistrate verify` prints without --json
    for name in (planted["duplicate"], *planted["missing"], planted["extra"]):
        assert repr(name) in told, told


def test_verify_refuses_what_is_not_an_output_in_one_line(tmp_path):
    missing = invoke_cli("verify", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no such output" in missing.stderr, missing.stderr
    foreign = tmp_path / "foreign"
    (foreign / "verdicts").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["a"]}), foreign / "verdicts" / "part-0.parquet")
    told = invoke_cli("verify", str(foreign))
    assert told.returncode == 2 and "not a magistrate output" in told.stderr, told.stderr
    for result in (missing, told):
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_verify_passes_a_real_dry_run(tmp_path, shared_ray):
    """End to end: what `magistrate judge` wrote verifies (JSONL without ids, so the ids are
    derived from content; --limit, so only the first rows are the input's)."""
    src = tmp_path / "pairs.jsonl"
    rows = [json.loads(line) for line in (EXAMPLES / "llmbar-demo.jsonl").read_text().splitlines()]
    src.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "id"}) + "\n" for r in rows))
    out = tmp_path / "out"
    judged = run_cli("judge", "--input", str(src), "--output", str(out), "--dry-run", "--limit", "15",
                     env=shared_ray.join())
    assert judged.returncode == 0, judged.stderr[-3000:]
    told = run_cli("verify", str(out), "--json", env=shared_ray.join())
    assert told.returncode == 0, told.stdout + told.stderr[-3000:]
    report = json.loads(told.stdout)
    assert report["complete"] and report["ids_checked"] == report["output_rows"] == 15
    assert report["missing"]["count"] == report["duplicates"]["count"] == report["extra"]["count"] == 0
